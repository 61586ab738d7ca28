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
    check_experts(num_experts, k)
    if isinstance(expert, bool) or not isinstance(expert, int) or not 0 <= expert < num_experts:
        raise ValueError(f"expert must be an int in [0, {num_experts}), got {expert!r}")
    gen = torch.Generator().manual_seed(seed)
    values = torch.linspace(-1, 1, 401) if values is None else torch.as_tensor(values, dtype=torch.float32)
    if values.dim() != 1 or values.numel() < 2:
        raise ValueError(f"values must be a 1-D sequence of at least 2 logits, got shape {tuple(values.shape)}")
    if logits is None:
        logits = torch.randn(num_experts, generator=gen) * 0.3
    logits = torch.as_tensor(logits, dtype=torch.float32)
    if logits.shape != (num_experts,):
        raise ValueError(f"logits must have shape [E] = [{num_experts}], got {list(logits.shape)}")
    torch_state = torch.get_rng_state()
    torch.manual_seed(seed)
    layer = MoE(d_model, d_ff, num_experts=num_experts, k=k, router="relu", init_std=0.5)
    torch.set_rng_state(torch_state)
    topk_router = TopKRouter(d_model, num_experts, k=k)
    x = torch.randn(1, d_model, generator=gen).expand(values.numel(), d_model).contiguous()
    swept = logits.repeat(values.numel(), 1)
    swept[:, expert] = values
    relu_routing = layer.router.route(swept)
    topk_routing = topk_router.route(swept)
    return LogitSweep(
        values=values, expert=expert, logits=logits,
        topk=dispatch(x, topk_routing, layer.w_in, layer.w_out),
        relu=dispatch(x, relu_routing, layer.w_in, layer.w_out),
        topk_gates=topk_routing.gates, relu_gates=relu_routing.gates,
    )
