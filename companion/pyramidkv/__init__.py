"""``companion.pyramidkv``: PyramidKV KV-cache compression (Cai et al., 2024). Work in progress: so far the
per-layer budget schedules (:func:`layer_budgets`) and the observation-window scoring and selection on
key/value tensors (:func:`window_scores`, :func:`select_tokens`), with queries and keys recomputed from a
real model's layers (:func:`queries_keys`); wiring into a Hugging Face cache, the methods
(StreamingLLM, SnapKV, H2O-style), the funnel analysis and the chapter follow.
"""

from .budgets import SCHEDULES, layer_budgets, overspend, regime
from .capture import queries_keys
from .scoring import cache_bytes, select_tokens, window_scores

__all__ = ["SCHEDULES", "cache_bytes", "layer_budgets", "overspend", "queries_keys", "regime", "select_tokens", "window_scores"]
