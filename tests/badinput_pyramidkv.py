"""Bad-input table of ``companion.pyramidkv`` (see tests/badinput.py).

Functions that run a model get the two-layer random Llama of ``badinput_lab.tiny_lm`` (vocabulary 32, two
query heads sharing one KV head): milliseconds per call, no download.
"""

from __future__ import annotations

import functools

import torch

from badinput import Choice, Custom, Float, Int, NoArguments, Obj, Spec, Tensor, cli_spec
from badinput_lab import tiny_lm
from companion import pyramidkv as P

Q_LEN = 12  # prompt length of the tiny prefill


def _ids() -> torch.Tensor:
    return (torch.arange(Q_LEN) * 7 % 32)[None]


@functools.cache
def _prefill() -> P.Prefill:
    return P.prefill(tiny_lm(), _ids())


def _rand(*shape) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


_NOT_A_MODEL = Custom((None, 3, object(), "model", torch.nn.Linear(2, 2)))
_POOLING = Custom(("median", "", 3.5, True))  # None is a valid pooling (no smoothing)
_KERNEL = Custom((4, 0, -3, 5.0, True, "5", None))
_MASS = Float(low=0.0, high=1.0, low_open=True)


def _compress_valid() -> dict:
    return {"pre": _prefill(), "method": "pyramidkv", "capacity": 6, "window": 2, "kernel": 3, "pooling": "maxpool",
            "beta": 20, "schedule": "official", "sink": 1, "granularity": "kv"}


def _greedy_valid() -> dict:
    pre = _prefill()
    return {"model": tiny_lm(), "pre": pre, "cache": P.compress(pre, "snapkv", capacity=6, window=2)[0],
            "max_new_tokens": 2, "suffix": None}


