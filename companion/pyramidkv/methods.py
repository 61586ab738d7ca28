"""Prefill once, compress the KV cache many ways, decode: full cache, StreamingLLM, SnapKV, PyramidKV, H2O-style.

All methods keep ``capacity`` tokens per layer on average (PyramidKV: per its schedule, see
:func:`layer_budgets`), including the last ``window`` tokens, and select per KV head of the cache: per KV
head of a grouped-query model (scores averaged over each group, then pooled, as KVCache-Factory's KV-head
mode), or per query head when the prefill ran on ``expand_kv_heads(model)`` (the official default, with a
cache as wide as the query heads).

- ``streaming`` (StreamingLLM, Xiao et al. 2024): the first ``sink`` tokens plus the most recent ones;
- ``snapkv``: every layer keeps ``capacity − window`` prefix tokens by pooled observation-window attention;
- ``pyramidkv``: the same scores, budgets shrinking with depth;
- ``h2o``: a one-shot prefill variant of H2O (as in the official code): prefix tokens ranked by the attention
  they receive from *all* prompt queries (not only the window), plus the window.

Decoding continues the positions of the *uncompressed* prompt (RoPE positions are not renumbered), and the
compression happens on every call to :func:`compress` (a fresh copy each time; nothing is cached between
calls — the stale-state bug of an earlier official release).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from .budgets import SCHEDULES, layer_budgets
from ..lab import cache_kwargs
from ..lab.checks import check_choice, check_float, check_int, check_tensor, check_type
from .capture import _check_cache, _check_input_ids, _layers, attention_per_layer, queries_keys
from .scoring import _check_pooling, last_queries_attention, select_tokens, window_scores

METHODS = ("full", "streaming", "snapkv", "pyramidkv", "h2o")


@dataclass
class Prefill:
    """A prompt run once: its cache, the logits of its last position, and every layer's queries and keys."""

    cache: object  # transformers.DynamicCache
    last_logits: torch.Tensor  # [vocab]
    qk: list[tuple[torch.Tensor, torch.Tensor]]
    prompt_len: int
    scores: dict = field(default_factory=dict, repr=False)  # per-layer scores by scoring setting (memo)


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor) -> Prefill:
    """Run the prompt ``[1, q_len]`` once, keeping the cache and the per-layer queries and keys.

    Raises:
        TypeError: ``model`` not a supported Llama-style causal LM; ``input_ids`` not an integer tensor.
        ValueError: ``input_ids`` not one prompt ``[1, q_len]``, empty (``q_len = 0``), or with ids outside the
            vocabulary.
    """
    from transformers import DynamicCache

    _layers(model)
    if not isinstance(getattr(model, "lm_head", None), torch.nn.Module):
        raise TypeError(f"model must be a *ForCausalLM with an lm_head, got {type(model).__name__}")
    _check_input_ids(model, input_ids, one_prompt=True)
    cache = DynamicCache(config=model.config)
    logits_holder = {}
    handle = model.lm_head.register_forward_hook(lambda mod, args, out: logits_holder.setdefault("x", out))
    try:
        qk = queries_keys(model, input_ids, cache=cache)
    finally:
        handle.remove()
    return Prefill(cache, logits_holder["x"][0, -1].float(), qk, input_ids.shape[1])


H2O_CHUNK = 256  # query rows per block of the H2O-style scores


