"""``companion.pyramidkv``: PyramidKV KV-cache compression (Cai et al., 2024). Work in progress: so far the
per-layer budget schedules (:func:`layer_budgets`) and the observation-window scoring and selection on
key/value tensors (:func:`window_scores`, :func:`select_tokens`), with queries and keys recomputed from a
real model's layers (:func:`queries_keys`), the funnel statistics (:func:`funnel`), and prefill → compress →
decode on a real cache for full / StreamingLLM / SnapKV / PyramidKV / H2O-style (:func:`prefill`,
:func:`compress`, :func:`greedy_continue`). The chapter's pages, the retrieval experiments, query-head
selection in the cache and the kvpress comparison follow.
"""

from .budgets import SCHEDULES, layer_budgets, overspend, regime
from .capture import queries_keys
from .funnel import Funnel, funnel, funnel_stats
from .methods import METHODS, Prefill, compress, greedy_continue, prefill
from .scoring import cache_bytes, select_tokens, window_scores

__all__ = ["METHODS", "SCHEDULES", "Funnel", "Prefill", "compress", "greedy_continue", "prefill", "cache_bytes", "funnel", "funnel_stats", "layer_budgets", "overspend", "queries_keys", "regime", "select_tokens", "window_scores"]