SPECS = {
    "METHODS": NoArguments("a constant (the compression methods compress knows)"),
    "SCHEDULES": NoArguments("a constant (the budget schedules layer_budgets knows)"),
    "GRANULARITIES": NoArguments("a constant (the scoring granularities window_scores knows)"),
    "Funnel": NoArguments("a record returned by funnel"),
    "Prefill": NoArguments("a record returned by prefill; compress and greedy_continue check its type"),
    "layer_budgets": Spec(
        lambda **kw: P.layer_budgets(**kw),
        lambda: {"capacity": 64, "window": 8, "num_layers": 4, "prompt_len": 200, "beta": 20, "schedule": "official"},
        {"capacity": Int(low=1), "window": Int(low=1), "num_layers": Int(low=1), "prompt_len": Int(low=1),
         "beta": Float(low=1.0), "schedule": Choice(P.SCHEDULES)}),
    "regime": Spec(
        lambda **kw: P.regime(**kw), lambda: {"capacity": 64, "window": 8, "prompt_len": 200},
        {"capacity": Int(low=1), "window": Int(low=1), "prompt_len": Int(low=1)}),
    "overspend": Spec(
        lambda **kw: P.overspend(**kw), lambda: {"budgets": [70, 56, 42], "capacity": 64, "window": 8},
        {"budgets": Custom(([], [-1, 3], [1.5], [True], "abc", None, 3)), "capacity": Int(low=1),
         "window": Int(low=1)}),
    "cache_bytes": Spec(
        lambda **kw: P.cache_bytes(**kw),
        lambda: {"num_layers_tokens": [14, 30], "heads": 3, "head_dim": 64, "bytes_per_value": 2},
        {"num_layers_tokens": Custom(([-5], [1.5], [True], "ab", None, 3)), "heads": Int(low=1),
         "head_dim": Int(low=1), "bytes_per_value": Int(low=1)}),
    "stored_bytes": Spec(
        lambda **kw: P.stored_bytes(**kw), lambda: {"cache": _prefill().cache},
        {"cache": Custom((None, 3, object(), "cache", [torch.zeros(2)]))}),
    "keep_positions": Spec(
        lambda **kw: P.keep_positions(**kw), lambda: {"scores": _rand(1, 2, 6), "budget": 3},
        {"scores": Tensor(lambda: _rand(1, 2, 6), ndim=3, dtype="floating"), "budget": Int(low=0)}),
    "select_tokens": Spec(
        lambda **kw: P.select_tokens(**kw),
        lambda: {"keys": _rand(1, 1, 8, 4), "values": _rand(1, 1, 8, 4), "scores": _rand(1, 2, 6), "budget": 3,
                 "window": 2},
        {"keys": Tensor(lambda: _rand(1, 1, 8, 4), ndim=4, dtype="floating"),
         "values": Tensor(lambda: _rand(1, 1, 8, 4), ndim=4, dtype="floating"),
         "scores": Tensor(lambda: _rand(1, 2, 6), ndim=3, dtype="floating"),
         "budget": Int(low=0), "window": Int(low=0, high=7)}),
    "window_scores": Spec(
        lambda **kw: P.window_scores(**kw),
        lambda: {"queries": _rand(1, 2, 8, 4), "keys": _rand(1, 1, 8, 4), "window": 2, "pooling": "avgpool",
                 "kernel": 3, "granularity": "kv"},
        {"queries": Tensor(lambda: _rand(1, 2, 8, 4), ndim=4, dtype="floating"),
         "keys": Tensor(lambda: _rand(1, 1, 8, 4), ndim=4, dtype="floating"),
         "window": Int(low=1, high=7), "pooling": _POOLING, "kernel": _KERNEL,
         "granularity": Choice(P.GRANULARITIES)}),
    "queries_keys": Spec(
        lambda **kw: P.queries_keys(**kw), lambda: {"model": tiny_lm(), "input_ids": _ids(), "cache": None},
        {"model": _NOT_A_MODEL, "input_ids": Tensor(_ids, ndim=2, dtype="integer"),
         "cache": Custom((3, "cache", object(), {}))}),
    "expand_kv_heads": Spec(
        lambda **kw: P.expand_kv_heads(**kw), lambda: {"model": tiny_lm()}, {"model": _NOT_A_MODEL}),
    "funnel": Spec(
        lambda **kw: P.funnel(**kw), lambda: {"model": tiny_lm(), "input_ids": _ids(), "window": 4, "mass": 0.9},
        {"model": _NOT_A_MODEL, "input_ids": Tensor(_ids, ndim=2, dtype="integer"),
         "window": Int(low=1, high=Q_LEN - 1), "mass": _MASS}),
    "funnel_stats": Spec(
        lambda **kw: P.funnel_stats(**kw), lambda: {"scores": _rand(2, 6) + 0.1, "mass": 0.9},
        {"scores": Tensor(lambda: _rand(2, 6) + 0.1, ndim=2, dtype="floating", finite=True), "mass": _MASS}),
    "prefill": Spec(
        lambda **kw: P.prefill(**kw), lambda: {"model": tiny_lm(), "input_ids": _ids()},
        {"model": _NOT_A_MODEL, "input_ids": Tensor(_ids, ndim=2, dtype="integer")}),
    "compress": Spec(
        lambda **kw: P.compress(**kw), _compress_valid,
        {"pre": Obj(P.Prefill), "method": Choice(P.METHODS), "capacity": Int(low=1), "window": Int(low=1),
         "kernel": _KERNEL, "pooling": _POOLING, "beta": Float(low=1.0),
         "schedule": Choice(P.SCHEDULES), "sink": Int(low=0), "granularity": Choice(("kv", "kv_pool_first"))}),
    "greedy_continue": Spec(
        lambda **kw: P.greedy_continue(**kw), _greedy_valid,
        {"model": _NOT_A_MODEL, "pre": Obj(P.Prefill), "cache": Custom((None, 3, object(), "cache")),
         "max_new_tokens": Int(low=1),
         "suffix": Custom((torch.tensor([[1.5]]), torch.tensor([1, 2]), torch.tensor([[100]]), torch.tensor([[-1]]),
                           "ids", [[1, 2]]))}),
}

CLI_SPECS = {  # `pyramidkv retrieval` has no numeric options (only --full, --resume, --kv-granularity, --device)
    "pyramidkv long": cli_spec(["pyramidkv", "long"], {"lengths": "512", "prompts": "2", "threads": "1",
                                                        "device": "cpu"},
                               {"lengths": Int(low=64), "prompts": Int(low=1), "threads": Int(low=0),
                                "device": Custom(("gpu", "cuda:x", "meta"))}),
}
