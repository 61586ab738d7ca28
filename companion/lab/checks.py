"""Argument checks shared by every chapter: one way to say what was expected and what was given.

Every public function of the companion checks its arguments at the boundary with these helpers, so that bad
input gets the same kind of error everywhere, naming the argument:

- a value of the wrong *type* raises ``TypeError`` (a bool or a float where an int is meant, a float tensor
  where integer codes are meant, an object that is not a process group);
- a value of the right type but outside its *domain* raises ``ValueError`` (a negative size, NaN, a probability
  above 1, an empty tensor, a shape that does not fit).

Integers accept any ``numbers.Integral`` except ``bool`` (so ``numpy.int64`` works everywhere, ``True`` nowhere);
floats accept any real number except ``bool`` and must be finite unless asked otherwise. Each helper returns the
value converted to the plain Python type (``int``/``float``), so callers can use what it returns.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, Callable

import torch

__all__ = [
    "cli_device",
    "cli_float",
    "cli_int",
    "check_choice",
    "check_float",
    "check_int",
    "check_probability",
    "check_same_device",
    "check_same_dtype",
    "check_sequence",
    "check_tensor",
    "check_type",
    "describe",
]


def describe(value: Any) -> str:
    """A short description of ``value`` for an error message: its repr (shortened) and type; for a tensor,
    its shape, dtype and device."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}, dtype {value.dtype}, on {value.device}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _bounds_text(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound optional).

    Raises:
        TypeError: ``value`` is a bool, a float (even ``4.0``) or not a number.
        ValueError: outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_floating_point \
                and value.dtype != torch.bool:
            value = int(value)
        else:
            raise TypeError(f"{name} must be an int, got {describe(value)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int {_bounds_text(low, high, False, False)}, got {value}")
    return value


def check_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """``value`` as a ``float`` in the interval from ``low`` to ``high`` (closed unless ``*_open``).

    Ints are accepted (``1`` means ``1.0``); bools are not. With ``finite=True`` (the default) NaN and ±inf
    are rejected; with ``finite=False`` only NaN is.

    Raises:
        TypeError: a bool, a string, a tensor with more than one element, or anything that is not a real number.
        ValueError: NaN, an infinity (when ``finite``), or outside the bounds.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if (low is not None and (value < low or (low_open and value == low))) or \
            (high is not None and (value > high or (high_open and value == high))):
        raise ValueError(f"{name} must be a number {_bounds_text(low, high, low_open, high_open)}, got {value}")
    return value


def check_probability(name: str, value: Any, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a ``float`` in ``[0, 1]`` (``(0, 1]`` with ``low_open``, ``[0, 1)`` with ``high_open``)."""
    return check_float(name, value, low=0.0, high=1.0, low_open=low_open, high_open=high_open)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared with ``==``; strings are not case-folded).

    Raises:
        TypeError: ``value`` is unhashable or of another type than every choice.
        ValueError: not one of ``choices``.
    """
    choices = list(choices)
    if not any(isinstance(value, type(c)) for c in choices):
        raise TypeError(f"{name} must be one of {choices}, got {describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_type(name: str, value: Any, types: type | tuple[type, ...], *, what: str | None = None) -> Any:
    """``value`` if it is an instance of ``types``; ``what`` describes the expected kind in the message."""
    if not isinstance(value, types):
        if what is None:
            names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
            what = " or ".join(names)
        raise TypeError(f"{name} must be {what}, got {describe(value)}")
    return value


def check_sequence(name: str, value: Any, what: str, *, nonempty: bool = True) -> list:
    """``value`` as a list: any iterable except a string or bytes (one string is not a sequence of words).

    ``what`` names the items for the message (``"words"``, ``"(a, b) action-index pairs"``).

    Raises:
        TypeError: a string, bytes, or anything that is not iterable.
        ValueError: empty, when ``nonempty``.
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of {what}, not one string, got {describe(value)}")
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {what}, got {describe(value)}") from None
    if nonempty and not items:
        raise ValueError(f"{name} must be a non-empty sequence of {what}, got an empty one")
    return items


_DTYPE_KINDS = {
    "floating": lambda d: d.is_floating_point,
    "integer": lambda d: not d.is_floating_point and not d.is_complex and d != torch.bool,
    "bool": lambda d: d == torch.bool,
}


