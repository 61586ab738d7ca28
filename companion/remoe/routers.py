"""Routers: ReMoE's ReLU router and the TopK-softmax baseline (Wang et al., 2025, arXiv 2412.14711, §3).

Both read the same input as the experts, ``x = RMSNorm(h)`` of shape ``[T, d_model]`` (T tokens), and score
every expert with one bias-free linear layer, ``logits = x W_rᵀ`` of shape ``[T, E]``. They differ only in how
logits become gates ``R`` (``[T, E]``, zero where an expert is not used):

- ReLU (ReMoE): ``R = relu(logits)`` — no softmax, no renormalisation; a token uses every expert whose logit is
  positive, so the number of active experts varies from token to token and can be 0. Continuous in the logits.
- TopK (the paper's baseline): ``p = softmax(logits)`` over all E experts, keep the k largest, and the gate is
  that probability (no renormalisation over the k). Discontinuous where the ranking of experts flips. Its
  Switch load-balancing loss (Fedus et al., 2022), ``c · E · Σ_e f_e P_e`` with ``f_e`` the share of the T·k
  dispatches that go to expert e and ``P_e`` the mean router probability of e, uses ``c = 0.01``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from companion.lab.checks import check_float, check_int, check_tensor, check_type, describe


@dataclass
class Routing:
    """What a router decided for T tokens and E experts.

    Attributes:
        gates: ``[T, E]`` gate values R, zero for experts a token does not use.
        mask: ``[T, E]`` bool, True where the token is dispatched to the expert.
        logits: ``[T, E]`` router logits ``x W_rᵀ``.
        aux_loss: the TopK router's load-balancing loss (already times its coefficient), a 0-d tensor;
            ``None`` for the ReLU router, whose regulariser (:func:`companion.remoe.load_balanced_l1`) needs λ
            and lives in the training loop.
    """

    gates: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor
    aux_loss: torch.Tensor | None = None

    @property
    def num_experts(self) -> int:
        return self.gates.shape[-1]


def check_experts(num_experts: int, k: int) -> tuple[int, int]:
    """``(num_experts, k)`` as ints; ``TypeError`` unless both are ints, ``ValueError`` unless
    ``1 <= k <= num_experts``."""
    num_experts = check_int("num_experts (E)", num_experts, low=1)
    k = check_int("k", k, low=1)
    if k > num_experts:
        raise ValueError(f"k must be <= the number of experts E = {num_experts}, got k = {k} "
                         "(lower k or raise num_experts)")
    return num_experts, k


def _check_input(name: str, x, weight: torch.Tensor, *, what: str) -> torch.Tensor:
    """``x`` if it is a floating tensor with ``weight``'s dtype and device (``what`` names the weights'
    owner in the message): mixed dtypes or devices fail here, not inside a matmul."""
    check_tensor(name, x, dtype="floating", nonempty=False)
    if x.dtype != weight.dtype:
        raise TypeError(f"{name} must have the dtype of the {what}'s weights, {weight.dtype} (convert the input "
                        f"or the layer with .to()), got {describe(x)}")
    if x.device != weight.device:
        raise ValueError(f"{name} must be on the device of the {what}'s weights, {weight.device}, "
                         f"got {describe(x)}")
    return x


class _Router(nn.Module):
    def __init__(self, d_model: int, num_experts: int, init_std: float):
        super().__init__()
        d_model = check_int("d_model", d_model, low=1)
        num_experts = check_int("num_experts (E)", num_experts, low=1)
        check_float("init_std", init_std, low=0, low_open=True)
        self.d_model, self.num_experts = d_model, num_experts
        self.weight = nn.Parameter(torch.empty(num_experts, d_model))  # W_r: [E, d_model], no bias
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x W_rᵀ``: ``[T, d_model] -> [T, E]``."""
        check_type("x", x, torch.Tensor, what=f"a torch.Tensor of shape [T, {self.d_model}]")
        if x.dim() != 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"router expected input x of shape [T, {self.d_model}] (hidden size {self.d_model}), "
                             f"got {tuple(x.shape)}")
        _check_input("x", x, self.weight, what="router")
        if x.shape[0] == 0:
            raise ValueError(f"x must hold at least one token, got {describe(x)}")
        return x @ self.weight.t()

    def forward(self, x: torch.Tensor) -> Routing:
        """Route ``x`` (``[T, d_model]``, the RMSNorm output) to the experts."""
        return self.route(self.logits(x))

    def route(self, logits: torch.Tensor) -> Routing:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_logits(self, logits) -> None:
        check_tensor("logits", logits, dtype="floating")
        if logits.dim() != 2 or logits.shape[-1] != self.num_experts:
            raise ValueError(f"logits must have shape [T, E] = [T, {self.num_experts}], got {describe(logits)}")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_experts={self.num_experts}"


