"""The autograd baseline of the HQQ blog, as the official code has it: hqq 0.2.8's ``optimize_weights_autograd``
(``hqq/core/optimize.py``), scale *and* zero trained with AdamW on the L1 error."""

from __future__ import annotations

import torch

from ..lab.checks import check_float, check_int
from .quantize import _grouped, _init_scale_zero, _validate


def optimize_weights_autograd(W: torch.Tensor, *, nbits: int = 4, group_size: int = 64, axis: int = 0,
                              lr: float = 2e-3, iters: int = 2500) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    r"""Minimise :math:`\operatorname{mean}|W - (\operatorname{round}(W\,sc + z) - z)/sc|` over the inverse scale
    ``sc`` *and* the zero ``z`` of every group with AdamW, as hqq 0.2.8's ``optimize_weights_autograd`` does with
    its defaults: ``lr = 2e-3``, ``iters = 2500``, ``betas = (0.9, 0.99)``, ``eps = 1e-6``, no weight decay, no
    learning-rate schedule, codes re-rounded at every step (``update_Wq=False``), L1 loss on the weights
    (``use_fake_data=False``, ``normalize=False``). ``round`` has zero gradient, so the gradient flows through
    ``(· − z)/sc``. Start: hqq's min/max ``sc`` and ``z`` (as :func:`~companion.hqq.quantize`). As hqq, the
    trained values are kept only if the final loss is below the initial one; otherwise the start is returned.

    One difference: hqq wraps the loss in ``torch.compile`` by default (``compile=True``); we run it eagerly
    (hqq's ``compile=False``), which gives the same numbers (tested against the installed hqq).

    Args:
        W: float weights of any shape; ``W.numel()`` divisible by ``group_size``.
        nbits, group_size, axis: grouping as :func:`~companion.hqq.quantize`.
        lr, iters: AdamW learning rate and number of steps (hqq's defaults).
    Returns:
        ``(scale, zero, history)``: the inverse scale ``sc`` and zero ``z`` (shape ``[1, numel/g]`` for axis 0,
        ``[numel/g, 1]`` for axis 1, float32) and ``history``, ``iters + 1`` losses (mean absolute errors): ``history[k]`` after
        ``k`` steps.
    Raises:
        TypeError: as :func:`~companion.hqq.quantize` for ``W``, ``nbits``, ``group_size``, ``axis``; ``iters`` not
            an int; ``lr`` not a real number.
        ValueError: as :func:`~companion.hqq.quantize`; ``iters < 1`` or ``lr <= 0`` (or NaN/inf).
    """
    nbits, group_size, axis = _validate(W, nbits, group_size, axis)
    lr = check_float("lr", lr, low=0.0, low_open=True)
    iters = check_int("iters", iters, low=1)
    Wg = _grouped(W, group_size, axis)
    scale0, zero0 = _init_scale_zero(Wg, nbits, axis)
    max_v = round(2**nbits - 1)
    scale = torch.nn.Parameter(scale0.clone())
    zero = torch.nn.Parameter(zero0.clone())
    opt = torch.optim.AdamW([scale, zero], lr=lr, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.0)

    def loss_fn() -> torch.Tensor:
        W_q = torch.round(Wg * scale + zero).clamp(0, max_v)
        return torch.mean(torch.abs(Wg - (W_q - zero) / scale))

    history = []  # history[k]: the loss after k steps (the loss computed for step k + 1)
    for _ in range(iters):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        history.append(loss.item())
    with torch.no_grad():
        history.append(loss_fn().item())
    if history[-1] < history[0]:
        return scale.detach(), zero.detach(), history
    return scale0, zero0, history
