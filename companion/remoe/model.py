"""A tiny Llama-style language model whose FFN blocks are dense, TopK-MoE or ReMoE (the paper's experimental setup,
scaled down to a CPU).

Each block is pre-norm: ``h ← h + Attn(RMSNorm(h))``, then ``h ← h + FFN(RMSNorm(h))``, with rotary position
embeddings (RoPE) and causal attention through ``torch.nn.functional.scaled_dot_product_attention``. The FFN is

- ``"dense"``: one SwiGLU with inner size ``d_ff``;
- ``"topk"``: E SwiGLU experts of inner size ``d_ff`` each, TopK-softmax routing (k per token) + Switch loss;
- ``"remoe"``: the same experts with ReLU routing, sparsity set by the adaptive L1 penalty.

Every expert is a full FFN (``d_ff`` equal to the dense one), so at k = 1 the three models do the same FFN work
per token: matched active compute. The tiny default (d_model 128, 4 layers, 4 heads, E = 8, k = 1, vocab 4096)
trains on two CPU cores in minutes; the paper's smallest model has 182M active parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from companion.lab.checks import (
    check_choice,
    check_float,
    check_int,
    check_same_device,
    check_tensor,
    check_type,
    describe,
)

from .moe import MoE, SwiGLU
from .routers import Routing, check_experts

FFN_KINDS = ("dense", "topk", "remoe")


@dataclass(frozen=True)
class LMConfig:
    """Shape and routing of :class:`TinyLM`.

    Attributes:
        ffn: ``"dense"``, ``"topk"`` or ``"remoe"``.
        vocab_size: tokenizer vocabulary (4096 for the chapter's BPE; the paper used GPT-2's 50257).
        d_model, n_layers, n_heads: transformer shape (head size ``d_model / n_heads``, must be even for RoPE).
        d_ff: inner size of the dense FFN and of every expert.
        num_experts, k: E and the (target) active experts per token (paper: 8 and 1).
        rope_theta, norm_eps: RoPE base and RMSNorm epsilon.
        init_std, router_init_std: σ of N(0, σ²) for all weights (0.02) and for router weights (0.01).
        aux_coef: TopK's Switch load-balancing coefficient (0.01).
        l1: ReMoE's penalty, ``"balanced"`` (the official load-balanced L1) or ``"plain"`` (f_e = 1).
        lam0, alpha: the λ controller's λ₀ = 1e-8 and α = 1.2.
        tie_embeddings: share the input embedding with the output layer.
    """

    ffn: Literal["dense", "topk", "remoe"] = "remoe"
    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    num_experts: int = 8
    k: int = 1
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    router_init_std: float = 0.01
    aux_coef: float = 0.01
    l1: Literal["balanced", "plain"] = "balanced"
    lam0: float = 1e-8
    alpha: float = 1.2
    tie_embeddings: bool = True

    def __post_init__(self):
        check_choice("ffn", self.ffn, FFN_KINDS)
        check_choice("l1", self.l1, ("balanced", "plain"))
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), low=1))
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model ({self.d_model}) must split into n_heads ({self.n_heads}) heads of even size "
                             "(RoPE rotates pairs of channels)")
        num_experts, k = check_experts(self.num_experts, self.k)
        object.__setattr__(self, "num_experts", num_experts)
        object.__setattr__(self, "k", k)
        if self.ffn == "remoe" and k == num_experts:
            raise ValueError(f"ffn='remoe' needs k < num_experts (its target sparsity 1 - k/E must be > 0), "
                             f"got k = {k}, num_experts = {num_experts}")
        for name in ("rope_theta", "norm_eps", "init_std", "router_init_std"):
            check_float(name, getattr(self, name), low=0, low_open=True)
        check_float("aux_coef", self.aux_coef, low=0)
        check_float("lam0", self.lam0, low=0, low_open=True)
        check_float("alpha", self.alpha, low=1, low_open=True)
        check_type("tie_embeddings", self.tie_embeddings, bool)

    def replace(self, **changes) -> "LMConfig":
        """A copy with some fields changed, e.g. ``config.replace(ffn="topk")``."""
        return dataclasses.replace(self, **changes)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + ε) · g`` over the last dimension (Zhang & Sennrich, 2019)."""

    def __init__(self, d_model: int, *, eps: float = 1e-5):
        super().__init__()
        d_model = check_int("d_model", d_model, low=1)
        check_float("eps", eps, low=0, low_open=True)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, dtype="floating", nonempty=False)
        if x.dim() < 1 or x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"x must have shape [..., d_model] = [..., {self.weight.shape[0]}], got {describe(x)}")
        check_same_device(x=x, weight=self.weight)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x: torch.Tensor, *, theta: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al., 2021) in the "rotate half" layout of Llama.

    Channel pair ``(i, i + D/2)`` at position p is rotated by the angle ``p · θ^(−2i/D)``.

    Args:
        x: ``[B, H, S, D]`` queries or keys (D even).
    Returns:
        ``[B, H, S, D]``.
    """
    check_tensor("x", x, ndim=4, dtype="floating", nonempty=False)
    if x.shape[-1] < 2 or x.shape[-1] % 2:
        raise ValueError(f"x must have an even head size D >= 2 (RoPE rotates pairs of channels), got {describe(x)}")
    check_float("theta", theta, low=0, low_open=True)
    return _rope(x, theta=theta)


def _rope(x: torch.Tensor, *, theta: float) -> torch.Tensor:
    S, D = x.shape[-2], x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)  # [D/2]
    angles = torch.outer(torch.arange(S, device=x.device, dtype=torch.float32), inv_freq)  # [S, D/2]
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], -1).to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(nn.Module):
    """Multi-head causal self-attention with RoPE, ``[B, S, d_model] -> [B, S, d_model]``."""

    def __init__(self, d_model: int, n_heads: int, *, theta: float):
        super().__init__()
        self.n_heads, self.theta = n_heads, theta
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, d = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)  # [B, H, S, D]
        q, k = _rope(q, theta=self.theta), _rope(k, theta=self.theta)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, S, d))


class Block(nn.Module):
    """Pre-norm transformer block; the FFN is dense, TopK-MoE or ReMoE (see :class:`LMConfig`)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        c = config
        self.attn_norm, self.ffn_norm = RMSNorm(c.d_model, eps=c.norm_eps), RMSNorm(c.d_model, eps=c.norm_eps)
        self.attn = Attention(c.d_model, c.n_heads, theta=c.rope_theta)
        if c.ffn == "dense":
            self.ffn = SwiGLU(c.d_model, c.d_ff, init_std=c.init_std)
        else:
            self.ffn = MoE(c.d_model, c.d_ff, num_experts=c.num_experts, k=c.k,
                           router="relu" if c.ffn == "remoe" else "topk", aux_coef=c.aux_coef,
                           router_init_std=c.router_init_std, init_std=c.init_std)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, Routing | None]:
        h = h + self.attn(self.attn_norm(h))
        x = self.ffn_norm(h)  # the experts and the router read the same normalised input
        if isinstance(self.ffn, MoE):
            y, routing = self.ffn(x)
            return h + y, routing
        return h + self.ffn(x), None


