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

from ..lab.checks import check_choice, check_float, check_int, check_same_device, check_same_dtype, check_tensor, \
    check_type
from . import packing

SUPPORTED_BITS = (8, 4, 3, 2, 1)


def _check_nbits(name: str, value) -> int:
    """``value`` as one of :data:`SUPPORTED_BITS` (an int: ``True`` and ``4.0`` are rejected)."""
    return check_choice(name, check_int(name, value), SUPPORTED_BITS)


def _check_solver(p, beta, kappa, iters, early_stop, faithful) -> tuple[float, float, float, int]:
    """The half-quadratic solver's settings, checked: p in (0, 1], beta > 0, kappa >= 1, iters >= 1."""
    p = check_float("p", p, low=0.0, high=1.0, low_open=True)
    beta = check_float("beta", beta, low=0.0, low_open=True)
    kappa = check_float("kappa", kappa, low=1.0)
    iters = check_int("iters", iters, low=1)
    check_type("early_stop", early_stop, bool)
    check_type("faithful", faithful, bool)
    return p, beta, kappa, iters


def shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    r"""Generalized soft-thresholding, the proximal operator of :math:`\|\cdot\|_p^p` used by HQQ:

    .. math:: \operatorname{shrink}_p(x, \beta) = \operatorname{sign}(x)\,
              \operatorname{relu}\big(|x| - |x|^{p-1}/\beta\big).

    For ``p < 1`` it zeroes every entry with :math:`|x| \le \beta^{-1/(2-p)}` and shrinks the others
    (computed with the same operation order as hqq's ``shrink_lp_op``).

    Raises:
        TypeError: ``x`` is not a floating-point tensor; ``beta`` or ``p`` is not a real number.
        ValueError: ``beta <= 0`` or ``p`` outside ``(0, 1]`` (or NaN/inf).
    """
    check_tensor("x", x, dtype="floating", nonempty=False)
    beta = check_float("beta", beta, low=0.0, low_open=True)
    p = check_float("p", p, low=0.0, high=1.0, low_open=True)
    return _shrink_lp(x, beta, p)


def _shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """:func:`shrink_lp` without the argument checks (the solver's inner loop)."""
    out = torch.abs(x)
    if p == 1:
        out.sub_(1.0 / beta).clamp_min_(0.0)
    else:
        out.sub_((1.0 / beta) * out.pow(p - 1)).clamp_min_(0.0)
    out.mul_(torch.sign(x))
    return out


def shrink_threshold(beta: float, p: float) -> float:
    r"""The magnitude below which :func:`shrink_lp` returns zero: :math:`\beta^{-1/(2-p)}` (p < 1; 1/β at p = 1).

    Raises:
        TypeError: ``beta`` or ``p`` is not a real number.
        ValueError: ``beta <= 0``, ``p`` outside ``(0, 1]``, or ``beta`` so small that the threshold overflows.
    """
    beta = check_float("beta", beta, low=0.0, low_open=True)
    p = check_float("p", p, low=0.0, high=1.0, low_open=True)
    try:
        threshold = beta ** (-1.0 / (2.0 - p))
    except OverflowError:
        threshold = math.inf
    if math.isinf(threshold):
        raise ValueError(f"beta={beta} is too small: the threshold beta^(-1/(2-p)) overflows")
    return threshold


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
    """What :func:`dequantize` needs. ``scale`` is s (not its inverse), shape like ``zero``.

    With ``quant_scale``/``quant_zero``, ``scale``/``zero`` hold the *dequantized* 8-bit values and ``meta_q``
    maps ``"scale"``/``"zero"`` to ``(codes, QuantMeta of the codes)``: what is actually stored.
    """

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
    meta_q: dict = field(default_factory=dict)

    def storage_bits(self, meta_dtype: torch.dtype | None = None) -> int:
        """Bits of what :class:`~companion.hqq.HQQLinear` stores for this weight: the packed code words
        (padding included: 3-bit rows are padded to a multiple of 10 codes per int32 word), plus, for the scale
        and the zero each, either one ``meta_dtype`` float per group or, when 8-bit quantized, one byte per group
        plus the floats of the codes' own scale and zero. ``meta_dtype`` defaults to the weight's dtype (the
        layer's compute dtype, as hqq stores its meta-data)."""
        float_bits = torch.finfo(meta_dtype or self.dtype).bits
        cols = math.prod(self.shape) // self.rows
        bits = packing.packed_bits(self.rows, cols, self.nbits)
        for name in ("scale", "zero"):
            if name in self.meta_q:
                codes, m = self.meta_q[name]
                bits += codes.numel() * 8 + (m.scale.numel() + m.zero.numel()) * float_bits
            else:
                bits += getattr(self, name).numel() * float_bits
        return bits

    def bits_per_weight(self, meta_dtype: torch.dtype | None = None) -> float:
        """:meth:`storage_bits` per weight (e.g. 4-bit g64 axis 0 with fp16 meta-data: 4 + 32/64 = 4.5;
        3-bit g64 axis 0: 3.5 for the padded codes + 0.5 = 4.0)."""
        return self.storage_bits(meta_dtype) / math.prod(self.shape)


