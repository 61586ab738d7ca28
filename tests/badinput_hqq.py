"""Bad-input table of ``companion.hqq`` (see tests/badinput.py)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from badinput import Custom, Float, Int, NoArguments, Obj, Spec, Tensor, cli_spec
from companion import hqq as H
from companion.hqq.quantize import _init_scale_zero


@functools.cache
def _weight() -> torch.Tensor:
    """A small [16, 8] weight (128 values): group sizes 16, 32, 64 and 128 divide it."""
    return torch.randn(16, 8, generator=torch.Generator().manual_seed(0))


def _W() -> torch.Tensor:
    return _weight().clone()


@functools.cache
def _quantized(bitpack: bool):
    return H.quantize(_weight(), nbits=4, group_size=16, bitpack=bitpack)


def _codes() -> torch.Tensor:
    return _quantized(False)[0].clone()


def _packed() -> torch.Tensor:
    return _quantized(True)[0].clone()


def _grouped():
    """Grouped weights [16, 8] (axis 0: each column is a group) with their initial inverse scale and zero."""
    Wg = _W()
    scale, zero = _init_scale_zero(Wg, 4, 0)
    return Wg, scale, zero


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))


_NBITS = Custom((True, False, 4.0, 3.5, np.float64(2.0), 5, 0, 16, -4, "4", None, [4]))
_DTYPE = Custom((torch.int64, torch.bool, "float32", 3, float))  # None is valid (the weight's dtype)
_AXIS = Custom((2, -1, True, 0.0, "0", None))
_FLAG = Custom((1, 0, "yes", None, 1.0))
_P = Float(low=0.0, high=1.0, low_open=True)
_POSITIVE = Float(low=0.0, low_open=True)

_SOLVER = {"p": _P, "beta": _POSITIVE, "kappa": Float(low=1.0), "iters": Int(low=1),
           "early_stop": _FLAG, "faithful": _FLAG}


def _quantize_valid() -> dict:
    return {"W": _W(), "nbits": 4, "group_size": 16, "axis": 0, "optimize": True, "round_zero": False, "p": 0.7,
            "beta": 10.0, "kappa": 1.01, "iters": 3, "early_stop": True, "faithful": False, "bitpack": False,
            "quant_scale": False, "quant_zero": False}


def _optimize_zero_valid() -> dict:
    Wg, scale, zero = _grouped()
    return {"W": Wg, "scale": scale, "zero": zero, "nbits": 4, "axis": 0, "p": 0.7, "beta": 10.0, "kappa": 1.01,
            "iters": 3, "early_stop": True, "faithful": False}


def _hqq_linear_valid() -> dict:
    W_q, meta = _quantized(True)
    return {"W_q": W_q.clone(), "meta": meta, "bias": torch.zeros(16), "compute_dtype": torch.float32}


SPECS = {
    "SUPPORTED_BITS": NoArguments("a constant (the bit widths quantize and pack accept)"),
    "QuantMeta": NoArguments("a record returned by quantize; dequantize and HQQLinear check it (tests/test_hqq.py)"),
    "QuantReport": NoArguments("a record returned by quantize_model"),
    "Trace": NoArguments("a record of the solver's iterations, returned inside QuantMeta"),
    "quantize": Spec(
        lambda **kw: H.quantize(**kw), _quantize_valid,
        {"W": Tensor(_W, dtype="floating", finite=True), "nbits": _NBITS, "group_size": Int(low=1), "axis": _AXIS,
         "optimize": _FLAG, "round_zero": _FLAG, **_SOLVER, "bitpack": _FLAG, "quant_scale": _FLAG,
         "quant_zero": _FLAG}),
    "dequantize": Spec(
        lambda **kw: H.dequantize(**kw),
        lambda: {"W_q": _codes(), "meta": _quantized(False)[1], "dtype": torch.float32},
        {"W_q": Tensor(_codes, ndim=2, dtype="integer"), "meta": Obj(H.QuantMeta),
         "dtype": Custom((torch.int64, torch.bool, "float32", 3))}),
    "quantization_error": Spec(
        lambda **kw: H.quantization_error(**kw),
        lambda: {"W": _W(), "nbits": 4, "group_size": 16, "beta": 10.0, "iters": 3},
        {"W": Tensor(_W, dtype="floating", finite=True), "nbits": _NBITS, "group_size": Int(low=1),
         "beta": _POSITIVE, "iters": Int(low=1)}),
    "shrink_lp": Spec(
        lambda **kw: H.shrink_lp(**kw), lambda: {"x": torch.randn(8), "beta": 10.0, "p": 0.7},
        {"x": Tensor(lambda: torch.randn(8), dtype="floating", empty_ok=True), "beta": _POSITIVE, "p": _P}),
    "shrink_threshold": Spec(
        lambda **kw: H.shrink_threshold(**kw), lambda: {"beta": 10.0, "p": 0.7}, {"beta": _POSITIVE, "p": _P}),
    "optimize_zero": Spec(
        lambda **kw: H.optimize_zero(**kw), _optimize_zero_valid,
        {"W": Tensor(lambda: _grouped()[0], ndim=2, dtype="floating", finite=True),
         "scale": Tensor(lambda: _grouped()[1], ndim=2, dtype="floating", finite=True),
         "zero": Tensor(lambda: _grouped()[2], ndim=2, dtype="floating", finite=True),
         "nbits": _NBITS, "axis": _AXIS, **_SOLVER}),
    "optimize_weights_autograd": Spec(
        lambda **kw: H.optimize_weights_autograd(**kw),
        lambda: {"W": _W(), "nbits": 4, "group_size": 16, "axis": 0, "lr": 2e-3, "iters": 3},
        {"W": Tensor(_W, dtype="floating", finite=True), "nbits": _NBITS, "group_size": Int(low=1), "axis": _AXIS,
         "lr": _POSITIVE, "iters": Int(low=1)}),
    "pack": Spec(
        lambda **kw: H.pack(**kw), lambda: {"W_q": _codes(), "nbits": 4},
        {"W_q": Tensor(_codes, ndim=2, dtype="integer", empty_ok=True), "nbits": _NBITS}),
    "unpack": Spec(
        lambda **kw: H.unpack(**kw), lambda: {"packed": _packed(), "nbits": 4, "rows": 16},
        {"packed": Tensor(_packed, ndim=2, dtype="integer", empty_ok=True), "nbits": _NBITS, "rows": Int(low=0)}),
    "packed_bits": Spec(
        lambda **kw: H.packed_bits(**kw), lambda: {"rows": 16, "cols": 8, "nbits": 3},
        {"rows": Int(low=0), "cols": Int(low=0), "nbits": _NBITS}),
    "HQQLinear": Spec(
        lambda **kw: H.HQQLinear(**kw), _hqq_linear_valid,
        {"W_q": Tensor(_packed, ndim=2, dtype="integer"), "meta": Obj(H.QuantMeta),
         "bias": Custom((torch.zeros(3), torch.zeros(16, dtype=torch.int64), torch.zeros(1, 16), [0.0] * 16, "b")),
         "compute_dtype": _DTYPE}),
    "quantize_model": Spec(
        lambda **kw: H.quantize_model(**kw),
        lambda: {"model": _small_model(), "skip": ("lm_head",), "progress": False, "nbits": 4, "group_size": 16,
                 "compute_dtype": None},
        {"model": Custom((None, 3, object(), "model", nn.Linear(16, 16), nn.Sequential(nn.ReLU()))),
         "skip": Custom(("lm_head", [3], None, 3, ("lm_head", None))), "progress": _FLAG, "nbits": _NBITS,
         "group_size": Int(low=1), "compute_dtype": _DTYPE}),
}


CLI_SPECS = {
    "hqq perplexity": cli_spec(["hqq", "perplexity"], {"tokens": "64", "context": "32", "seed": "0"},
                               {"tokens": Int(low=2), "context": Int(low=2), "seed": Int(low=0, high=2**32 - 1)}),
}
