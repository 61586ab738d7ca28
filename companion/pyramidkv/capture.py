"""Queries and keys of every layer of a Llama-style Hugging Face model, for window scoring.

Models run with SDPA (or flash) attention do not return attention weights, so the observation-window scores
are recomputed from each layer's own inputs: a forward pre-hook on every ``self_attn`` module records the
normed hidden states and the rotary embeddings it receives, and we apply its ``q_proj``/``k_proj`` and RoPE
exactly as the module does.
"""

from __future__ import annotations

import copy
import inspect

import torch

from ..lab import cache_kwargs
from ..lab.checks import check_tensor, check_type

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


def _layers(model):
    """The decoder layers of a supported model; ``TypeError`` naming ``model`` for anything else."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(model, torch.nn.Module) or model_type not in SUPPORTED or layers is None or not len(layers) \
            or not hasattr(layers[0], "self_attn"):
        raise TypeError(
            f"model: {type(model).__name__} (model_type {model_type!r}) is not supported: window scoring knows "
            f"Llama-style decoders ({', '.join(SUPPORTED)}) with model.model.layers[i].self_attn"
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
    """Run the prompt once and return, per layer, ``(Q, K)`` after RoPE.

    The projections are not recomputed: forward hooks keep the outputs of each layer's ``q_proj`` and
    ``k_proj`` from the forward pass itself, and a pre-hook on ``self_attn`` keeps the rotary embeddings
    (cos, sin) it receives; RoPE is then applied as the module applies it.

    Args:
        model: a Llama-style ``*ForCausalLM`` (any attention implementation).
        input_ids: ``[batch, q_len]``.
        cache: optional ``transformers.DynamicCache`` to fill during the same forward pass (a prefill).
    Returns:
        ``[(Q [batch, num_heads, q_len, head_dim], K [batch, num_kv_heads, q_len, head_dim]), ...]``, one per layer.
    Raises:
        TypeError: an unsupported ``model``; ``input_ids`` not an integer tensor; ``cache`` not a cache.
        ValueError: ``input_ids`` not 2-D, empty, or with ids outside the vocabulary.
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    layers = _layers(model)
    _check_input_ids(model, input_ids, one_prompt=False)
    _check_cache("cache", cache, optional=True)
    rope: list = [None] * len(layers)
    projected: list[dict] = [{} for _ in layers]

    def keep_rope(index):
        def record(module, args, kwargs):
            rope[index] = kwargs["position_embeddings"]
        return record

    def keep_output(index, name):
        def record(module, args, output):
            projected[index][name] = output
        return record

    handles = []
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        handles.append(attn.register_forward_pre_hook(keep_rope(i), with_kwargs=True))
        handles.append(attn.q_proj.register_forward_hook(keep_output(i, "q")))
        handles.append(attn.k_proj.register_forward_hook(keep_output(i, "k")))
    try:
        if cache is None:
            model(input_ids.to(model.device), use_cache=False)
        else:
            extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
            model(input_ids.to(model.device), use_cache=True, **cache_kwargs(model, cache), **extra)
    finally:
        for h in handles:
            h.remove()
    out = []
    for layer, (cos, sin), proj in zip(layers, rope, projected):
        shape = (*input_ids.shape, -1, layer.self_attn.head_dim)
        q = proj["q"].view(shape).transpose(1, 2)
        k = proj["k"].view(shape).transpose(1, 2)
        out.append(apply_rotary_pos_emb(q, k, cos, sin))
    return out


def expand_kv_heads(model):
    """The same model with its key/value projections repeated to every query head (no grouped-query attention).

    Mathematically the same function (transformers' ``repeat_kv`` does this repetition at every call), but its
    KV cache has ``num_attention_heads`` heads, so each query head can keep its own tokens: the official
    PyramidKV/SnapKV behaviour, and a cache ``num_attention_heads / num_key_value_heads`` times larger per
    token. All other weights are shared with ``model`` (no copy); the result is cached on ``model``.

    Raises:
        TypeError: ``model`` is not a supported Llama-style decoder.
    """
    _layers(model)
    cached = getattr(model, "_companion_expanded", None)
    if cached is not None:
        return cached
    layers = _layers(model)
    H, Hkv = model.config.num_attention_heads, model.config.num_key_value_heads
    if H == Hkv:
        return model
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