class ReLURouter(_Router):
    """ReMoE's router: ``R = relu(x W_rᵀ)``, W_r initialised N(0, σ²) with σ = ``init_std`` = 0.01, no bias.

    Args:
        d_model: hidden size of the input.
        num_experts: E.
        init_std: standard deviation of the initial router weights (0.01 in the paper's code).
    """

    def __init__(self, d_model: int, num_experts: int, *, init_std: float = 0.01):
        super().__init__(d_model, num_experts, init_std)

    def route(self, logits: torch.Tensor) -> Routing:
        """Gates from logits ``[T, E]``: ``R_te = max(0, logits_te)``; active where ``R_te > 0``."""
        self._check_logits(logits)
        gates = torch.relu(logits)
        return Routing(gates=gates, mask=gates > 0, logits=logits)


class TopKRouter(_Router):
    """The TopK-softmax baseline: ``p = softmax(x W_rᵀ)``, keep the top k of E; the gate is ``p`` itself.

    The Switch load-balancing loss is computed on every call, as in Megatron-LM's
    ``switch_load_balancing_loss_func``:

    ``L_aux = c · E · Σ_e f_e · P_e``, ``f_e = n_e / (k·T)`` (share of the dispatches going to e),
    ``P_e = (1/T) Σ_t p_te``; it equals ``c`` when routing is perfectly balanced.

    Args:
        d_model: hidden size of the input.
        num_experts: E.
        k: experts per token (the paper: k = 1).
        aux_coef: c, the load-balancing coefficient (0.01 in the paper).
        init_std: standard deviation of the initial router weights (the same 0.01 as the ReLU router, so the
            two start from the same logits).
    """

    def __init__(self, d_model: int, num_experts: int, *, k: int = 1, aux_coef: float = 0.01, init_std: float = 0.01):
        super().__init__(d_model, num_experts, init_std)
        _, k = check_experts(num_experts, k)
        check_float("aux_coef", aux_coef, low=0)
        self.k, self.aux_coef = k, float(aux_coef)

    def route(self, logits: torch.Tensor) -> Routing:
        """Gates from logits ``[T, E]``: softmax over all E, then the k largest probabilities."""
        self._check_logits(logits)
        probs = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
        top_p, top_i = probs.topk(self.k, dim=-1)  # [T, k]
        gates = torch.zeros_like(probs).scatter(-1, top_i, top_p)
        mask = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top_i, True)
        return Routing(gates=gates, mask=mask, logits=logits, aux_loss=self.aux_coef * _switch_aux_loss(probs, mask, k=self.k))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}, aux_coef={self.aux_coef}"


def switch_aux_loss(probs: torch.Tensor, mask: torch.Tensor, *, k: int) -> torch.Tensor:
    """Switch load-balancing loss without its coefficient: ``E · Σ_e f_e · P_e``.

    Args:
        probs: ``[T, E]`` router probabilities (softmax over all experts).
        mask: ``[T, E]`` bool dispatch map (exactly k True per row for TopK).
        k: experts per token.
    Returns:
        A 0-d tensor, 1 under perfectly uniform probabilities and dispatch; gradient flows through ``P_e`` only.
    """
    check_tensor("probs", probs, ndim=2, dtype="floating")
    check_tensor("mask", mask, dtype=torch.bool)
    if mask.shape != probs.shape:
        raise ValueError(f"mask must have the shape of probs, {list(probs.shape)}, got {describe(mask)}")
    if mask.device != probs.device:
        raise ValueError(f"mask must be on the device of probs, {probs.device}, got {describe(mask)}")
    check_experts(probs.shape[1], k)
    return _switch_aux_loss(probs, mask, k=k)


def _switch_aux_loss(probs: torch.Tensor, mask: torch.Tensor, *, k: int) -> torch.Tensor:
    T, E = probs.shape
    f = mask.sum(0).to(probs.dtype) / (k * T)  # share of the dispatches, no gradient
    P = probs.mean(0)
    return E * (f * P).sum()
