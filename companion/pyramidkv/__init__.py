"""``companion.pyramidkv``: PyramidKV KV-cache compression (Cai et al., 2024, arXiv 2406.02069).

- :func:`layer_budgets` — per-layer budgets: the official integer schedule, an exact one, kvpress's port;
- :func:`window_scores`, :func:`keep_positions`, :func:`select_tokens` — observation-window scoring and
  top-k selection per query head or per KV head (:data:`GRANULARITIES`);
- :func:`queries_keys`, :func:`expand_kv_heads` — a real Hugging Face model's queries and keys, taken from
  inside its attention, and the same model without grouped-query attention (for query-head caches);
- :func:`funnel` — does attention narrow with depth?
- :func:`prefill`, :func:`compress`, :func:`greedy_continue` — prefill once, compress (full, StreamingLLM,
  SnapKV, PyramidKV, H2O-style), decode; :func:`stored_bytes` / :func:`cache_bytes` — memory.
- :mod:`.experiments` — the pass-key retrieval experiment of the chapter.
"""

from .budgets import SCHEDULES, layer_budgets, overspend, regime
from .capture import expand_kv_heads, queries_keys
from .funnel import Funnel, funnel, funnel_stats
from .methods import METHODS, Prefill, compress, greedy_continue, prefill
from .scoring import GRANULARITIES, cache_bytes, keep_positions, select_tokens, stored_bytes, window_scores

__all__ = ["GRANULARITIES", "METHODS", "SCHEDULES", "Funnel", "Prefill", "compress", "greedy_continue", "prefill", "cache_bytes", "expand_kv_heads", "funnel", "funnel_stats", "keep_positions", "layer_budgets", "overspend", "queries_keys", "regime", "select_tokens", "stored_bytes", "window_scores"]