META_GROUP = 128  # hqq's BaseQuantizeConfig: scales quantized to 8 bits in groups of 128 along axis 0


def _quantize_meta(t: torch.Tensor, *, per_tensor: bool) -> tuple[torch.Tensor, QuantMeta]:
    """8-bit round-to-nearest of a scale or zero tensor, as hqq 0.2.8's ``BaseQuantizeConfig(quant_scale=True,
    quant_zero=True)`` specifies and ``HQQLinear.quantize`` applies it through ``Quantizer.quantize``:

    - the scale (``per_tensor=False``): ``{"nbits": 8, "channel_wise": True, "group_size": 128, "optimize":
      False}`` with ``Quantizer.quantize``'s default ``axis=0``, i.e. reshaped to ``[128, numel/128]`` and one
      min/max per column (strided groups: entries ``j, j + numel/128, ...``);
    - the zero (``per_tensor=True``): ``{"nbits": 8, "channel_wise": False, "group_size": None, ...}``, one
      min/max over the whole tensor.

    Returns uint8 codes (hqq's 8-bit packing is the identity) and their :class:`QuantMeta` (scale s = 1/sc).
    """
    W = t.float()
    if per_tensor:
        _min, _max, codes_shape = W.min(), W.max(), W.shape
    else:
        W = W.reshape([META_GROUP, -1])
        _min, _max, codes_shape = W.min(axis=0, keepdim=True)[0], W.max(axis=0, keepdim=True)[0], W.shape
    denom = _max - _min
    sc = torch.where(denom.abs() <= 1e-4, torch.ones_like(denom), 255 / denom).clamp(max=2e4)
    zero = -_min * sc
    codes = torch.round(W * sc + zero).clamp_(0, 255).to(torch.uint8)
    meta = QuantMeta(nbits=8, group_size=W.numel() if per_tensor else META_GROUP, axis=0, shape=tuple(t.shape),
                     scale=1.0 / sc, zero=zero, rows=codes_shape[0], dtype=torch.float32)
    return codes, meta


