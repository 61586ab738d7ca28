"""Queries and keys of every layer as the model's own attention used them, and per-layer causal masks.

Window scoring needs each layer's post-RoPE queries and keys. They are taken from inside the attention
computation itself: :func:`attention_per_layer` switches the model, for the duration of one call, to an
attention function registered with transformers' ``AttentionInterface`` that records ``(query, key)`` and then
runs the model's own eager or SDPA attention. So whatever the architecture does before attention (Qwen3's and
OLMo-2's q/k norms, fused projections, partial RoPE) is already in what we score, and nothing is recomputed.

The same function builds the causal mask of each layer from that layer's own key length. transformers builds
one mask for all layers from layer 0's cache length, which breaks eager attention (and any multi-token step)
once PyramidKV has left the layers with different lengths — the bug users reported in KVCache-Factory.
"""

from __future__ import annotations

import contextvars
import copy
import inspect
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..lab import cache_kwargs
from ..lab.checks import check_tensor, check_type

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "olmo2")  # each tested against its eager attention weights
BASES = ("eager", "sdpa")  # the attention implementations the per-layer function wraps
NAME = "companion_pyramidkv"


@dataclass
class _State:
    base: str  # the model's own attention implementation
    sink: list | None  # (query, key) per attention call, in layer order, when capturing
    span: int  # positions the sequence covers after this call (evicted tokens included)


_STATE: contextvars.ContextVar[_State | None] = contextvars.ContextVar(NAME, default=None)


def _causal_mask(query: torch.Tensor, key: torch.Tensor, base: str) -> torch.Tensor:
    """``[1, 1, n, k]`` mask for the n newest tokens over a layer's k keys: all cached keys are visible, and the
    n new tokens (the last n keys) see each other causally. Boolean (``True`` = attend) for SDPA, additive for
    eager."""
    n, k = query.shape[-2], key.shape[-2]
    visible = torch.ones(n, k, dtype=torch.bool, device=query.device).tril(k - n)
    if base == "sdpa":
        return visible[None, None]
    mask = torch.zeros(n, k, dtype=query.dtype, device=query.device)
    return mask.masked_fill(~visible, torch.finfo(query.dtype).min)[None, None]


def _attention(module, query, key, value, attention_mask, dropout=0.0, **kwargs):
    """The registered attention function: record ``(query, key)``, mask per layer, run the base attention.

    ``dropout`` is the sixth parameter, as in transformers' registered functions: transformers passes it by
    keyword, wrappers such as kvpress's ``attention_patch`` by position; the base function gets it by keyword
    (a model's own ``eager_attention_forward`` takes ``scaling`` in that place)."""
    state = _STATE.get()
    if state is None:
        raise RuntimeError(f"attention implementation {NAME!r} only runs inside companion.pyramidkv calls")
    window = kwargs.get("sliding_window")
    if window is not None and state.span > window:
        raise ValueError(f"sliding-window attention ({window} tokens) over {state.span} positions is not supported: "
                         "a compressed cache has no per-layer sliding-window mask")
    if state.sink is not None:
        state.sink.append((query, key))
    n, k = query.shape[-2], key.shape[-2]
    if attention_mask is None and n > 1 and (state.base == "eager" or n != k):
        attention_mask = _causal_mask(query, key, state.base)
    if state.base == "eager":  # the module's own eager function (some families change it, e.g. soft-capping)
        forward = getattr(sys.modules[type(module).__module__], "eager_attention_forward")
    else:
        forward = ALL_ATTENTION_FUNCTIONS[state.base]
    return forward(module, query, key, value, attention_mask, dropout=dropout, **kwargs)


AttentionInterface.register(NAME, _attention)


@contextmanager
def attention_per_layer(model, *, sink: list | None = None, span: int = 0):
    """Run ``model`` with per-layer causal masks (and, with ``sink``, record every layer's post-RoPE
    ``(query [b, H, n, d], key [b, Hkv, k, d])`` into it, in layer order) for the duration of the block.

    transformers creates no mask for a registered attention function, so each layer's mask is built from its own
    key length (one prompt, no padding). ``span``: positions the sequence covers after the call, evicted tokens
    included, to refuse sliding-window models beyond their window.

    Raises:
        ValueError: the model's attention implementation is not one of :data:`BASES`.
    """
    base = model.config._attn_implementation
    if base not in BASES:
        raise ValueError(f"model: attention implementation must be one of {BASES} for per-layer masks, got {base!r}")
    token = _STATE.set(_State(base, sink, span))
    model.config._attn_implementation = NAME
    try:
        yield
    finally:
        model.config._attn_implementation = base
        _STATE.reset(token)


def _layers(model):
    """The decoder layers of a supported model; ``TypeError`` naming ``model`` for anything else."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(model, torch.nn.Module) or model_type not in SUPPORTED or layers is None or not len(layers) \
            or not hasattr(layers[0], "self_attn"):
        raise TypeError(
            f"model: {type(model).__name__} (model_type {model_type!r}) is not supported: window scoring knows "
            f"the decoder families tested against their own attention ({', '.join(SUPPORTED)})"
        )
    return layers


def _check_input_ids(model, input_ids, *, one_prompt: bool, name: str = "input_ids") -> None:
    """``input_ids``: a non-empty ``[batch, q_len]`` (``[1, q_len]`` with ``one_prompt``) integer tensor of token
    ids inside the model's vocabulary."""
    check_tensor(name, input_ids, dtype="integer", nonempty=False)
    if input_ids.dim() != 2 or (one_prompt and input_ids.shape[0] != 1):
        expected = "one prompt, shape [1, q_len]" if one_prompt else "a batch of prompts, shape [batch, q_len]"
        raise ValueError(f"{name} must be {expected}, got {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError(f"{name} must hold at least one token, got shape {tuple(input_ids.shape)} (an empty prompt)")
    vocab = model.get_input_embeddings().num_embeddings
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"{name} must be token ids in [0, {vocab}) (the model's vocabulary), got ids from "
                         f"{low} to {high}")


