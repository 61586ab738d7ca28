"""Which prompt tokens to keep: observation-window attention scores and top-k selection (SnapKV / PyramidKV).

As the official code (KVCache-Factory's SnapKV / PyramidKV clusters) does it, for one layer with a prompt of
q tokens, head size d and an observation window of the last w tokens:

    A = softmax( Q[-w:] Kᵀ / √d )      in fp32, causal only inside the w × w block      [b, H, w, q]
    s_j = Σ_i A[i, j]                    for prefix tokens j < q − w                     [b, H, q − w]
    s ← pool1d(s, kernel k, stride 1, padding k // 2)    (avg or max; zero padding counts in the average)
    keep top-budget prefix tokens by s, per head, plus the w window tokens.

Grouped-query attention: the official code repeats K and V to all H query heads first, so every query head
picks its own tokens and the compressed cache has H heads (more than the uncompressed cache's KV heads!).
``granularity="kv"`` instead averages the scores over each group of query heads and selects per KV head, as
NVIDIA's kvpress does; the cache keeps its KV-head width.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

POOLINGS = ("avgpool", "maxpool", None)


def last_queries_attention(queries: torch.Tensor, keys: torch.Tensor, n: int) -> torch.Tensor:
    """fp32 attention weights ``[batch, heads, n, q_len]`` of the last ``n`` queries over all keys, causal
    among those n positions (the earlier keys are visible to all of them); KV heads are repeated to the query
    heads as transformers' ``repeat_kv`` does (head h reads KV head h // group)."""
    H, Hkv, d = queries.shape[1], keys.shape[1], queries.shape[-1]
    k = keys.repeat_interleave(H // Hkv, dim=1)
    logits = torch.matmul(queries[:, :, -n:].float(), k.float().transpose(2, 3)) / math.sqrt(d)
    logits[:, :, :, -n:] += torch.full((n, n), torch.finfo(torch.float32).min, device=logits.device).triu(1)
    return logits.softmax(dim=-1)


def window_scores(queries: torch.Tensor, keys: torch.Tensor, *, window: int, pooling: str | None = "avgpool",
                  kernel: int = 5, granularity: Literal["query", "kv"] = "query") -> torch.Tensor:
    """Observation-window attention mass of every prefix token.

    Args:
        queries: ``[batch, num_heads, q_len, head_dim]`` (only the last ``window`` positions are used).
        keys: ``[batch, num_kv_heads, q_len, head_dim]``, RoPE already applied; ``num_heads`` must be a
            multiple of ``num_kv_heads``.
        window: w, the number of last prompt tokens whose attention decides.
        pooling: ``"avgpool"``, ``"maxpool"`` or ``None``.
        kernel: odd pooling width.
        granularity: ``"query"`` (official: one score row per query head) or ``"kv"`` (mean over each group).
    Returns:
        ``[batch, num_heads or num_kv_heads, q_len - window]`` scores (fp32).
    """
    if queries.dim() != 4 or keys.dim() != 4:
        raise ValueError(f"queries and keys must be [batch, heads, q_len, head_dim], got {tuple(queries.shape)} and {tuple(keys.shape)}")
    b, H, q, d = queries.shape
    if keys.shape[0] != b or keys.shape[2] != q or keys.shape[3] != d:
        raise ValueError(f"keys {tuple(keys.shape)} do not match queries {tuple(queries.shape)}")
    Hkv = keys.shape[1]
    if H % Hkv:
        raise ValueError(f"num_heads ({H}) must be a multiple of num_kv_heads ({Hkv})")
    if not 1 <= window < q:
        raise ValueError(f"window must be in [1, q_len) = [1, {q}), got {window}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling is not None and (kernel < 1 or kernel % 2 == 0):
        raise ValueError(f"kernel must be a positive odd int, got {kernel}")
    if granularity not in ("query", "kv"):
        raise ValueError(f"granularity must be 'query' or 'kv', got {granularity!r}")
    scores = last_queries_attention(queries, keys, window)[:, :, :, :-window].sum(dim=-2)  # [b, H, q - w]
    if pooling is not None:
        flat = scores.reshape(b * H, 1, q - window)
        pool = F.avg_pool1d if pooling == "avgpool" else F.max_pool1d
        scores = pool(flat, kernel_size=kernel, stride=1, padding=kernel // 2).reshape(b, H, q - window)
    if granularity == "kv":
        scores = scores.reshape(b, Hkv, H // Hkv, q - window).mean(dim=2)
    return scores


def keep_positions(scores: torch.Tensor, *, budget: int) -> torch.Tensor:
    """Positions ``[batch, heads, min(budget, prefix_len)]`` of the best-scored prefix tokens, best first."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return scores.topk(min(budget, scores.shape[-1]), dim=-1).indices


def select_tokens(keys: torch.Tensor, values: torch.Tensor, scores: torch.Tensor, *, budget: int,
                  window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``budget`` best-scored prefix tokens per head plus the last ``window`` tokens.

    Args:
        keys, values: ``[batch, kv_heads, q_len, head_dim]``.
        scores: ``[batch, heads, q_len - window]`` from :func:`window_scores`; with ``heads > kv_heads``
            (query granularity) keys and values are first repeated to ``heads`` (the official behaviour).
        budget: prefix tokens to keep (clipped to the prefix length).
    Returns:
        ``(keys, values)`` of shape ``[batch, heads, min(budget, q_len - window) + window, head_dim]``; the kept
        prefix tokens come in descending score order (attention does not depend on the order of keys).
    """
    b, Hkv, q, d = keys.shape
    H = scores.shape[1]
    if values.shape != keys.shape:
        raise ValueError(f"values {tuple(values.shape)} must have the shape of keys {tuple(keys.shape)}")
    if scores.shape != (b, H, q - window) or H % Hkv:
        raise ValueError(f"scores must be [batch, heads, q_len - window] = [{b}, k·{Hkv}, {q - window}], got {tuple(scores.shape)}")
    if H != Hkv:
        keys, values = keys.repeat_interleave(H // Hkv, dim=1), values.repeat_interleave(H // Hkv, dim=1)
    idx = keep_positions(scores, budget=budget)[..., None].expand(-1, -1, -1, d)
    kept_k = torch.cat([keys[:, :, : q - window].gather(2, idx), keys[:, :, q - window:]], dim=2)
    kept_v = torch.cat([values[:, :, : q - window].gather(2, idx), values[:, :, q - window:]], dim=2)
    return kept_k, kept_v


def cache_bytes(num_layers_tokens: list[int], *, heads: int, head_dim: int, bytes_per_value: int = 4) -> int:
    """Bytes of a KV cache holding ``tokens[l]`` tokens in layer l: 2 (K and V) · heads · head_dim · tokens."""
    return 2 * heads * head_dim * bytes_per_value * int(sum(num_layers_tokens))


def stored_bytes(cache) -> int:
    """Bytes the keys and values of a ``transformers`` cache occupy as stored (``Tensor.nbytes``, every layer)."""
    return sum(L.keys.nbytes + L.values.nbytes for L in cache.layers)