class TinyLM(nn.Module):
    """A Llama-style decoder with dense / TopK-MoE / ReMoE FFN blocks.

    ``forward(ids)`` takes ``LongTensor[B, S]`` and returns ``(logits [B, S, vocab], routings)``, where
    ``routings`` holds one :class:`~companion.remoe.routers.Routing` per MoE layer (over the ``B·S`` tokens, in
    row-major order) and is empty for the dense model.
    """

    def __init__(self, config: LMConfig):
        super().__init__()
        check_type("config", config, LMConfig, what="an LMConfig")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=config.init_std)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[Routing]]:
        check_tensor("ids", ids, dtype=(torch.int64, torch.int32), nonempty=False)
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape [B, S], got {tuple(ids.shape)}")
        if ids.numel() == 0:
            raise ValueError(f"ids must hold at least one token, got {describe(ids)}")
        check_same_device(ids=ids, model=self.embed.weight)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got range "
                             f"[{ids.min().item()}, {ids.max().item()}]")
        h = self.embed(ids)
        routings = []
        for block in self.blocks:
            h, routing = block(h)
            if routing is not None:
                routings.append(routing)
        return self.lm_head(self.norm(h)), routings

    def num_parameters(self, *, active: bool = False) -> int:
        """Parameter count; with ``active=True`` only ``k`` of the E experts per MoE layer are counted."""
        check_type("active", active, bool)
        n = sum(p.numel() for p in self.parameters())
        if active and self.config.ffn != "dense":
            c = self.config
            per_expert = 3 * c.d_model * c.d_ff
            n -= c.n_layers * (c.num_experts - c.k) * per_expert
        return n
