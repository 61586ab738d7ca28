"""Which prompt tokens to keep: observation-window attention scores and top-k selection (SnapKV / PyramidKV).

As the official code (KVCache-Factory's SnapKV / PyramidKV clusters, ``pyramidkv/pyramidkv_utils.py``) does it,
for one layer with a prompt of q tokens, head size d and an observation window of the last w tokens:

    A = softmax( Q[-w:] Kᵀ / √d )      causal only inside the w × w block                [b, H, w, q]
    s_j = Σ_i A[i, j]                    for prefix tokens j < q − w                       [b, H, q − w]
    s ← pool1d(s, kernel k, stride 1, padding k // 2)    (avg or max; zero padding counts in the average)
    keep top-budget prefix tokens by s, per head, plus the w window tokens.

Precision as the official code: the logits are computed in the model's dtype, the softmax in fp32 and cast
back to the model's dtype, and the sums and pooling run in that dtype (for an fp32 model: fp32 throughout).

Grouped-query attention, three granularities:

- ``"query"``: the official default — K and V are repeated to all H query heads, every query head picks its
  own tokens, and the compressed cache has H heads (more than the uncompressed cache's KV heads!);
- ``"kv"``: KVCache-Factory's KV-head mode (``kv_cache_granularity="kv_head"``, ``gqa_score_agg="mean"``):
  the summed scores are averaged over each group of query heads, *then* pooled; the cache keeps its KV-head
  width;
- ``"kv_pool_first"``: pooled per query head, then averaged over the group — NVIDIA kvpress's order (and this
  companion's before it followed KVCache-Factory). With average pooling the two orders are equal (both linear);
  with max pooling they are not.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from ..lab.checks import check_choice, check_int, check_same_device, check_same_dtype, check_tensor, describe

POOLINGS = ("avgpool", "maxpool", None)
GRANULARITIES = ("query", "kv", "kv_pool_first")


def _check_pooling(pooling, kernel) -> int:
    """``pooling`` one of :data:`POOLINGS`; ``kernel`` an int, positive and odd when there is pooling."""
    check_choice("pooling", pooling, POOLINGS)
    kernel = check_int("kernel", kernel)
    if pooling is not None and (kernel < 1 or kernel % 2 == 0):
        raise ValueError(f"kernel must be a positive odd int, got {kernel}")
    return kernel


def last_queries_attention(queries: torch.Tensor, keys: torch.Tensor, n: int) -> torch.Tensor:
    """Attention weights ``[batch, heads, n, q_len]`` of the last ``n`` queries over all keys, causal among those
    n positions (the earlier keys are visible to all of them); KV heads are repeated to the query heads as
    transformers' ``repeat_kv`` does (head h reads KV head h // group). Official precision: logits in the
    inputs' dtype, softmax in fp32, cast back to that dtype."""
    H, Hkv, d = queries.shape[1], keys.shape[1], queries.shape[-1]
    k = keys.repeat_interleave(H // Hkv, dim=1)
    logits = torch.matmul(queries[:, :, -n:], k.transpose(2, 3)) / math.sqrt(d)
    logits[:, :, :, -n:] += torch.full((n, n), torch.finfo(logits.dtype).min, dtype=logits.dtype,
                                       device=logits.device).triu(1)
    return logits.softmax(dim=-1, dtype=torch.float32).to(queries.dtype)


def window_scores(queries: torch.Tensor, keys: torch.Tensor, *, window: int, pooling: str | None = "avgpool",
                  kernel: int = 5, granularity: Literal["query", "kv", "kv_pool_first"] = "query") -> torch.Tensor:
    """Observation-window attention mass of every prefix token.

    Args:
        queries: ``[batch, num_heads, q_len, head_dim]`` (only the last ``window`` positions are used).
        keys: ``[batch, num_kv_heads, q_len, head_dim]``, RoPE already applied; ``num_heads`` must be a
            multiple of ``num_kv_heads``.
        window: w, the number of last prompt tokens whose attention decides.
        pooling: ``"avgpool"``, ``"maxpool"`` or ``None``.
        kernel: odd pooling width.
        granularity: ``"query"`` (official default: one score row per query head), ``"kv"`` (KVCache-Factory's
            KV-head mode: group mean, then pooling) or ``"kv_pool_first"`` (pooling, then group mean: kvpress).
    Returns:
        ``[batch, num_heads or num_kv_heads, q_len - window]`` scores in the inputs' dtype.
    Raises:
        TypeError: ``queries``/``keys`` not floating-point tensors; ``window``/``kernel`` not ints; ``pooling`` or
            ``granularity`` of the wrong type.
        ValueError: not 4-D, empty, mismatched shapes or devices; ``window`` outside ``[1, q_len)``; an even
            ``kernel``; an unknown ``pooling`` or ``granularity``.
    """
    check_tensor("queries", queries, ndim=4, dtype="floating")
    check_tensor("keys", keys, ndim=4, dtype="floating")
    check_same_device(queries=queries, keys=keys)
    window = check_int("window", window)
    kernel = _check_pooling(pooling, kernel)
    check_choice("granularity", granularity, GRANULARITIES)
    b, H, q, d = queries.shape
    if keys.shape[0] != b or keys.shape[2] != q or keys.shape[3] != d:
        raise ValueError(f"keys {tuple(keys.shape)} do not match queries {tuple(queries.shape)}")
    Hkv = keys.shape[1]
    if H % Hkv:
        raise ValueError(f"num_heads ({H}) must be a multiple of num_kv_heads ({Hkv})")
    if not 1 <= window < q:
        raise ValueError(f"window must be in [1, q_len) = [1, {q}), got {window}")
    scores = last_queries_attention(queries, keys, window)[:, :, :, :-window].sum(dim=-2)  # [b, H, q - w]
    if granularity == "kv":
        scores = scores.reshape(b, Hkv, H // Hkv, q - window).mean(dim=2)
    if pooling is not None:
        heads = scores.shape[1]
        pool = F.avg_pool1d if pooling == "avgpool" else F.max_pool1d
        scores = pool(scores.reshape(b * heads, 1, q - window), kernel_size=kernel, stride=1,
                      padding=kernel // 2).reshape(b, heads, q - window)
    if granularity == "kv_pool_first":
        scores = scores.reshape(b, Hkv, H // Hkv, q - window).mean(dim=2)
    return scores


def keep_positions(scores: torch.Tensor, *, budget: int) -> torch.Tensor:
    """Positions ``[batch, heads, min(budget, prefix_len)]`` of the best-scored prefix tokens, best first.

    Raises:
        TypeError: ``scores`` not a floating-point tensor; ``budget`` not an int (``3.5``, ``True``).
        ValueError: ``scores`` not 3-D ``[batch, heads, prefix_len]`` or empty; ``budget < 0``.
    """
    check_tensor("scores", scores, ndim=3, dtype="floating")
    budget = check_int("budget", budget, low=0)
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
    Raises:
        TypeError: non-tensors, non-floating tensors, ``keys`` and ``values`` of different dtypes; ``budget`` or
            ``window`` not an int.
        ValueError: wrong ranks or shapes, empty tensors, different devices; ``budget < 0``; ``window`` outside
            ``[0, q_len)``.
    """
    check_tensor("keys", keys, ndim=4, dtype="floating")
    check_tensor("values", values, ndim=4, dtype="floating")
    check_tensor("scores", scores, ndim=3, dtype="floating")
    check_same_device(keys=keys, values=values, scores=scores)
    check_same_dtype(keys=keys, values=values)
    budget = check_int("budget", budget, low=0)
    window = check_int("window", window, low=0, high=keys.shape[2] - 1)
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
    """Bytes of a KV cache holding ``tokens[l]`` tokens in layer l: 2 (K and V) · heads · head_dim · tokens.

    Raises:
        TypeError: ``num_layers_tokens`` not a sequence of ints; a size not an int.
        ValueError: a negative token count; ``heads``, ``head_dim`` or ``bytes_per_value`` < 1.
    """
    if isinstance(num_layers_tokens, (str, bytes)) or not hasattr(num_layers_tokens, "__iter__"):
        raise TypeError(f"num_layers_tokens must be a sequence of ints (tokens per layer), got {num_layers_tokens!r}")
    num_layers_tokens = [check_int(f"num_layers_tokens[{i}]", t, low=0) for i, t in enumerate(num_layers_tokens)]
    heads = check_int("heads", heads, low=1)
    head_dim = check_int("head_dim", head_dim, low=1)
    bytes_per_value = check_int("bytes_per_value", bytes_per_value, low=1)
    return 2 * heads * head_dim * bytes_per_value * int(sum(num_layers_tokens))


def stored_bytes(cache) -> int:
    """Bytes the keys and values of a ``transformers`` cache occupy as stored (``Tensor.nbytes``, every layer).

    Raises:
        TypeError: ``cache`` is not a ``transformers`` cache with layers of key and value tensors.
    """
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, (list, tuple)) or not all(
            isinstance(getattr(L, "keys", None), torch.Tensor) and isinstance(getattr(L, "values", None), torch.Tensor)
            for L in layers):
        raise TypeError(f"cache must be a filled transformers cache (e.g. a DynamicCache after prefill), got "
                        f"{describe(cache)}")
    return sum(L.keys.nbytes + L.values.nbytes for L in cache.layers)
