"""``companion.pyramidkv``: PyramidKV KV-cache compression (Cai et al., 2024). Work in progress: so far the
per-layer budget schedules (:func:`layer_budgets`) and the observation-window scoring and selection on
key/value tensors (:func:`window_scores`, :func:`select_tokens`), with queries and keys recomputed from a
real model's layers (:func:`queries_keys`), and the funnel statistics (:func:`funnel`); wiring into a Hugging
Face cache, the methods (StreamingLLM, SnapKV, H2O-style) and the chapter follow.
"""

from .budgets import SCHEDULES, layer_budgets, overspend, regime
from .capture import queries_keys
from .funnel import Funnel, funnel, funnel_stats
from .scoring import cache_bytes, select_tokens, window_scores

__all__ = ["SCHEDULES", "Funnel", "cache_bytes", "funnel", "funnel_stats", "layer_budgets", "overspend", "queries_keys", "regime", "select_tokens", "window_scores"]
