"""The autograd baseline the HQQ blog compares against: Adam on the same objective, zero-point only."""

from __future__ import annotations

import torch

from ..lab.checks import check_float, check_int
from .quantize import _grouped, _init_scale_zero, _validate


def optimize_zero_autograd(W: torch.Tensor, *, nbits: int = 4, group_size: int = 64, axis: int = 0, p: float = 1.0,
                           steps: int = 200, lr: float = 1e-2) -> tuple[torch.Tensor, list[float]]:
    r"""Minimise :math:`\operatorname{mean}|W - (\operatorname{round}(W\,sc + z) - z)/sc|^p` over ``z`` with Adam.

    The rounding has zero gradient, so the gradient flows through the ``−z/sc`` term only (the codes are
    re-rounded at every step). p = 1 (L1) by default, as the blog's baseline; p < 1 makes the gradient blow up
    near zero error. Returns the final zero-point and the mean absolute error per step.

    Raises:
        TypeError: as :func:`~companion.hqq.quantize` for ``W``, ``nbits``, ``group_size``, ``axis``; ``steps`` not
            an int; ``p`` or ``lr`` not a real number.
        ValueError: as :func:`~companion.hqq.quantize`; ``p <= 0``, ``steps < 1`` or ``lr <= 0`` (or NaN/inf).
    """
    nbits, group_size, axis = _validate(W, nbits, group_size, axis)
    p = check_float("p", p, low=0.0, low_open=True)
    steps = check_int("steps", steps, low=1)
    lr = check_float("lr", lr, low=0.0, low_open=True)
    Wg = _grouped(W, group_size, axis)
    scale, zero0 = _init_scale_zero(Wg, nbits, axis)
    max_v = round(2**nbits - 1)
    zero = zero0.clone().requires_grad_(True)
    opt = torch.optim.Adam([zero], lr=lr)
    history = []
    for _ in range(steps):
        W_q = torch.round(Wg * scale + zero.detach()).clamp(0, max_v)
        W_r = (W_q - zero) / scale
        err = (Wg - W_r).abs()
        loss = err.pow(p).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(err.mean().item())
    return zero.detach(), history
