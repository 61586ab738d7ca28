"""HQQ for whole models: a drop-in ``nn.Linear`` replacement and a model-wide quantizer with a memory report."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..lab.checks import check_tensor, check_type
from .quantize import QuantMeta, _check_codes, _dequantize, quantize


class HQQLinear(nn.Module):
    """``nn.Linear`` whose weight is stored bit-packed (codes + per-group scale and zero) and dequantized on
    every forward pass. Build it with :meth:`from_linear`.

    Scales and zeros are kept as fp16 (as hqq does), or, when quantized with ``meta_nbits``, as 8-bit (or
    fewer) codes with their own fp16 scale and zero per group of 128.
    """

    def __init__(self, W_q: torch.Tensor, meta: QuantMeta, bias: torch.Tensor | None):
        """Wrap quantized codes ``W_q`` of a ``[out, in]`` weight, their :class:`QuantMeta` and the layer's bias.

        Raises:
            TypeError: ``meta`` not a :class:`QuantMeta`, ``W_q`` not integer codes, ``bias`` not ``None`` or a
                floating-point tensor.
            ValueError: ``meta`` not of a 2-D weight, ``W_q`` not the codes ``meta`` describes, ``bias`` not of
                length ``out``.
        """
        _check_codes(W_q, meta)
        if len(meta.shape) != 2:
            raise ValueError(f"meta must describe a 2-D [out, in] weight, got shape {tuple(meta.shape)}")
        for name in ("scale", "zero"):
            check_tensor(f"meta.{name}", getattr(meta, name), dtype="floating")
        if meta.meta_q is not None and not (isinstance(meta.meta_q, dict) and {"scale", "zero"} <= set(meta.meta_q)):
            raise ValueError("meta.meta_q must be None or the dict {'scale': ..., 'zero': ...} that quantize builds")
        if bias is not None:
            check_tensor("bias", bias, shape=[meta.shape[0]], dtype="floating")
        super().__init__()
        self.register_buffer("W_q", W_q)
        self._meta_layout = {}
        for name in ("scale", "zero"):
            value = getattr(meta, name)
            if meta.meta_q is None:
                self.register_buffer(name, value.to(torch.float16))
            else:
                q, m = meta.meta_q[name]
                self.register_buffer(f"{name}_q", q)
                self.register_buffer(f"{name}_scale", m.scale.to(torch.float16))
                self.register_buffer(f"{name}_zero", m.zero.to(torch.float16))
                self._meta_layout[name] = (dataclasses.replace(m, scale=None, zero=None, trace=None), value.shape)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        # keep only the layout of the weight; its scale and zero live in the buffers above
        self.meta = dataclasses.replace(meta, scale=None, zero=None, trace=None, meta_q=None)
        self.out_features, self.in_features = meta.shape
        self.bits_per_weight = meta.bits_per_weight()

    @classmethod
    def from_linear(cls, linear: nn.Linear, **quant_kwargs) -> "HQQLinear":
        """Quantize ``linear.weight`` with :func:`companion.hqq.quantize` (packed) and wrap it; ``quant_kwargs``
        are checked by :func:`~companion.hqq.quantize`."""
        check_type("linear", linear, nn.Linear, what="an nn.Linear")
        W_q, meta = quantize(linear.weight.detach(), bitpack=True, **quant_kwargs)
        return cls(W_q, meta, linear.bias)

    def _meta_value(self, name: str) -> torch.Tensor:
        if name not in self._meta_layout:
            return getattr(self, name).float()
        layout, shape = self._meta_layout[name]
        m = dataclasses.replace(layout, scale=getattr(self, f"{name}_scale").float(), zero=getattr(self, f"{name}_zero").float())
        return _dequantize(getattr(self, f"{name}_q"), m, dtype=torch.float32).reshape(shape)

    def weight_dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ŵ = (W_q − z)·s from the packed codes and the stored scale and zero, shape ``[out, in]``."""
        meta = dataclasses.replace(self.meta, scale=self._meta_value("scale"), zero=self._meta_value("zero"))
        return _dequantize(self.W_q, meta, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_dequantized(x.dtype), self.bias)

    def storage_bytes(self) -> int:
        """Bytes actually held: packed codes, scale and zero storage, and the bias."""
        n = sum(b.numel() * b.element_size() for b in self.buffers())
        return n + (0 if self.bias is None else self.bias.numel() * self.bias.element_size())

    def extra_repr(self) -> str:
        m = self.meta
        return (f"in_features={self.in_features}, out_features={self.out_features}, nbits={m.nbits}, "
                f"group_size={m.group_size}, axis={m.axis}, meta_nbits={m.meta_nbits}")


@dataclass
class QuantReport:
    """What :func:`quantize_model` did."""

    layers: int
    bytes_before: int  # the replaced nn.Linear weights (and biases) as they were
    bytes_after: int  # the same layers as HQQLinear storage
    seconds: float
    bits_per_weight: float

    def __str__(self) -> str:
        return (f"{self.layers} linear layers quantized in {self.seconds:.1f} s: {self.bytes_before / 1e6:.1f} MB → "
                f"{self.bytes_after / 1e6:.1f} MB ({self.bits_per_weight:.2f} bits per weight incl. fp16 meta-data)")


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
            ``optimize``, ``faithful``, ``meta_nbits`` ...).
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
    before = after = n_weights = 0
    bits = 0.0
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
        bits += q.bits_per_weight * linear.weight.numel()
        n_weights += linear.weight.numel()
        quantized.append((name, q))
    for name, q in quantized:  # every layer quantized: now change the model
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], q)
    return QuantReport(len(targets), before, after, time.perf_counter() - start, bits / n_weights)
