"""The autograd baseline the HQQ blog compares against: Adam on the same objective, zero-point only."""

from __future__ import annotations

import torch

from .quantize import _grouped, _init_scale_zero, _validate


def optimize_zero_autograd(W: torch.Tensor, *, nbits: int = 4, group_size: int = 64, axis: int = 0, p: float = 1.0,
                           steps: int = 200, lr: float = 1e-2) -> tuple[torch.Tensor, list[float]]:
    r"""Minimise :math:`\operatorname{mean}|W - (\operatorname{round}(W\,sc + z) - z)/sc|^p` over ``z`` with Adam.

    The rounding has zero gradient, so the gradient flows through the ``−z/sc`` term only (the codes are
    re-rounded at every step). p = 1 (L1) by default, as the blog's baseline; p < 1 makes the gradient blow up
    near zero error. Returns the final zero-point and the mean absolute error per step.
    """
    _validate(W, nbits, group_size, axis)
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