def _h2o_scores(Q: torch.Tensor, K: torch.Tensor, window: int, *, chunk: int = H2O_CHUNK) -> torch.Tensor:
    """Attention received by each prefix token from every prompt query (causal), mean over each KV group.

    The official code (KVCache-Factory's ``H2OKVCluster``) builds the whole causal ``[b, H, q, q]`` attention
    and sums it over the queries: 9 heads · 8192² · 4 B = 2.4 GB per layer for SmolLM2 at q = 8192, more with
    the softmax's temporaries. Here the queries go ``chunk`` rows at a time: rows ``[a, e)`` attend to keys
    ``[0, e)`` (the later keys are masked for them, so their softmax is the same), and the block sums are added
    up, so at most ``b · H · chunk · q`` weights exist at once; the result equals the one-block computation up to
    float round-off (the order of the sums over queries). Returns ``[b, Hkv, q - window]``.
    """
    b, H, q, _ = Q.shape
    Hkv = K.shape[1]
    received = torch.zeros(b, H, q, dtype=Q.dtype, device=Q.device)
    for a in range(0, q, chunk):
        e = min(a + chunk, q)
        received[..., :e] += last_queries_attention(Q[:, :, :e], K[:, :, :e], e - a).sum(dim=2)
    received = received[..., : q - window]  # [b, H, q - w]
    return received.reshape(b, Hkv, H // Hkv, q - window).mean(2)


def compress(pre: Prefill, method: str, *, capacity: int, window: int = 8, kernel: int = 7, pooling: str = "maxpool",
             beta: float = 20, schedule: str = "official", sink: int = 4, granularity: str = "kv"):
    """A compressed copy of ``pre.cache`` (the original is untouched).

    Args:
        pre: the prompt's :func:`prefill`.
        method: one of :data:`METHODS`.
        capacity: C, tokens kept per layer including the window (PyramidKV: on average, per ``schedule``).
            A prompt of at most C tokens is kept whole.
        window: w, the observation window (last prompt tokens, always kept). Official scripts: 8; classes: 32-64.
        kernel, pooling: 1-D smoothing of the window scores (``"maxpool"``/``"avgpool"``/``None``).
        beta, schedule: PyramidKV's β and budget schedule (see :func:`layer_budgets`).
        sink: StreamingLLM's first tokens kept.
        granularity: how a grouped-query prefill's scores become KV-head scores (see :func:`window_scores`):
            ``"kv"`` (KVCache-Factory: group mean, then pooling) or ``"kv_pool_first"`` (pooling, then group
            mean: kvpress, and this companion's order before). Equal when the prefill ran on
            :func:`expand_kv_heads` (one query head per KV head) or with average pooling.
    Returns:
        ``(cache, kept)``: a ``DynamicCache`` whose layer l holds ``kept[l]`` tokens per head.
    Raises:
        TypeError: ``pre`` not a :class:`Prefill`; an int argument that is not an int (``numpy.int64`` is one);
            ``beta`` not a real number; ``method``/``pooling``/``schedule`` of the wrong type.
        ValueError: an unknown ``method``/``pooling``/``schedule``/``granularity``; ``capacity``/``window`` < 1,
            ``sink`` < 0, an even ``kernel``, ``beta`` < 1; ``capacity <= window`` when the prompt is compressed.
            All arguments are checked, also those the chosen method does not use.
    """
    check_type("pre", pre, Prefill, what="the Prefill returned by prefill")
    check_choice("method", method, METHODS)
    q = pre.prompt_len
    capacity = check_int("capacity", capacity, low=1)
    window = check_int("window", window, low=1)
    sink = check_int("sink", sink, low=0)
    kernel = _check_pooling(pooling, kernel)
    beta = check_float("beta", beta, low=1.0)
    check_choice("schedule", schedule, SCHEDULES)
    check_choice("granularity", granularity, ("kv", "kv_pool_first"))
    if method not in ("full", "streaming") and q > capacity:
        if capacity <= window:  # and so window < capacity < q
            raise ValueError(f"capacity ({capacity}) must be larger than the window ({window}): it counts the window")
    cache = copy.deepcopy(pre.cache)
    layers = len(cache.layers)
    if method == "full" or q <= capacity:
        return cache, [q] * layers
    if method == "pyramidkv":
        budgets = layer_budgets(capacity, window=window, num_layers=layers, prompt_len=q, beta=beta, schedule=schedule)
    else:
        budgets = [capacity - window] * layers
    if method != "streaming":
        # the scores do not depend on the budget: computed once per prefill and setting, then reused
        setting = ("h2o", window) if method == "h2o" else ("window", window, pooling, kernel, granularity)
        if setting not in pre.scores:
            pre.scores[setting] = [
                _h2o_scores(Q, K, window) if method == "h2o"
                else window_scores(Q, K, window=window, pooling=pooling, kernel=kernel, granularity=granularity)
                for Q, K in pre.qk]
        layer_scores = pre.scores[setting]
    kept = []
    for layer, budget in enumerate(budgets):
        L = cache.layers[layer]
        if method == "streaming":
            n_sink = min(sink, capacity)
            keep = torch.cat([torch.arange(n_sink), torch.arange(q - (capacity - n_sink), q)])
            L.keys, L.values = L.keys[:, :, keep], L.values[:, :, keep]
        else:
            L.keys, L.values = select_tokens(L.keys, L.values, layer_scores[layer], budget=budget, window=window)
        kept.append(L.keys.shape[2])
    return cache, kept


@torch.no_grad()
def greedy_continue(model, pre: Prefill, cache, *, max_new_tokens: int = 8, suffix: torch.Tensor | None = None) -> list[int]:
    """Greedy decoding from a (possibly compressed) prefill cache; positions continue from the prompt length.

    ``suffix`` (``[1, n]`` token ids, optional) is fed through the model first, after the compression — the
    question *after* the compressed context (query-agnostic compression, kvpress's default); without it the
    prompt itself ended with the question (query-aware, KVCache-Factory's setting). ``cache`` is extended in
    place.

    Raises:
        TypeError: ``model`` not a supported causal LM, ``pre`` not a :class:`Prefill`, ``cache`` not a cache;
            ``max_new_tokens`` not an int; ``suffix`` not an integer tensor.
        ValueError: ``max_new_tokens`` < 1; ``cache`` with another number of layers than ``model``; ``suffix`` not
            ``[1, n]`` or with ids outside the vocabulary.
    """
    layers = _layers(model)
    check_type("pre", pre, Prefill, what="the Prefill returned by prefill")
    _check_cache("cache", cache)
    if len(cache.layers) != len(layers):
        raise ValueError(f"cache has {len(cache.layers)} layers but model has {len(layers)}: pass the cache "
                         "compress returned for a prefill of this model")
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    if suffix is not None:
        check_tensor("suffix", suffix, dtype="integer", nonempty=False)
        if suffix.numel():
            _check_input_ids(model, suffix, one_prompt=True, name="suffix")
    position = pre.prompt_len
    if suffix is not None and suffix.numel():
        if suffix.dim() != 2 or suffix.shape[0] != 1:
            raise ValueError(f"suffix must be [1, n] token ids, got {tuple(suffix.shape)}")
        n = suffix.shape[1]
        pos = torch.arange(position, position + n, device=model.device)[None]
        with attention_per_layer(model, span=position + n):  # each layer masked at its own length
            logits = model(suffix.to(model.device), position_ids=pos, use_cache=True,
                           **cache_kwargs(model, cache)).logits
        token, position = logits[0, -1].argmax().view(1, 1), position + n
    else:
        token = pre.last_logits.argmax().view(1, 1)
    out = [token.item()]
    for step in range(max_new_tokens - 1):
        pos = torch.tensor([[position + step]], device=model.device)
        with attention_per_layer(model, span=position + step + 1):
            logits = model(token.to(model.device), position_ids=pos, use_cache=True,
                           **cache_kwargs(model, cache)).logits
        token = logits[0, -1].argmax().view(1, 1)
        out.append(token.item())
    return out
