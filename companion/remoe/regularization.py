"""ReMoE's adaptive L1 regularisation: the load-balanced L1 penalty and the λ controller (paper §3).

For one layer with gates ``R: [T, E]`` and target k active experts of E:

- ``n_e = #{t : R_te > 0}`` (counted, no gradient), ``f_e = E · n_e / (k · T)``;
- ``L_reg = λ · (1/T) Σ_t Σ_e f_e · R_te``, summed over the MoE layers (not averaged).

Under perfect balance (every expert used by k·T/E tokens) ``f_e = 1`` and this is the plain mean L1 norm of the
gates; an overloaded expert's gates are pushed down harder. ``balanced=False`` gives that plain L1 (f_e = 1).

Sparsity of a layer is ``S = 1 − #nonzero gates / (T·E)``; the controller averages it over layers and, once per
step, sets ``λ ← λ·α`` if ``S < 1 − k/E`` else ``λ ← λ/α`` (λ₀ = 1e-8, α = 1.2). λ is global: the average can be
on target while single layers drift, which :func:`routing_stats` makes visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from companion.lab.checks import check_float, check_probability, check_tensor, check_type, describe

from .routers import Routing, check_experts


def _check_gates(gates, *, name: str = "gates", floating: bool = False) -> None:
    """A ``[T, E]`` tensor with ``T, E >= 1`` (floating-point gates, or also a bool mask unless ``floating``)."""
    check_tensor(name, gates, dtype="floating" if floating else None, nonempty=False)
    if gates.dim() != 2 or gates.numel() == 0:
        raise ValueError(f"{name} must have shape [T, E] with T >= 1 and E >= 1, got {tuple(gates.shape)}")
    if gates.is_complex():
        raise TypeError(f"{name} must be real (gates) or bool (a dispatch mask), got {describe(gates)}")


def load_balanced_l1(gates: torch.Tensor, *, k: int, balanced: bool = True) -> torch.Tensor:
    """``(1/T) Σ_t Σ_e f_e · R_te`` for one layer (multiply by λ and sum over layers for ``L_reg``).

    Args:
        gates: ``[T, E]`` non-negative ReLU gates R.
        k: target active experts per token (``f_e = E·n_e/(k·T)``).
        balanced: ``True`` for the load-balanced L1 of the official code; ``False`` for plain L1 (f_e = 1).
    Returns:
        A 0-d tensor; the gradient flows through R only (``f_e`` is a count).
    """
    _check_gates(gates, floating=True)
    T, E = gates.shape
    check_experts(E, k)
    check_type("balanced", balanced, bool)
    if not balanced:
        return gates.sum() / T
    with torch.no_grad():
        f = E * (gates > 0).sum(0).to(gates.dtype) / (k * T)  # f_e, [E]
    return (gates * f).sum() / T


def sparsity(gates: torch.Tensor) -> float:
    """``S = 1 − #nonzero(R) / (T·E)`` for gates (or a bool dispatch mask) ``[T, E]``."""
    _check_gates(gates)
    return 1.0 - (gates != 0).sum().item() / gates.numel()


def expert_load(gates: torch.Tensor) -> torch.Tensor:
    """Share of the active (token, expert) pairs that each expert handles: ``n_e / Σ_e' n_e'``, ``[E]``.

    Sums to 1 (all zeros when no expert is active); perfect balance is ``1/E`` everywhere.
    """
    _check_gates(gates)
    n = (gates != 0).sum(0).double()
    return n / n.sum() if n.sum() > 0 else n


def routing_stats(routings: Sequence[Routing]) -> dict:
    """Per-layer statistics of one step's routing, as plain Python numbers.

    Returns:
        ``{"sparsity": mean S over layers, "layer_sparsity": [S_l], "expert_load": [[share_e] per layer],
        "active_experts": mean active experts per token (over layers), "layer_active_experts": [...],
        "dead_tokens": share of (token, layer) pairs with no active expert}``.
    """
    if isinstance(routings, (str, bytes)) or not isinstance(routings, Sequence):
        raise TypeError(f"routings must be a sequence of Routing (one per MoE layer), got {describe(routings)}")
    if len(routings) == 0:
        raise ValueError("routings must hold the routing of at least one MoE layer, got none")
    for i, r in enumerate(routings):
        check_type(f"routings[{i}]", r, Routing, what="a Routing")
        check_tensor(f"routings[{i}].mask", r.mask, dtype=torch.bool, nonempty=False)
        _check_gates(r.mask, name=f"routings[{i}].mask")
    layer_s, loads, active, dead = [], [], [], []
    for r in routings:
        mask = r.mask
        layer_s.append(1.0 - mask.sum().item() / mask.numel())
        loads.append(expert_load(mask).tolist())
        per_token = mask.sum(-1)
        active.append(per_token.double().mean().item())
        dead.append((per_token == 0).double().mean().item())
    return {
        "sparsity": sum(layer_s) / len(layer_s),
        "layer_sparsity": layer_s,
        "expert_load": loads,
        "active_experts": sum(active) / len(active),
        "layer_active_experts": active,
        "dead_tokens": sum(dead) / len(dead),
    }


class LambdaController:
    """ReMoE's λ schedule: multiply λ by α while the sparsity is below target, divide by α otherwise.

    Args:
        num_experts: E.
        k: target active experts per token; the default target sparsity is ``1 − k/E``.
        lam0: λ₀, the initial coefficient (1e-8).
        alpha: α > 1, the per-step factor (1.2).
        target: target sparsity in (0, 1); default ``1 − k/E``.

    Use :attr:`lam` in the loss, then call :meth:`update` with the step's sparsity (averaged over layers).
    """

    def __init__(self, *, num_experts: int, k: int, lam0: float = 1e-8, alpha: float = 1.2, target: float | None = None):
        num_experts, k = check_experts(num_experts, k)
        lam0 = check_float("lam0 (λ₀)", lam0, low=0, low_open=True)
        alpha = check_float("alpha (α)", alpha, low=1, low_open=True)
        if target is None and k == num_experts:
            raise ValueError(f"target sparsity must be in (0, 1), got 0.0 (1 - k/E with k = {k}, E = {num_experts}): "
                             "ReMoE needs fewer active experts than experts, k < num_experts")
        target = 1.0 - k / num_experts if target is None else target
        target = check_float("target sparsity", target, low=0, high=1, low_open=True, high_open=True)
        self.num_experts, self.k = num_experts, k
        self.lam0, self.alpha, self.target = float(lam0), float(alpha), float(target)
        self.lam = float(lam0)

    def update(self, sparsity: float) -> float:
        """One step: ``λ ← λ·α`` if ``sparsity < target`` else ``λ/α``; returns the new λ."""
        sparsity = check_probability("sparsity", sparsity)
        self.lam = self.lam * self.alpha if sparsity < self.target else self.lam / self.alpha
        return self.lam

    def state_dict(self) -> dict:
        return {"lam": self.lam, "lam0": self.lam0, "alpha": self.alpha, "target": self.target}

    def __repr__(self) -> str:
        return f"LambdaController(lam={self.lam:.3g}, alpha={self.alpha}, target={self.target:.4f})"
