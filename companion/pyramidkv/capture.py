"""Queries and keys of every layer of a Llama-style Hugging Face model, for window scoring.

Models run with SDPA (or flash) attention do not return attention weights, so the observation-window scores
are recomputed from each layer's own inputs: a forward pre-hook on every ``self_attn`` module records the
normed hidden states and the rotary embeddings it receives, and we apply its ``q_proj``/``k_proj`` and RoPE
exactly as the module does.
"""

from __future__ import annotations

import inspect

import torch

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


def _layers(model):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if model.config.model_type not in SUPPORTED or layers is None or not hasattr(layers[0], "self_attn"):
        raise TypeError(
            f"{type(model).__name__} (model_type {model.config.model_type!r}) is not supported: window scoring knows "
            f"Llama-style decoders ({', '.join(SUPPORTED)}) with model.model.layers[i].self_attn"
        )
    return layers


def cache_kwargs(model, cache) -> dict:
    """The keyword under which this transformers version takes a cache (``cache`` from 5.x, else
    ``past_key_values``)."""
    params = inspect.signature(model.model.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


@torch.no_grad()
def queries_keys(model, input_ids: torch.Tensor, *, cache=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the prompt once and return, per layer, ``(Q, K)`` after RoPE.

    Args:
        model: a Llama-style ``*ForCausalLM`` (any attention implementation).
        input_ids: ``[batch, q_len]``.
        cache: optional ``transformers.DynamicCache`` to fill during the same forward pass (a prefill).
    Returns:
        ``[(Q [batch, num_heads, q_len, head_dim], K [batch, num_kv_heads, q_len, head_dim]), ...]``, one per layer.
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    layers = _layers(model)
    captured: list = [None] * len(layers)

    def hook(index):
        def record(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            captured[index] = (module, hidden, kwargs["position_embeddings"])
        return record

    handles = [layer.self_attn.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
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
    for attn, hidden, (cos, sin) in captured:
        shape = (*hidden.shape[:-1], -1, attn.head_dim)
        q = attn.q_proj(hidden).view(shape).transpose(1, 2)
        k = attn.k_proj(hidden).view(shape).transpose(1, 2)
        out.append(apply_rotary_pos_emb(q, k, cos, sin))
    return out
