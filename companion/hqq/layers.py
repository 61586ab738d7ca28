"""HQQ for whole models: a drop-in ``nn.Linear`` replacement and a model-wide quantizer with a memory report."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..lab.checks import check_choice, check_tensor, check_type
from .quantize import QuantMeta, _check_codes, _dequantize, quantize


COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


class HQQLinear(nn.Module):
    """``nn.Linear`` whose weight is stored bit-packed (codes + per-group scale and zero) and dequantized on
    every forward pass. Build it with :meth:`from_linear`.

    Scale and zero are stored in the layer's compute dtype, as hqq's ``HQQLinear`` does (``Quantizer.cuda`` casts
    every float meta-data tensor to ``compute_dtype``); the compute dtype is the dtype of those buffers, so
    ``layer.half()`` or ``layer.to(torch.bfloat16)`` moves it. With ``quant_scale``/``quant_zero`` the scale/zero
    are stored as uint8 codes with their own scale and zero in the compute dtype.
    """

    def __init__(self, W_q: torch.Tensor, meta: QuantMeta, bias: torch.Tensor | None, *,
                 compute_dtype: torch.dtype | None = None):
        """Wrap quantized codes ``W_q`` of a ``[out, in]`` weight, their :class:`QuantMeta` and the layer's bias.

        Args:
            compute_dtype: float dtype of the forward pass and of the stored meta-data and bias; default
                ``meta.dtype`` (the quantized weight's dtype). hqq's own default is ``torch.float16`` (a GPU one).
        Raises:
            TypeError: ``meta`` not a :class:`QuantMeta`, ``W_q`` not integer codes, ``bias`` not ``None`` or a
                floating-point tensor.
            ValueError: ``compute_dtype`` not one of ``COMPUTE_DTYPES``; ``meta`` not of a 2-D weight, ``W_q`` not
                the codes ``meta`` describes, ``bias`` not of length ``out``; the scale, zero or bias not representable in ``compute_dtype`` (e.g. a zero-point
                beyond fp16's 65504: hqq would store ``inf``).
        """
        _check_codes(W_q, meta)
        if len(meta.shape) != 2:
            raise ValueError(f"meta must describe a 2-D [out, in] weight, got shape {tuple(meta.shape)}")
        for name in ("scale", "zero"):
            check_tensor(f"meta.{name}", getattr(meta, name), dtype="floating")
        if not (isinstance(meta.meta_q, dict) and set(meta.meta_q) <= {"scale", "zero"}):
            raise ValueError("meta.meta_q must be the dict {'scale': ..., 'zero': ...} (or a part of it) that "
                             "quantize builds")
        if bias is not None:
            check_tensor("bias", bias, shape=[meta.shape[0]], dtype="floating")
        compute_dtype = check_choice("compute_dtype", meta.dtype if compute_dtype is None else compute_dtype,
                                     COMPUTE_DTYPES)
        super().__init__()
        self.register_buffer("W_q", W_q)
        stored = {}
        for name in ("scale", "zero"):
            if name in meta.meta_q:
                q, m = meta.meta_q[name]
                stored.update({f"{name}_q": q, f"{name}_scale": m.scale, f"{name}_zero": m.zero})
            else:
                stored[name] = getattr(meta, name)
        if bias is not None:
            stored["bias"] = bias.detach()
        for key, value in stored.items():
            if value.is_floating_point():
                cast = value.to(compute_dtype)
                if not torch.isfinite(cast).all():
                    raise ValueError(f"{key} does not fit in compute_dtype={compute_dtype}: casting it gives inf or "
                                     f"NaN (largest |value| {value.abs().max().item():.3g} before the cast); "
                                     "use compute_dtype=torch.float32")
                value = cast
            if key == "bias":
                self.bias = nn.Parameter(value.clone(), requires_grad=False)
            else:
                self.register_buffer(key, value)
        if bias is None:
            self.bias = None
        # layouts only: the values live in the buffers above
        self._meta_layout = {name: dataclasses.replace(m, scale=None, zero=None, trace=None)
                             for name, (_, m) in meta.meta_q.items()}
        self.meta = dataclasses.replace(meta, scale=None, zero=None, trace=None, meta_q={})
        self.out_features, self.in_features = meta.shape

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, compute_dtype: torch.dtype | None = None,
                    **quant_kwargs) -> "HQQLinear":
        """Quantize ``linear.weight`` with :func:`companion.hqq.quantize` (packed) and wrap it; ``quant_kwargs``
        are checked by :func:`~companion.hqq.quantize`; ``compute_dtype`` defaults to ``linear.weight.dtype``."""
        check_type("linear", linear, nn.Linear, what="an nn.Linear")
        W_q, meta = quantize(linear.weight.detach(), bitpack=True, **quant_kwargs)
        return cls(W_q, meta, linear.bias, compute_dtype=compute_dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the stored float meta-data (and so of the forward pass)."""
        return next(b.dtype for b in self.buffers() if b.is_floating_point())

    def _meta_value(self, name: str) -> torch.Tensor:
        if name not in self._meta_layout:
            return getattr(self, name)
        m = dataclasses.replace(self._meta_layout[name], scale=getattr(self, f"{name}_scale"),
                                zero=getattr(self, f"{name}_zero"))
        return _dequantize(getattr(self, f"{name}_q"), m, dtype=self.compute_dtype)

    def weight_dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Ŵ = (W_q − z)·s from the packed codes and the stored scale and zero, shape ``[out, in]``, in ``dtype``
        (default: the compute dtype)."""
        meta = dataclasses.replace(self.meta, scale=self._meta_value("scale"), zero=self._meta_value("zero"))
        return _dequantize(self.W_q, meta, dtype=dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.compute_dtype:  # as nn.Linear: no silent cast (a clear message instead of matmul's)
            raise TypeError(f"x must have the layer's compute dtype {self.compute_dtype}, got {x.dtype}")
        return F.linear(x, self.weight_dequantized(), self.bias)

    def weight_bytes(self) -> int:
        """Bytes stored for the weight: the packed code words (padding included) and every scale/zero tensor."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def storage_bytes(self) -> int:
        """Bytes actually held: :meth:`weight_bytes` and the bias."""
        return self.weight_bytes() + (0 if self.bias is None else self.bias.numel() * self.bias.element_size())

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight: ``8 * weight_bytes() / (out * in)`` (codes with padding, plus meta-data)."""
        return 8 * self.weight_bytes() / (self.out_features * self.in_features)

    def extra_repr(self) -> str:
        m = self.meta
        return (f"in_features={self.in_features}, out_features={self.out_features}, nbits={m.nbits}, "
                f"group_size={m.group_size}, axis={m.axis}, quantized meta={sorted(self._meta_layout) or None}, "
                f"compute_dtype={self.compute_dtype}")


@dataclass
class QuantReport:
    """What :func:`quantize_model` did."""

    layers: int
    bytes_before: int  # the replaced nn.Linear weights (and biases) as they were
    bytes_after: int  # the same layers as HQQLinear storage
    seconds: float
    bits_per_weight: float  # stored bits (packed codes with padding + meta-data) per quantized weight

    def __str__(self) -> str:
        return (f"{self.layers} linear layers quantized in {self.seconds:.1f} s: {self.bytes_before / 1e6:.1f} MB → "
                f"{self.bytes_after / 1e6:.1f} MB ({self.bits_per_weight:.2f} stored bits per weight, meta-data included)")


def quantize_model(model: nn.Module, *, skip: tuple[str, ...] = ("lm_head",), progress: bool = True,
                   **quant_kwargs) -> QuantReport:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an :class:`HQQLinear`.

    All or nothing: every layer is quantized first and the model is changed only once all of them succeeded, so
    a bad argument (or a layer whose size ``group_size`` does not divide) leaves ``model`` untouched.

    Args:
        model: e.g. a Hugging Face causal LM.
        skip: module names containing any of these strings stay in full precision. The default keeps
            ``lm_head`` (tied to the token embedding in SmolLM2; quantizing it would untie them).
        quant_kwargs: passed to :func:`companion.hqq.quantize` (``nbits``, ``group_size``, ``axis``,
            ``optimize``, ``faithful``, ``quant_scale``, ``quant_zero`` ...) and ``compute_dtype`` (see
            :class:`HQQLinear`).
    Raises:
        TypeError: ``model`` not an ``nn.Module``, ``skip`` not a tuple/list of strings, ``progress`` not a bool,
            a bad or unknown entry of ``quant_kwargs``.
        ValueError: ``model`` is itself an ``nn.Linear`` (use :meth:`HQQLinear.from_linear`) or has no linear layer
            outside ``skip``; a value of ``quant_kwargs`` out of range for some layer (the message names the layer).
    """
    from companion.lab import progress as bar

    check_type("model", model, nn.Module, what="a torch.nn.Module")
    if isinstance(skip, str) or not isinstance(skip, (tuple, list)) or not all(isinstance(s, str) for s in skip):
        raise TypeError(f"skip must be a tuple of str (module name parts), got {skip!r}")
    check_type("progress", progress, bool)
    if isinstance(model, nn.Linear):
        raise ValueError("model is a single nn.Linear, which cannot be replaced in place: use HQQLinear.from_linear")
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and not any(s in name for s in skip)]
    if not targets:
        raise ValueError("the model has no nn.Linear layers to quantize (outside `skip`)")
    before = after = n_weights = weight_bytes = 0
    start = time.perf_counter()
    quantized = []
    for name, linear in (bar(targets, desc="quantizing") if progress else targets):
        try:
            q = HQQLinear.from_linear(linear, **quant_kwargs)
        except (TypeError, ValueError) as err:  # nothing replaced yet: the model is unchanged
            if type(err) not in (TypeError, ValueError):
                raise
            raise type(err)(f"layer {name!r}: {err}") from err
        before += linear.weight.numel() * linear.weight.element_size()
        before += 0 if linear.bias is None else linear.bias.numel() * linear.bias.element_size()
        after += q.storage_bytes()
        weight_bytes += q.weight_bytes()
        n_weights += linear.weight.numel()
        quantized.append((name, q))
    for name, q in quantized:  # every layer quantized: now change the model
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], q)
    return QuantReport(len(targets), before, after, time.perf_counter() - start, 8 * weight_bytes / n_weights)