def check_tensor(name: str, value: Any, *, ndim: int | Sequence[int] | None = None,
                 shape: Sequence[int | None] | None = None, dtype: str | torch.dtype | Sequence[torch.dtype] | None = None,
                 nonempty: bool = True, finite: bool = False) -> torch.Tensor:
    """``value`` if it is a ``torch.Tensor`` of the expected rank, shape and dtype.

    Args:
        ndim: the number of dimensions, or a sequence of allowed numbers.
        shape: the expected shape; ``None`` entries match any size (implies ``ndim``).
        dtype: a ``torch.dtype``, a sequence of them, or a kind: ``"floating"``, ``"integer"``, ``"bool"``.
        nonempty: reject tensors with no elements.
        finite: reject NaN and ±inf entries (floating tensors only).
    Raises:
        TypeError: not a tensor, or a dtype of the wrong kind.
        ValueError: wrong rank or shape, empty, or non-finite entries.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(value)}")
    if dtype is not None:
        if isinstance(dtype, str):
            ok, expected = _DTYPE_KINDS[dtype](value.dtype), f"{'an' if dtype[0] in 'aeiou' else 'a'} {dtype} dtype"
        elif isinstance(dtype, torch.dtype):
            ok, expected = value.dtype == dtype, str(dtype)
        else:
            ok, expected = value.dtype in tuple(dtype), " or ".join(str(d) for d in dtype)
        if not ok:
            raise TypeError(f"{name} must have {expected}, got {describe(value)}")
    if shape is not None:
        shape = tuple(shape)
        if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
            expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name} must have shape {expected}, got {describe(value)}")
    elif ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            expected = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name} must have {expected} dimensions, got {describe(value)}")
    if nonempty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got {describe(value)}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must hold finite values only, got NaN or inf in {describe(value)}")
    return value


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """The common device of the named tensors (``None`` values are ignored); ``ValueError`` naming them if
    they differ."""
    named = {k: v for k, v in tensors.items() if v is not None}
    devices = {str(v.device) for v in named.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{k} on {v.device}" for k, v in named.items())
        raise ValueError(f"{', '.join(named)} must be on the same device, got {listing}")
    return next(iter(named.values())).device if named else torch.device("cpu")


def check_same_dtype(**tensors: torch.Tensor) -> torch.dtype | None:
    """The common dtype of the named tensors (``None`` values are ignored); ``TypeError`` naming them if they
    differ."""
    named = {k: v for k, v in tensors.items() if v is not None}
    dtypes = {v.dtype for v in named.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{k} is {v.dtype}" for k, v in named.items())
        raise TypeError(f"{', '.join(named)} must have the same dtype, got {listing}")
    return next(iter(dtypes)) if dtypes else None


# ---------------------------------------------------------------------- the same checks for command-line options

def _cli(parse: Callable[[str], Any], check: Callable[[Any], Any], kind: str) -> Callable[[str], Any]:
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return check(value)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value ")) from None

    convert.__name__ = kind  # argparse names the type in some messages
    return convert


def cli_int(*, low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An ``argparse`` ``type=`` for an int option in ``[low, high]``: a bad value gives argparse's usual error,
    ``argument --steps: must be an int >= 1, got 0``, through :func:`check_int`."""
    return _cli(int, lambda v: check_int("value", v, low=low, high=high), "an int")


def cli_float(*, low: float | None = None, high: float | None = None, low_open: bool = False,
              high_open: bool = False) -> Callable[[str], float]:
    """An ``argparse`` ``type=`` for a finite float option, checked by :func:`check_float`."""
    return _cli(float, lambda v: check_float("value", v, low=low, high=high, low_open=low_open,
                                             high_open=high_open), "a number")


def cli_device(text: str) -> str:
    """An ``argparse`` ``type=`` for ``--device``: a torch device string of type cpu or cuda (``cuda:N``).

    Checked when parsed; whether CUDA (and device ``N``) is present is checked when the run starts, by
    :func:`companion.lab.get_device`.
    """
    try:
        ok = torch.device(text).type in ("cpu", "cuda")
    except (RuntimeError, TypeError, ValueError):
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N")
    return text