def _validate(W: torch.Tensor, nbits: int, group_size: int, axis: int) -> tuple[int, int, int]:
    """Check a weight tensor and its grouping; returns ``(nbits, group_size, axis)`` as plain ints."""
    check_tensor("W", W, dtype="floating")
    nbits = _check_nbits("nbits", nbits)
    axis = check_choice("axis", check_int("axis", axis), (0, 1))
    group_size = check_int("group_size", group_size, low=1)
    if W.numel() % group_size:
        raise ValueError(f"group_size must be a positive int dividing W.numel()={W.numel()} (shape {tuple(W.shape)}), "
                         f"got {group_size}")
    check_tensor("W", W, finite=True)  # NaN or inf weights would silently quantize to NaN
    return nbits, group_size, axis


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
    Raises:
        TypeError: a non-tensor or non-float tensor, tensors of different dtypes, a non-int ``nbits``/``axis``/
            ``iters``, a non-number ``p``/``beta``/``kappa``, a non-bool flag.
        ValueError: ``W`` not 2-D, empty or not finite; ``scale``/``zero`` not shaped like one value per group
            (``W``'s shape with ``axis`` of size 1), a zero or non-finite scale; tensors on different devices;
            settings out of range.
    """
    check_tensor("W", W, ndim=2, dtype="floating", finite=True)
    nbits = _check_nbits("nbits", nbits)
    axis = check_choice("axis", check_int("axis", axis), (0, 1))
    per_group = [1, W.shape[1]] if axis == 0 else [W.shape[0], 1]
    for name, value in (("scale", scale), ("zero", zero)):
        check_tensor(name, value, shape=per_group, dtype="floating", finite=True)
    check_same_device(W=W, scale=scale, zero=zero)
    check_same_dtype(W=W, scale=scale, zero=zero)
    if bool((scale == 0).any()):
        raise ValueError("scale (the inverse scale sc) must be nonzero: W_r = (W_q - z) / sc divides by it")
    p, beta, kappa, iters = _check_solver(p, beta, kappa, iters, early_stop, faithful)
    return _optimize_zero(W, scale, zero, nbits=nbits, axis=axis, p=p, beta=beta, kappa=kappa, iters=iters,
                          early_stop=early_stop, faithful=faithful)


def _optimize_zero(W, scale, zero, *, nbits, axis, p, beta, kappa, iters, early_stop, faithful):
    """:func:`optimize_zero` without the argument checks (called by :func:`quantize`, which checked them)."""
    max_v = round(2**nbits - 1)
    trace = Trace()
    best_error = torch.tensor(torch.inf)
    best_zero, returned = zero, 0
    for i in range(iters):
        W_q = torch.round(W * scale + zero).clamp_(0, max_v)
        W_r = (W_q - zero) / scale
        W_e = _shrink_lp(W - W_r, beta, p)
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
    quant_scale: bool = False,
    quant_zero: bool = False,
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
        quant_scale, quant_zero: store the scale / the zero quantized to 8 bits, exactly as hqq 0.2.8's
            ``BaseQuantizeConfig(quant_scale=True, quant_zero=True)`` specifies (scale: groups of 128 along axis 0,
            so ``W.numel() / group_size`` must be a multiple of 128; zero: one min/max over the tensor); see
            ``_quantize_meta``. hqq 0.2.8's ``HQQLinear`` itself now ignores them as deprecated; its older
            releases (the blog's) applied them.
    Returns:
        ``(W_q, meta)``: ``W_q`` is the grouped code matrix (``uint8``, shape ``[g, numel/g]`` for axis 0,
        ``[numel/g, g]`` for axis 1) or its packed form; ``meta`` a :class:`QuantMeta` with ``meta.trace``
        set when ``optimize``.
    Raises:
        TypeError: ``W`` not a floating-point tensor; an int argument given as a bool or float (``nbits=True``,
            ``nbits=4.0``); a flag that is not a bool; a solver setting that is not a real number.
        ValueError: ``W`` empty or with NaN/inf; ``nbits`` not supported; ``axis`` not 0 or 1;
            ``group_size`` not dividing ``W.numel()``; ``quant_scale`` with a number of groups that 128 does not
            divide; ``p``, ``beta``, ``kappa``, ``iters`` out of range or NaN
            (all checked even when ``optimize=False``).
    """
    nbits, group_size, axis = _validate(W, nbits, group_size, axis)
    for name, flag in (("optimize", optimize), ("round_zero", round_zero), ("bitpack", bitpack),
                       ("quant_scale", quant_scale), ("quant_zero", quant_zero)):
        check_type(name, flag, bool)
    p, beta, kappa, iters = _check_solver(p, beta, kappa, iters, early_stop, faithful)
    if quant_scale and (W.numel() // group_size) % META_GROUP:
        raise ValueError(f"quant_scale=True quantizes the scales in groups of {META_GROUP} (hqq's BaseQuantizeConfig), "
                         f"so the number of groups W.numel() / group_size must be a multiple of {META_GROUP}; got "
                         f"{W.numel()} / {group_size} = {W.numel() // group_size}")
    Wg = _grouped(W, group_size, axis)
    scale, zero = _init_scale_zero(Wg, nbits, axis)
    if round_zero:
        zero = torch.round(zero)
    trace = None
    if optimize:
        zero, trace = _optimize_zero(Wg, scale, zero, nbits=nbits, axis=axis, p=p, beta=beta, kappa=kappa,
                                     iters=iters, early_stop=early_stop, faithful=faithful)
    W_q = torch.round(Wg * scale + zero).clamp(0, round(2**nbits - 1)).to(torch.uint8)
    meta = QuantMeta(nbits=nbits, group_size=group_size, axis=axis, shape=tuple(W.shape), scale=1.0 / scale,
                     zero=zero, rows=W_q.shape[0], dtype=W.dtype, trace=trace)
    for name, on in (("scale", quant_scale), ("zero", quant_zero)):
        if on:
            q, m = _quantize_meta(getattr(meta, name), per_tensor=name == "zero")
            meta.meta_q[name] = (q, m)
            setattr(meta, name, _dequantize(q, m))
    if bitpack:
        W_q, meta.packed = packing.pack(W_q, nbits), True
    return W_q, meta


def _check_codes(W_q: torch.Tensor, meta: QuantMeta) -> None:
    """``W_q`` must be the codes ``meta`` describes: ``[rows, numel/rows]`` integer codes, or, when ``meta.packed``,
    their packed words ``[ceil(rows/k), numel/rows]`` in the storage dtype of ``meta.nbits`` (metadata only: no pass
    over the data)."""
    check_type("meta", meta, QuantMeta, what="the QuantMeta returned by quantize")
    check_tensor("W_q", W_q, ndim=2, dtype="integer")
    numel = math.prod(meta.shape)
    if meta.nbits not in packing.LAYOUT or meta.rows < 1 or numel % meta.rows:
        raise ValueError(f"meta does not describe a quantized tensor: nbits={meta.nbits!r}, rows={meta.rows!r}, "
                         f"shape={meta.shape!r}")
    cols = numel // meta.rows
    if meta.packed:
        storage, k = packing.LAYOUT[meta.nbits]
        expected, what = (-(-meta.rows // k), cols), f"{meta.nbits}-bit packed {storage} words"
        ok = W_q.dtype == storage
    else:
        expected, what, ok = (meta.rows, cols), "unpacked codes (one per weight)", True
    if not ok or tuple(W_q.shape) != expected:
        raise ValueError(f"W_q does not match meta: expected {what} of shape {list(expected)}, got "
                         f"{W_q.dtype} of shape {list(W_q.shape)} (packed and unpacked codes cannot be mixed)")


def dequantize(W_q: torch.Tensor, meta: QuantMeta, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Ŵ = (W_q − z)·s, reshaped to the original shape, in ``dtype`` (default: the input's dtype).

    Raises:
        TypeError: ``meta`` not a :class:`QuantMeta`; ``W_q`` not an integer tensor; ``dtype`` not a floating dtype.
        ValueError: ``W_q`` not the codes ``meta`` describes (shape, packed vs unpacked), or on another device
            than ``meta``'s scale and zero.
    """
    _check_codes(W_q, meta)
    check_tensor("meta.scale", meta.scale, dtype="floating")
    check_tensor("meta.zero", meta.zero, dtype="floating")
    check_same_device(W_q=W_q, **{"meta.scale": meta.scale, "meta.zero": meta.zero})
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be None or a floating torch.dtype, got {dtype!r}")
    return _dequantize(W_q, meta, dtype=dtype)


def _dequantize(W_q: torch.Tensor, meta: QuantMeta, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`dequantize` without the argument checks (every forward pass of :class:`~companion.hqq.HQQLinear`)."""
    codes = packing.unpack(W_q, meta.nbits, meta.rows) if meta.packed else W_q
    W_r = (codes.float() - meta.zero) * meta.scale
    return W_r.reshape(meta.shape).to(dtype or meta.dtype)


def quantization_error(W: torch.Tensor, **kwargs) -> dict[str, float]:
    """Quantize and dequantize ``W`` (``kwargs`` as :func:`quantize`) and report the mean absolute, mean squared
    and max absolute error, and the solver's iterations (0 for round-to-nearest). ``kwargs`` are checked by
    :func:`quantize` (an unknown one raises ``TypeError``)."""
    W_q, meta = quantize(W, **kwargs)
    err = (W.float() - dequantize(W_q, meta, dtype=torch.float32)).abs()
    return {"mae": err.mean().item(), "mse": err.pow(2).mean().item(), "max": err.max().item(),
            "iterations": len(meta.trace.errors) if meta.trace else 0}