def _check_cache(name: str, cache, *, optional: bool = False) -> None:
    """``cache``: a ``transformers`` cache (``None`` allowed when ``optional``)."""
    from transformers.cache_utils import Cache

    if cache is None and optional:
        return
    check_type(name, cache, Cache, what="a transformers cache (e.g. DynamicCache)" + (" or None" if optional else ""))


@torch.no_grad()
def queries_keys(model, input_ids: torch.Tensor, *, cache=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the prompt once and return, per layer, ``(Q, K)`` exactly as that layer's attention received them.

    Nothing is recomputed: the registered attention function of :func:`attention_per_layer` records the query
    and key states (after RoPE, after any q/k norm) inside the forward pass, then runs the model's own eager or
    SDPA attention.

    Args:
        model: a ``*ForCausalLM`` of a :data:`SUPPORTED` family with eager or SDPA attention.
        input_ids: ``[batch, q_len]``.
        cache: optional ``transformers.DynamicCache`` to fill during the same forward pass (a prefill); it must
            be empty, so that each layer's keys are the prompt's.
    Returns:
        ``[(Q [batch, num_heads, q_len, head_dim], K [batch, num_kv_heads, q_len, head_dim]), ...]``, one per
        layer, in the model's dtype.
    Raises:
        TypeError: an unsupported ``model``; ``input_ids`` not an integer tensor; ``cache`` not a cache.
        ValueError: ``input_ids`` not 2-D, empty, or with ids outside the vocabulary; a non-empty ``cache``; an
            attention implementation other than eager or SDPA.
    """
    layers = _layers(model)
    _check_input_ids(model, input_ids, one_prompt=False)
    _check_cache("cache", cache, optional=True)
    if cache is not None and cache.get_seq_length() > 0:
        raise ValueError(f"cache must be empty (a fresh DynamicCache), it holds {cache.get_seq_length()} tokens")
    sink: list = []
    with attention_per_layer(model, sink=sink, span=input_ids.shape[1]):
        if cache is None:
            model(input_ids.to(model.device), use_cache=False)
        else:
            extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
            model(input_ids.to(model.device), use_cache=True, **cache_kwargs(model, cache), **extra)
    if len(sink) != len(layers):
        raise TypeError(f"model: {len(sink)} attention calls for {len(layers)} layers; window scoring needs one "
                        "attention call per decoder layer")
    return sink


def expand_kv_heads(model):
    """The same model with its key/value projections repeated to every query head (no grouped-query attention).

    Mathematically the same function (transformers' ``repeat_kv`` does this repetition at every call), but its
    KV cache has ``num_attention_heads`` heads, so each query head can keep its own tokens: the official
    PyramidKV/SnapKV behaviour, and a cache ``num_attention_heads / num_key_value_heads`` times larger per
    token. All other weights are shared with ``model`` (no copy); the result is cached on ``model``.

    Raises:
        TypeError: ``model`` is not a :data:`SUPPORTED` decoder, or one whose key norm spans all heads (OLMo-2).
    """
    _layers(model)
    cached = getattr(model, "_companion_expanded", None)
    if cached is not None:
        return cached
    layers = _layers(model)
    H, Hkv = model.config.num_attention_heads, model.config.num_key_value_heads
    if H == Hkv:
        return model
    norm = getattr(layers[0].self_attn, "k_norm", None)
    if norm is not None and norm.weight.numel() != layers[0].self_attn.head_dim:
        raise TypeError(f"model: {model.config.model_type} normalises all key heads together (k_norm over "
                        f"{norm.weight.numel()} values), so its key heads cannot be repeated; use KV-head selection")
    group = H // Hkv
    shared = {id(p): p for name, p in model.named_parameters() if not name.endswith(("k_proj.weight", "v_proj.weight", "k_proj.bias", "v_proj.bias"))}
    shared.update({id(b): b for b in model.buffers()})
    wide = copy.deepcopy(model, memo=shared)
    wide.config.num_key_value_heads = H
    for layer in _layers(wide):
        attn = layer.self_attn
        d = attn.head_dim
        for name in ("k_proj", "v_proj"):
            proj = getattr(attn, name)
            weight = proj.weight.detach().view(Hkv, d, -1).repeat_interleave(group, dim=0).reshape(H * d, -1)
            proj.weight = torch.nn.Parameter(weight, requires_grad=False)
            proj.out_features = H * d
            if proj.bias is not None:
                bias = proj.bias.detach().view(Hkv, d).repeat_interleave(group, dim=0).reshape(-1)
                proj.bias = torch.nn.Parameter(bias, requires_grad=False)
        attn.num_key_value_groups = 1
    del layers
    object.__setattr__(model, "_companion_expanded", wide)
    return wide
