"""Half-quadratic quantization (HQQ) of a weight tensor, and round-to-nearest as the baseline.

Badri & Shaji (2023), "Half-Quadratic Quantization of Large Machine Learning Models". Affine quantization per
group of ``g`` weights with ``b`` bits, written as the official code writes it, with the *inverse* scale
``sc = 1/s``:

    W_q = clamp(round(W·sc + z), 0, 2^b − 1),        Ŵ = (W_q − z) / sc.

``sc`` is fixed from the group's range (``sc = (2^b − 1)/(max − min)``, 1 where the range is ≤ 1e-4, clamped
to ≤ 2e4), ``z`` starts at ``−min·sc`` and only ``z`` is optimized, for a heavy-tailed error
``φ(e) = ‖e‖_p^p`` (p < 1), by half-quadratic splitting with an auxiliary ``W_e``:

    W_e ← shrink_p(W − Ŵ, β)                                  (proximal step of φ)
    z   ← mean_group( W_q − (W − W_e)·sc )                     (closed-form least squares in z)
    β   ← κ·β

stopping early when the mean absolute error ``mean|W − Ŵ|`` stops improving. Defaults: p = 0.7, β = 10,
κ = 1.01, 20 iterations, group 64, axis 0.

Two solvers:

- ``faithful=True`` reproduces PyPI ``hqq`` 0.2.8 (``optimize_weights_proximal_legacy``) bit for bit: κ is
  ignored (the ``beta *= kappa`` line is missing there) and on early stop it returns the zero-point computed
  *after* the first step that did not improve — two updates past the best one.
- ``faithful=False`` (default) applies κ and returns the best zero-point seen.

Grouping (as hqq): the float tensor is reshaped to ``[g, numel/g]`` for ``axis=0`` (each *column* is a group:
for a ``[out, in]`` weight, ``g`` weights of one input column) or ``[numel/g, g]`` for ``axis=1`` (each row is
a group: ``g`` consecutive weights of one output row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import packing

SUPPORTED_BITS = (8, 4, 3, 2, 1)


def shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    r"""Generalized soft-thresholding, the proximal operator of :math:`\|\cdot\|_p^p` used by HQQ:

    .. math:: \operatorname{shrink}_p(x, \beta) = \operatorname{sign}(x)\,
              \operatorname{relu}\big(|x| - |x|^{p-1}/\beta\big).

    For ``p < 1`` it zeroes every entry with :math:`|x| \le \beta^{-1/(2-p)}` and shrinks the others
    (computed with the same operation order as hqq's ``shrink_lp_op``).
    """
    out = torch.abs(x)
    if p == 1:
        out.sub_(1.0 / beta).clamp_min_(0.0)
    else:
        out.sub_((1.0 / beta) * out.pow(p - 1)).clamp_min_(0.0)
    out.mul_(torch.sign(x))
    return out


def shrink_threshold(beta: float, p: float) -> float:
    r"""The magnitude below which :func:`shrink_lp` returns zero: :math:`\beta^{-1/(2-p)}` (p < 1)."""
    return beta ** (-1.0 / (2.0 - p))


@dataclass
class Trace:
    """What the solver did. ``errors[i]`` is mean|W − Ŵ| with the zero-point *entering* iteration i."""

    errors: list[float] = field(default_factory=list)
    active: list[float] = field(default_factory=list)  # share of W_e != 0 after iteration i's shrink
    betas: list[float] = field(default_factory=list)
    best_iter: int = 0
    returned_iter: int = 0  # which zero-point (0 = initial) was returned


@dataclass
class QuantMeta:
    """What :func:`dequantize` needs. ``scale`` is s (not its inverse), shape like ``zero``."""

    nbits: int
    group_size: int
    axis: int
    shape: tuple[int, ...]
    scale: torch.Tensor
    zero: torch.Tensor
    packed: bool = False
    rows: int = 0  # rows of the grouped W_q before packing
    dtype: torch.dtype = torch.float32
    trace: Trace | None = None
    meta_nbits: int | None = None  # scale/zero stored quantized with this many bits (None: float)
    meta_q: dict | None = None

    def bits_per_weight(self, *, meta_float_bits: int = 16) -> float:
        """Storage per weight: b, plus the scale and zero of each group — as ``meta_float_bits`` floats
        (16: hqq keeps them in fp16), or, with ``meta_nbits``, as codes plus the float scale and zero of
        every group of codes. Packing padding is not counted."""
        if self.meta_q is None:
            return self.nbits + 2 * meta_float_bits / self.group_size
        per_group = sum(m.nbits + 2 * meta_float_bits / m.group_size for _, m in self.meta_q.values())
        return self.nbits + per_group / self.group_size


META_GROUP = 128  # group size for quantizing the scales and zeros (the blog's 8-bit meta-data recipe)


def _validate(W: torch.Tensor, nbits: int, group_size: int, axis: int) -> None:
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W must be a torch.Tensor, got {type(W).__name__}")
    if not W.is_floating_point():
        raise TypeError(f"W must be a floating-point tensor, got {W.dtype}")
    if W.numel() == 0:
        raise ValueError("W is empty")
    if nbits not in SUPPORTED_BITS:
        raise ValueError(f"nbits must be one of {SUPPORTED_BITS}, got {nbits!r}")
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis!r}")
    if not isinstance(group_size, int) or group_size < 1 or W.numel() % group_size:
        raise ValueError(f"group_size={group_size!r} must be a positive int dividing W.numel()={W.numel()} (shape {tuple(W.shape)})")
    if not torch.isfinite(W).all():
        raise ValueError("W contains NaN or Inf; quantization would silently produce NaN weights")


def _grouped(W: torch.Tensor, group_size: int, axis: int) -> torch.Tensor:
    W = W.float()
    return W.reshape([-1, group_size]) if axis == 1 else W.reshape([group_size, -1])


def _init_scale_zero(W: torch.Tensor, nbits: int, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """hqq's min/max initialisation: inverse scale ``sc`` and zero ``z``, shaped to broadcast over groups."""
    _min = W.min(axis=axis, keepdim=True)[0]
    _max = W.max(axis=axis, keepdim=True)[0]
    max_v = round(2**nbits - 1)
    denom = _max - _min
    scale = max_v / denom
    scale = torch.where(denom.abs() <= 1e-4, torch.full_like(scale, 1.0), scale)
    scale = scale.clamp(max=2e4)
    return scale, -_min * scale


@torch.no_grad()
def optimize_zero(
    W: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    *,
    nbits: int,
    axis: int,
    p: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
    iters: int = 20,
    early_stop: bool = True,
    faithful: bool = False,
) -> tuple[torch.Tensor, Trace]:
    """The half-quadratic zero-point solver on grouped weights (see the module docstring).

    Args:
        W: grouped float32 weights, ``[g, n]`` (axis 0) or ``[n, g]`` (axis 1).
        scale: inverse scales ``sc``, broadcastable to ``W`` (``[1, n]`` or ``[n, 1]``).
        zero: initial zero-points, same shape as ``scale``.
        faithful: reproduce hqq 0.2.8 exactly (no κ, returns the last zero-point).
    Returns:
        ``(zero, trace)``.
    """
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if beta <= 0 or kappa < 1 or iters < 1:
        raise ValueError(f"need beta > 0, kappa >= 1 and iters >= 1, got beta={beta}, kappa={kappa}, iters={iters}")
    max_v = round(2**nbits - 1)
    trace = Trace()
    best_error = torch.tensor(torch.inf)
    best_zero, returned = zero, 0
    for i in range(iters):
        W_q = torch.round(W * scale + zero).clamp_(0, max_v)
        W_r = (W_q - zero) / scale
        W_e = shrink_lp(W - W_r, beta, p)
        new_zero = torch.mean(W_q - (W - W_e) * scale, axis=axis, keepdim=True)
        error = torch.abs(W - W_r).mean().float()
        trace.errors.append(error.item())
        trace.active.append(torch.count_nonzero(W_e).item() / W_e.numel())
        trace.betas.append(beta)
        if faithful:  # hqq 0.2.8: zero already updated; keep it whether or not this step improved
            zero, returned = new_zero, i + 1
            if error < best_error:
                best_error, trace.best_iter = error, i
            elif early_stop:
                break
            continue
        if error < best_error:
            best_error, best_zero, trace.best_iter, returned = error, zero, i, i
        elif early_stop:
            break
        zero = new_zero
        beta *= kappa
    else:
        if not faithful:  # the last update was never evaluated: keep it only if it is better
            W_r = (torch.round(W * scale + zero).clamp(0, max_v) - zero) / scale
            if torch.abs(W - W_r).mean().float() < best_error:
                best_zero, returned = zero, iters
    trace.returned_iter = returned
    return (zero if faithful else best_zero), trace


@torch.no_grad()
def quantize(
    W: torch.Tensor,
    *,
    nbits: int = 4,
    group_size: int = 64,
    axis: int = 0,
    optimize: bool = True,
    round_zero: bool = False,
    p: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
    iters: int = 20,
    early_stop: bool = True,
    faithful: bool = False,
    bitpack: bool = False,
    meta_nbits: int | None = None,
) -> tuple[torch.Tensor, QuantMeta]:
    """Quantize ``W`` to ``nbits`` per group of ``group_size`` weights along ``axis``.

    Args:
        W: float tensor of any shape; ``W.numel()`` must be divisible by ``group_size``.
        nbits: 8, 4, 3, 2 or 1.
        group_size, axis: grouping as in hqq (module docstring); hqq's ``Quantizer.quantize`` default axis is 0.
        optimize: run the HQQ zero-point solver; ``False`` gives round-to-nearest (RTN) with the min/max zero.
        round_zero: round the initial zero-point to an integer (AWQ-style; hqq's option).
        p, beta, kappa, iters, early_stop: solver settings (defaults of the paper and hqq).
        faithful: reproduce hqq 0.2.8's solver exactly, quirks included.
        bitpack: return ``W_q`` packed (see :mod:`companion.hqq.packing`) instead of one uint8 code per weight.
        meta_nbits: store scale and zero quantized to this many bits (8 in the blog's 2-bit recipes), each with
            round-to-nearest in groups of 128; hqq 0.2.x ignores this option, we implement it.
    Returns:
        ``(W_q, meta)``: ``W_q`` is the grouped code matrix (``uint8``, shape ``[g, numel/g]`` for axis 0,
        ``[numel/g, g]`` for axis 1) or its packed form; ``meta`` a :class:`QuantMeta` with ``meta.trace``
        set when ``optimize``.
    """
    _validate(W, nbits, group_size, axis)
    if meta_nbits is not None and meta_nbits not in SUPPORTED_BITS:
        raise ValueError(f"meta_nbits must be None or one of {SUPPORTED_BITS}, got {meta_nbits!r}")
    Wg = _grouped(W, group_size, axis)
    scale, zero = _init_scale_zero(Wg, nbits, axis)
    if round_zero:
        zero = torch.round(zero)
    trace = None
    if optimize:
        zero, trace = optimize_zero(Wg, scale, zero, nbits=nbits, axis=axis, p=p, beta=beta, kappa=kappa,
                                    iters=iters, early_stop=early_stop, faithful=faithful)
    W_q = torch.round(Wg * scale + zero).clamp(0, round(2**nbits - 1)).to(torch.uint8)
    meta = QuantMeta(nbits=nbits, group_size=group_size, axis=axis, shape=tuple(W.shape), scale=1.0 / scale,
                     zero=zero, rows=W_q.shape[0], dtype=W.dtype, trace=trace)
    if meta_nbits is not None:
        meta.meta_nbits, meta.meta_q = meta_nbits, {}
        for name in ("scale", "zero"):
            t = getattr(meta, name).reshape(-1)
            g = math.gcd(META_GROUP, t.numel())
            q, m = quantize(t, nbits=meta_nbits, group_size=g, axis=1, optimize=False)
            meta.meta_q[name] = (q, m)
            setattr(meta, name, dequantize(q, m).reshape(getattr(meta, name).shape))
    if bitpack:
        W_q, meta.packed = packing.pack(W_q, nbits), True
    return W_q, meta


def dequantize(W_q: torch.Tensor, meta: QuantMeta, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Ŵ = (W_q − z)·s, reshaped to the original shape, in ``dtype`` (default: the input's dtype)."""
    if not isinstance(meta, QuantMeta):
        raise TypeError(f"meta must be the QuantMeta returned by quantize, got {type(meta).__name__}")
    codes = packing.unpack(W_q, meta.nbits, meta.rows) if meta.packed else W_q
    W_r = (codes.float() - meta.zero) * meta.scale
    return W_r.reshape(meta.shape).to(dtype or meta.dtype)


def quantization_error(W: torch.Tensor, **kwargs) -> dict[str, float]:
    """Quantize and dequantize ``W`` (``kwargs`` as :func:`quantize`) and report the mean absolute, mean squared
    and max absolute error, and the solver's iterations (0 for round-to-nearest)."""
    W_q, meta = quantize(W, **kwargs)
    err = (W.float() - dequantize(W_q, meta, dtype=torch.float32)).abs()
    return {"mae": err.mean().item(), "mse": err.pow(2).mean().item(), "max": err.max().item(),
            "iterations": len(meta.trace.errors) if meta.trace else 0}
