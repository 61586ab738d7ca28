"""Held-out perplexity of a causal language model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import check_int, check_tensor, check_type
from .runtime import progress


@torch.no_grad()
def perplexity(
    model,
    token_ids: torch.Tensor,
    *,
    context: int = 512,
    stride: int | None = None,
    max_tokens: int | None = None,
    desc: str = "perplexity",
) -> float:
    r"""Perplexity :math:`\exp\big(-\frac{1}{N}\sum_t \log p(x_t \mid x_{<t})\big)` of ``model`` on ``token_ids``.

    The sequence is read in windows of ``context`` tokens that start every ``stride`` tokens
    (default ``stride = context``: disjoint windows). Each token is scored at most once, in the first window
    that holds it at a position > 0. With disjoint windows the first token of every window goes unscored;
    with ``stride < context`` every scored token after the first window sees at least ``context - stride``
    tokens of history.

    Args:
        model: a causal LM returning ``.logits`` of shape ``[1, T, vocab]``.
        token_ids: ``LongTensor[N]`` (or ``[1, N]``).
        context: window length in tokens.
        stride: step between window starts, ``1 <= stride <= context``.
        max_tokens: use only the first ``max_tokens`` ids.
    Returns:
        The perplexity (a float >= 1).
    Raises:
        TypeError / ValueError: naming the argument (non-integer or empty ``token_ids``, ``context < 2``,
            ``stride`` outside ``[1, context]``, fewer than 2 tokens, ``model`` not a module).
    """
    check_tensor("token_ids", token_ids, ndim=(1, 2), dtype=(torch.int64, torch.int32))
    ids = token_ids.reshape(-1) if token_ids.dim() == 2 and token_ids.shape[0] == 1 else token_ids
    if ids.dim() != 1:
        raise ValueError(f"token_ids must have shape [N] or [1, N], got {tuple(token_ids.shape)}")
    context = check_int("context", context, low=2)
    stride = context if stride is None else check_int("stride", stride, low=1, high=context)
    if max_tokens is not None:
        ids = ids[:check_int("max_tokens", max_tokens, low=2)]
    if ids.numel() < 2:
        raise ValueError(f"token_ids must hold at least 2 tokens to measure perplexity, got {ids.numel()}")
    check_type("model", model, torch.nn.Module, what="a causal language model (a torch.nn.Module)")
    device = next(model.parameters()).device
    total_nll, scored_until, count = 0.0, 1, 0  # tokens [0, scored_until) are done
    starts = range(0, ids.numel() - 1, stride)
    for start in progress(starts, desc=desc):
        end = min(start + context, ids.numel())
        if end <= scored_until:
            continue
        window = ids[start:end].to(device)[None]
        logits = model(window).logits[0, :-1].float()
        targets = window[0, 1:]
        first = max(scored_until, start + 1) - (start + 1)  # index in targets of the first new token
        total_nll += F.cross_entropy(logits[first:], targets[first:], reduction="sum").item()
        count += targets.numel() - first
        scored_until = end
    return math.exp(total_nll / count)
