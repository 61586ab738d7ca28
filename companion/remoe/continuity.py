"""The continuity demo (the paper's motivating example, §3): sweep one router logit of one token and watch the layer
output under TopK and under ReLU routing.

With TopK (k = 1) the output is ``p_j · Expert_j(x)`` for whichever expert j ranks first; when the swept logit
overtakes the leader the output jumps from one expert's output to another's. With ReLU routing the output is
``Σ_e relu(l_e) · Expert_e(x)``: the swept expert fades in linearly from zero once its logit turns positive,
so the output is continuous (with a kink at 0) and so is its gradient almost everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from companion.lab.checks import check_float, check_int, check_tensor, describe

from .moe import MoE, dispatch
from .routers import TopKRouter, check_experts


@dataclass
class LogitSweep:
    """Layer outputs along a sweep of one logit.

    Attributes:
        values: ``[n]`` the swept logit values.
        expert: which expert's logit was swept.
        logits: ``[E]`` the fixed logits of the token (the swept entry replaced by each value).
        topk, relu: ``[n, d_model]`` the layer output under TopK and under ReLU routing.
        topk_gates, relu_gates: ``[n, E]`` the gates.
    """

    values: torch.Tensor
    expert: int
    logits: torch.Tensor
    topk: torch.Tensor
    relu: torch.Tensor
    topk_gates: torch.Tensor
    relu_gates: torch.Tensor

    def largest_step(self) -> dict[str, float]:
        """The largest change of the output between neighbouring sweep values, ``‖y_{i+1} − y_i‖``, per router.

        On a finer grid TopK's stays put (a jump) while ReLU's shrinks with the spacing (continuity).
        """
        return {name: float((y[1:] - y[:-1]).norm(dim=-1).max()) for name, y in (("topk", self.topk), ("relu", self.relu))}


def _numbers(name: str, value) -> torch.Tensor:
    """``value`` (a tensor or a sequence of real numbers) as a float32 tensor of finite numbers."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must hold real numbers, got {describe(value)}")
    elif isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a tensor or a sequence of numbers, got {describe(value)}")
    else:
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a tensor or a sequence of numbers, got {describe(value)}") from None
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must hold real numbers, got {describe(value)}")
    value = torch.as_tensor(value, dtype=torch.float32)
    return check_tensor(name, value, nonempty=False, finite=True)


def _setup(values, *, expert, d_model, d_ff, num_experts, k, logits, seed):
    """The shared layer, TopK router, token and swept logits of :func:`logit_sweep` and :func:`gradient_check`."""
    num_experts, k = check_experts(num_experts, k)
    expert = check_int("expert", expert, low=0, high=num_experts - 1)
    d_model = check_int("d_model", d_model, low=1)
    d_ff = check_int("d_ff", d_ff, low=1)
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    values = torch.linspace(-1, 1, 401) if values is None else _numbers("values", values)
    if values.dim() != 1 or values.numel() < 2:
        raise ValueError(f"values must be a 1-D sequence of at least 2 logits, got shape {tuple(values.shape)}")
    if logits is not None:
        logits = _numbers("logits", logits)
        if logits.shape != (num_experts,):
            raise ValueError(f"logits must have shape [E] = [{num_experts}], got {list(logits.shape)}")
    gen = torch.Generator().manual_seed(seed)
    if logits is None:
        logits = torch.randn(num_experts, generator=gen) * 0.3
    logits = torch.as_tensor(logits, dtype=torch.float32)
    torch_state = torch.get_rng_state()
    torch.manual_seed(seed)
    layer = MoE(d_model, d_ff, num_experts=num_experts, k=k, router="relu", init_std=0.5)
    topk_router = TopKRouter(d_model, num_experts, k=k)  # its weight is never used: the logits are given
    torch.set_rng_state(torch_state)
    x = torch.randn(1, d_model, generator=gen).expand(values.numel(), d_model).contiguous()
    swept = logits.repeat(values.numel(), 1)
    swept[:, expert] = values
    return layer, topk_router, x, swept, values, logits


