"""``companion.hqq``: half-quadratic quantization (Badri & Shaji, 2023), calibration-free.

- :func:`quantize`, :func:`dequantize` — affine group quantization, HQQ-optimized zero-points or
  round-to-nearest (``optimize=False``); ``faithful=True`` reproduces PyPI ``hqq`` 0.2.8 bit for bit;
- :func:`shrink_lp`, :func:`optimize_zero` — the half-quadratic solver and its trace;
- :mod:`~companion.hqq.packing` — 8/4/3/2/1-bit packing in hqq's layouts;
- :class:`HQQLinear`, :func:`quantize_model` — whole models, with a memory report;
- :func:`optimize_weights_autograd` — hqq's autograd baseline (AdamW on scale and zero).

The book's chapter: ``book/hqq/``.
"""

from .baseline import optimize_weights_autograd
from .layers import HQQLinear, QuantReport, quantize_model
from .packing import pack, packed_bits, unpack
from .quantize import (
    SUPPORTED_BITS,
    QuantMeta,
    Trace,
    dequantize,
    optimize_zero,
    quantization_error,
    quantize,
    shrink_lp,
    shrink_threshold,
)

__all__ = [
    "SUPPORTED_BITS",
    "HQQLinear",
    "QuantMeta",
    "QuantReport",
    "Trace",
    "dequantize",
    "optimize_zero",
    "optimize_weights_autograd",
    "pack",
    "packed_bits",
    "quantization_error",
    "quantize",
    "quantize_model",
    "shrink_lp",
    "shrink_threshold",
    "unpack",
]
