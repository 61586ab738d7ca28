"""The bad-input sweep: every public name of every chapter, every argument, bad values of every kind.

The tables live in ``tests/badinput_<package>.py`` (see ``tests/badinput.py`` for the kinds). For each entry:
the valid call must succeed (so a bad-input failure is about the bad value), and replacing one argument by a bad
value of its kind must raise ``TypeError`` or ``ValueError`` whose message names that argument — never a deeper
exception, and never a silent answer.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badinput import NoArguments, Spec

PACKAGES = ("lab", "viz", "tom", "rebind", "demo", "hqq", "pyramidkv", "remoe")


def _tables() -> tuple[dict[str, dict[str, object]], dict[str, dict[str, Spec]]]:
    """``SPECS`` (one entry per public name) and ``CLI_SPECS`` (command lines) of every ``badinput_<package>``."""
    specs, cli = {}, {}
    for package in PACKAGES:
        try:
            module = importlib.import_module(f"badinput_{package}")
        except ModuleNotFoundError as err:
            if err.name != f"badinput_{package}":
                raise
            specs[package], cli[package] = {}, {}
            continue
        specs[package], cli[package] = module.SPECS, getattr(module, "CLI_SPECS", {})
    return specs, cli


TABLES, CLI_TABLES = _tables()
ALL = {package: {**TABLES[package], **{f"cli: {k}": v for k, v in CLI_TABLES[package].items()}}
       for package in PACKAGES}
CASES = [(package, name, spec, arg) for package, table in ALL.items() for name, spec in table.items()
         if isinstance(spec, Spec) for arg in spec.args]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_an_entry_in_the_sweep(package):
    public = set(importlib.import_module(f"companion.{package}").__all__)
    table = TABLES[package]
    missing = sorted(public - set(table))
    assert not missing, f"companion.{package}: public names without an entry in tests/badinput_{package}.py: {missing}"
    stale = sorted(set(table) - public)
    assert not stale, f"tests/badinput_{package}.py lists names that are not public: {stale}"
    for name, spec in table.items():
        assert isinstance(spec, (Spec, NoArguments)), f"{package}.{name}: {spec!r}"
        if isinstance(spec, NoArguments):
            assert spec.reason.strip(), f"{package}.{name}: say why the sweep has nothing to feed it"


@pytest.mark.parametrize(("package", "name"), [(p, n) for p, t in ALL.items() for n, s in t.items()
                                               if isinstance(s, Spec)])
def test_the_valid_call_of_each_entry_succeeds(package, name):
    spec = ALL[package][name]
    torch.manual_seed(0)
    spec.call(**spec.valid())


@pytest.mark.parametrize(("package", "name", "arg"), [(p, n, a) for p, n, _, a in CASES],
                         ids=[f"{p}.{n}.{a}" for p, n, _, a in CASES])
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_bad_argument_raises_a_clear_error_naming_it(package, name, arg, data):
    spec = ALL[package][name]
    kind = spec.args[arg]
    bad = data.draw(kind.bad(), label=f"{arg} (bad)")
    kwargs = spec.valid()
    kwargs[arg] = bad
    torch.manual_seed(0)
    with pytest.raises((TypeError, ValueError)) as info:
        spec.call(**kwargs)
    named = spec.message_names.get(arg, arg)
    assert named in str(info.value), (f"{package}.{name}({arg}={bad!r}) raised {info.type.__name__}: "
                                      f"{info.value} — the message does not name {named!r}")