@torch.no_grad()
def logit_sweep(values: torch.Tensor | None = None, *, expert: int = 0, d_model: int = 16, d_ff: int = 32,
                num_experts: int = 4, k: int = 1, logits: torch.Tensor | None = None, seed: int = 0) -> LogitSweep:
    """Output of one MoE layer for a fixed token while one router logit is swept.

    The same experts (a randomly initialised :class:`~companion.remoe.MoE` with ``seed``) serve both routers;
    only the gates differ.

    Args:
        values: ``[n]`` logit values to sweep (default 401 points in [-1, 1]).
        expert: index of the swept logit.
        d_model, d_ff, num_experts, k: the layer's shape; TopK keeps k experts.
        logits: ``[E]`` the token's other logits (default: seeded draws from N(0, 0.3²)).
        seed: seeds the experts, the token and the default logits.
    """
    layer, topk_router, x, swept, values, logits = _setup(values, expert=expert, d_model=d_model, d_ff=d_ff,
                                                          num_experts=num_experts, k=k, logits=logits, seed=seed)
    relu_routing = layer.router.route(swept)
    topk_routing = topk_router.route(swept)
    return LogitSweep(
        values=values, expert=expert, logits=logits,
        topk=dispatch(x, topk_routing, layer.w_in, layer.w_out),
        relu=dispatch(x, relu_routing, layer.w_in, layer.w_out),
        topk_gates=topk_routing.gates, relu_gates=relu_routing.gates,
    )


def gradient_check(values: torch.Tensor | None = None, *, expert: int = 0, eps: float = 1e-3, d_model: int = 16,
                   d_ff: int = 32, num_experts: int = 4, k: int = 1, logits: torch.Tensor | None = None,
                   seed: int = 0) -> dict[str, list[float]]:
    """The derivative of the layer output along the sweep of :func:`logit_sweep`: autograd vs finite differences.

    The output is read through a fixed random unit direction u, ``s(l) = u · y(l)``, so each router gives one
    number per swept value ``l``: what backpropagation says, ``∂s/∂l``, and the central difference
    ``(s(l + ε) − s(l − ε)) / 2ε``. For ReLU routing the two agree everywhere except within ε of the kink at
    ``l = 0``; for TopK they agree between the flips of the ranking, and at a flip the difference blows up
    (like ``jump / 2ε``) while autograd reports an ordinary number: the gradient never sees the expert that is
    about to be picked.

    Args:
        values: ``[n]`` swept logit values (default 41 points in [-1, 1]).
        eps: ε of the central difference (computed in float64).
        Others: as in :func:`logit_sweep` (the same seed gives the same experts, token and logits).
    Returns:
        ``{"values", "relu_autograd", "relu_fd", "topk_autograd", "topk_fd"}``, lists of floats.
    """
    check_float("eps", eps, low=0, low_open=True)
    values = torch.linspace(-1, 1, 41) if values is None else values
    layer, topk_router, x, swept, values, _ = _setup(values, expert=expert, d_model=d_model, d_ff=d_ff,
                                                     num_experts=num_experts, k=k, logits=logits, seed=seed)
    layer, topk_router = layer.double(), topk_router.double()
    x, swept = x.double(), swept.double()
    u = torch.randn(d_model, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    u = u / u.norm()
    out: dict[str, list[float]] = {"values": values.tolist()}
    for name, router in (("relu", layer.router), ("topk", topk_router)):
        def score(l: torch.Tensor) -> torch.Tensor:  # s(l) = u · y(l), one per row
            return dispatch(x, router.route(l), layer.w_in, layer.w_out) @ u

        l = swept.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(score(l).sum(), l)
        with torch.no_grad():
            shift = torch.zeros_like(swept)
            shift[:, expert] = eps
            fd = (score(swept + shift) - score(swept - shift)) / (2 * eps)
        out[f"{name}_autograd"] = grad[:, expert].tolist()
        out[f"{name}_fd"] = fd.tolist()
    return out
