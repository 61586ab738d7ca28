"""The bad-input sweep's vocabulary: argument kinds, the bad values of each kind, and one table entry per public name.

Each chapter lists its public names in ``tests/badinput_<chapter>.py`` as ``SPECS = {name: Spec(...) or
NoArguments(reason)}``. ``tests/test_bad_input.py`` checks that every name in every ``__all__`` has an entry,
that each entry's valid call succeeds, and (with hypothesis) that replacing any one argument by a bad value of
its kind raises ``TypeError``/``ValueError`` whose message names the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from hypothesis import strategies as st

_STRINGS = st.sampled_from(["3x", "", "nan"])


def _non_numbers(optional: bool) -> st.SearchStrategy:
    values = [_STRINGS, st.just([1]), st.just(object())]
    return st.one_of(values if optional else [*values, st.just(None)])


_BOOLS = st.booleans()
_NAN_INF = st.sampled_from([math.nan, math.inf, -math.inf])


@dataclass(frozen=True)
class Int:
    """An int in ``[low, high]``; bools, floats (also integer-valued ones), strings and out-of-range ints are bad
    (and ``None``, unless ``optional``)."""
    low: int | None = None
    high: int | None = None
    optional: bool = False

    def bad(self) -> st.SearchStrategy:
        out = [_BOOLS, _non_numbers(self.optional), st.floats(allow_nan=True, allow_infinity=True),
               st.sampled_from([4.0, 3.5, np.float64(2.0)])]
        if self.low is not None:
            out.append(st.integers(min_value=-2**62, max_value=self.low - 1).map(lambda v: v if v % 2 else np.int64(v)))
        if self.high is not None:
            out.append(st.integers(min_value=self.high + 1))
        return st.one_of(out)


@dataclass(frozen=True)
class Float:
    """A finite real number in an interval (``low_open``/``high_open`` exclude the end points); ``None`` is bad
    unless ``optional``."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True
    optional: bool = False

    def bad(self) -> st.SearchStrategy:
        out = [_BOOLS, _non_numbers(self.optional), st.just(math.nan)]
        if self.finite:
            out.append(_NAN_INF)
        if self.low is not None:
            below = st.floats(max_value=self.low, exclude_max=not self.low_open, allow_nan=False,
                              allow_infinity=False)
            out.append(below)
        if self.high is not None:
            above = st.floats(min_value=self.high, exclude_min=not self.high_open, allow_nan=False,
                              allow_infinity=False)
            out.append(above)
        return st.one_of(out)


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values (usually strings)."""
    options: tuple

    def bad(self) -> st.SearchStrategy:
        return st.one_of(st.just("no-such-option"), st.just(3.5), st.just(None), _BOOLS.filter(
            lambda b: b not in self.options))


@dataclass(frozen=True)
class Tensor:
    """A tensor of a rank (``ndim``; ``None``: any), a dtype kind (``"floating"``, ``"integer"``, ``"bool"``;
    ``None``: any); ``empty_ok``: an empty tensor is valid; ``finite``: NaN entries are bad.
    ``example``: a valid tensor (used to build wrong-rank and wrong-dtype variants)."""
    example: Callable[[], torch.Tensor]
    ndim: int | None = None
    dtype: str | None = None
    empty_ok: bool = False
    finite: bool = False

    def bad(self) -> st.SearchStrategy:
        ex = self.example
        out = [st.just("tensor"), st.just(None), st.builds(lambda: ex().tolist())]
        if not self.empty_ok:
            out.append(st.builds(lambda: ex().reshape(-1)[:0].reshape(*([0] * max(ex().ndim, 1)))))
        if self.ndim is not None:
            out.append(st.builds(lambda: ex().unsqueeze(0)))
            if self.ndim > 0:
                out.append(st.builds(lambda: ex().reshape(-1)[0] if ex().ndim == 1 else ex().reshape(-1)))
        if self.dtype == "floating":
            out.append(st.builds(lambda: torch.ones_like(ex(), dtype=torch.int64)))
        elif self.dtype in ("integer", "bool"):
            out.append(st.builds(lambda: ex().to(torch.float32) + 0.5))
        if self.finite:
            out.append(st.builds(lambda: ex().clone().fill_(math.nan)))
        return st.one_of(out)


@dataclass(frozen=True)
class Obj:
    """An instance of ``types`` (anything else is bad)."""
    types: type | tuple[type, ...]

    def bad(self) -> st.SearchStrategy:
        return st.sampled_from([object(), "a string", 3, 2.5]).filter(lambda v: not isinstance(v, self.types))


@dataclass(frozen=True)
class Custom:
    """Bad values listed by hand, for arguments no kind above describes (e.g. a sequence of ints)."""
    values: tuple

    def bad(self) -> st.SearchStrategy:
        return st.sampled_from(list(self.values))


@dataclass
class Spec:
    """How to call a public name validly, and the kind of each argument the sweep replaces.

    ``call(**kwargs)`` calls the function (or constructs the class); ``valid()`` returns fresh valid keyword
    arguments (tensors are made anew for every call, since some functions change them in place); ``args``
    maps argument names to kinds. ``message_names`` overrides the name the message must contain (e.g. a
    CLI option ``--steps`` for the argument ``steps``).
    """
    call: Callable[..., Any]
    valid: Callable[[], dict]
    args: dict[str, Any]
    message_names: dict[str, str] = field(default_factory=dict)


@dataclass
class NoArguments:
    """A public name the sweep has nothing to feed: a constant, a type alias, a result record. ``reason`` says
    which (and, for a class, where its checks are tested instead)."""
    reason: str


def cli_spec(command: list[str], valid: dict[str, str], options: dict[str, Any]) -> Spec:
    """A sweep entry for a command line: ``python -m companion <command> --option value ...`` is parsed (not
    run); argparse's error (exit status 2) becomes a ``ValueError`` carrying its message, which must name the
    option (``--max-steps`` for the key ``max_steps``)."""
    import contextlib
    import io

    def call(**kw):
        from companion.__main__ import build_parser

        argv = list(command)
        for key, value in kw.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                build_parser().parse_args(argv)
        except SystemExit as exit_:
            if exit_.code:
                raise ValueError(err.getvalue()) from None

    return Spec(call, lambda: dict(valid), options,
                message_names={k: f"--{k.replace('_', '-')}" for k in options})
