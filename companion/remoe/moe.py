"""SwiGLU experts and the MoE layer: ``y_t = Σ_e R_te · Expert_e(x_t)`` (Wang et al., 2025, Eq. 1).

Each expert is a full SwiGLU feed-forward block (as in Llama), ``Expert(x) = (silu(x W_g) ⊙ x W_u) W_d`` with
``W_g, W_u: [d_model, d_ff]`` and ``W_d: [d_ff, d_model]``; the dense baseline is one such block with the same
``d_ff``, so a dense model and an MoE with one active expert per token do the same work per token.

Dispatch is dropless (no capacity limit) and batched by expert: for each expert gather the tokens routed to it,
run one SwiGLU on that batch, scale by the gates and ``index_add`` the result back. A token with no active
expert (possible with ReLU routing) gets a zero FFN output, so only the residual stream carries it on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from companion.lab.checks import (
    check_choice,
    check_float,
    check_int,
    check_same_device,
    check_same_dtype,
    check_tensor,
    check_type,
    describe,
)

from .routers import ReLURouter, Routing, TopKRouter, _check_input, check_experts


def swiglu(x: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """SwiGLU with fused input weights: ``(silu(x W_g) ⊙ x W_u) W_d``.

    Args:
        x: ``[N, d_model]``.
        w_in: ``[d_model, 2·d_ff]``, ``W_g`` then ``W_u`` side by side.
        w_out: ``[d_ff, d_model]``.
    Returns:
        ``[N, d_model]``.
    """
    check_tensor("x", x, ndim=2, dtype="floating", nonempty=False)
    check_tensor("w_in", w_in, ndim=2, dtype="floating")
    check_tensor("w_out", w_out, ndim=2, dtype="floating")
    d, h = w_out.shape[1], w_out.shape[0]
    if tuple(w_in.shape) != (d, 2 * h):
        raise ValueError(f"w_in must have shape [d_model, 2·d_ff] = [{d}, {2 * h}] (from w_out: [d_ff, d_model] = "
                         f"[{h}, {d}]), got {describe(w_in)}")
    if x.shape[1] != d:
        raise ValueError(f"x must have shape [N, d_model] = [N, {d}], got {describe(x)}")
    _check_same(x=x, w_in=w_in, w_out=w_out)
    return _swiglu(x, w_in, w_out)


def _check_same(**tensors: torch.Tensor) -> None:
    """The named tensors share one dtype (``TypeError``) and one device (``ValueError``)."""
    check_same_dtype(**tensors)
    check_same_device(**tensors)


def _swiglu(x: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    gate, up = (x @ w_in).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ w_out


class SwiGLU(nn.Module):
    """The dense FFN baseline: one SwiGLU block, ``[..., d_model] -> [..., d_model]``.

    Args:
        d_model: hidden size.
        d_ff: inner size (the same as each expert's, for matched active compute).
        init_std: standard deviation of the initial weights (0.02, Megatron-LM's default; the paper's scripts use 0.01).
    """

    def __init__(self, d_model: int, d_ff: int, *, init_std: float = 0.02):
        super().__init__()
        d_model = check_int("d_model", d_model, low=1)
        d_ff = check_int("d_ff", d_ff, low=1)
        check_float("init_std", init_std, low=0, low_open=True)
        self.d_model, self.d_ff = d_model, d_ff
        self.w_in = nn.Parameter(torch.randn(d_model, 2 * d_ff) * init_std)
        self.w_out = nn.Parameter(torch.randn(d_ff, d_model) * init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_type("x", x, torch.Tensor, what="a torch.Tensor")
        if x.dim() < 1 or x.shape[-1] != self.d_model:
            raise ValueError(f"SwiGLU expected hidden size {self.d_model}, got input x of shape {tuple(x.shape)}")
        _check_input("x", x, self.w_in, what="SwiGLU")
        return _swiglu(x.reshape(-1, self.d_model), self.w_in, self.w_out).reshape(x.shape)


def dispatch(x: torch.Tensor, routing: Routing, w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """Dropless expert dispatch, batched by expert: ``y_t = Σ_{e: mask_te} R_te · SwiGLU_e(x_t)``.

    Args:
        x: ``[T, d_model]`` expert input (the RMSNorm output).
        routing: gates ``[T, E]`` and mask ``[T, E]`` from a router.
        w_in: ``[E, d_model, 2·d_ff]`` stacked expert input weights.
        w_out: ``[E, d_ff, d_model]`` stacked expert output weights.
    Returns:
        ``[T, d_model]``; rows of tokens with no active expert are zero.
    """
    check_tensor("x", x, ndim=2, dtype="floating", nonempty=False)
    check_type("routing", routing, Routing, what="a Routing (from a router)")
    check_tensor("w_in", w_in, ndim=3, dtype="floating")
    check_tensor("w_out", w_out, ndim=3, dtype="floating")
    E, h, d = w_out.shape
    if tuple(w_in.shape) != (E, d, 2 * h):
        raise ValueError(f"w_in must have shape [E, d_model, 2·d_ff] = [{E}, {d}, {2 * h}] (from w_out: "
                         f"[E, d_ff, d_model] = [{E}, {h}, {d}]), got {describe(w_in)}")
    T = x.shape[0]
    if x.shape[1] != d:
        raise ValueError(f"x must have shape [T, d_model] = [T, {d}], got {describe(x)}")
    check_tensor("routing.gates", routing.gates, shape=(T, E), dtype="floating", nonempty=False)
    check_tensor("routing.mask", routing.mask, shape=(T, E), dtype=torch.bool, nonempty=False)
    _check_same(x=x, w_in=w_in, w_out=w_out, **{"routing.gates": routing.gates})
    check_same_device(x=x, **{"routing.mask": routing.mask})
    return _dispatch(x, routing, w_in, w_out)


def _dispatch(x: torch.Tensor, routing: Routing, w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    for e in range(w_in.shape[0]):
        idx = routing.mask[:, e].nonzero(as_tuple=True)[0]  # the tokens routed to expert e
        if idx.numel() == 0:
            continue
        y = _swiglu(x.index_select(0, idx), w_in[e], w_out[e])  # one batched SwiGLU per expert
        out.index_add_(0, idx, y * routing.gates.index_select(0, idx)[:, e : e + 1])
    return out


class MoE(nn.Module):
    """A mixture-of-experts FFN block with ReLU (ReMoE) or TopK routing.

    Args:
        d_model: hidden size.
        d_ff: inner size of each SwiGLU expert (each expert is a full FFN).
        num_experts: E (the paper: 8).
        k: target active experts per token; TopK uses exactly k, ReMoE's sparsity target is ``1 - k/E``.
        router: ``"relu"`` (ReMoE) or ``"topk"``.
        aux_coef: the TopK router's load-balancing coefficient (0.01); unused by ReLU routing.
        router_init_std: σ of the router weights' N(0, σ²) initialisation (0.01).
        init_std: σ of the expert weights (0.02).

    ``forward(x)`` takes ``[..., d_model]`` and returns ``(y [..., d_model], Routing)`` with the routing of the
    flattened ``T = x.numel() // d_model`` tokens.
    """

    def __init__(self, d_model: int, d_ff: int, *, num_experts: int = 8, k: int = 1, router: str = "relu",
                 aux_coef: float = 0.01, router_init_std: float = 0.01, init_std: float = 0.02):
        super().__init__()
        d_model = check_int("d_model", d_model, low=1)
        d_ff = check_int("d_ff", d_ff, low=1)
        num_experts, k = check_experts(num_experts, k)
        check_choice("router", router, ("relu", "topk"))
        check_float("aux_coef", aux_coef, low=0)
        check_float("router_init_std", router_init_std, low=0, low_open=True)
        check_float("init_std", init_std, low=0, low_open=True)
        if router == "relu":
            self.router = ReLURouter(d_model, num_experts, init_std=router_init_std)
        elif router == "topk":
            self.router = TopKRouter(d_model, num_experts, k=k, aux_coef=aux_coef, init_std=router_init_std)
        else:
            raise ValueError(f"router must be 'relu' (ReMoE) or 'topk', got {router!r}")
        self.d_model, self.d_ff, self.num_experts, self.k, self.kind = d_model, d_ff, num_experts, k, router
        self.w_in = nn.Parameter(torch.randn(num_experts, d_model, 2 * d_ff) * init_std)
        self.w_out = nn.Parameter(torch.randn(num_experts, d_ff, d_model) * init_std)

    def forward(self, x: torch.Tensor, *, logits: torch.Tensor | None = None) -> tuple[torch.Tensor, Routing]:
        """Route and run the experts.

        Args:
            x: ``[..., d_model]``.
            logits: optional ``[T, E]`` router logits to use instead of ``x W_rᵀ`` (for the continuity demo).
        """
        check_type("x", x, torch.Tensor, what="a torch.Tensor")
        if x.dim() < 1 or x.shape[-1] != self.d_model:
            raise ValueError(f"MoE expected hidden size {self.d_model}, got input x of shape {tuple(x.shape)}")
        _check_input("x", x, self.w_in, what="MoE layer")
        if x.numel() == 0:
            raise ValueError(f"x must hold at least one token, got {describe(x)}")
        flat = x.reshape(-1, self.d_model)
        if logits is None:
            routing = self.router(flat)
        else:
            check_type("logits", logits, torch.Tensor, what="a torch.Tensor")
            if logits.shape != (flat.shape[0], self.num_experts):
                raise ValueError(f"logits must have shape [T, E] = {[flat.shape[0], self.num_experts]}, "
                                 f"got {list(logits.shape)}")
            _check_input("logits", logits, self.w_in, what="MoE layer")
            routing = self.router.route(logits)
        return _dispatch(flat, routing, self.w_in, self.w_out).reshape(x.shape), routing

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_ff={self.d_ff}, num_experts={self.num_experts}, k={self.k}, router={self.kind!r}"
