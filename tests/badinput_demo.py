"""Bad-input table of ``companion.demo`` (see tests/badinput.py)."""

from __future__ import annotations

import functools
import warnings

import torch
import torch.distributed as dist

from badinput import Choice, Custom, Float, Int, NoArguments, Spec, Tensor, cli_spec
from companion import demo
from companion.demo.training import SCHEDULES
from companion.lab.corpus import SPLITS

_SHAPES = Custom(((0, 3), (-1, 3), (2.5, 3), (True, 3), "83", None, 5, torch.zeros(2)))


@functools.cache
def _tiny_lm():
    """A ByteLM with 8-dimensional states and 8 positions (milliseconds per call)."""
    torch.manual_seed(0)
    return demo.ByteLM(d_model=8, n_layers=1, n_heads=2, seq_len=8)


def _tiny_config(**kw):
    return demo.TrainConfig(**{**dict(optimizer="demo", workers=1, steps=1, batch_size=2, seq_len=8, d_model=8,
                                     n_layers=1, n_heads=2, train_bytes=1000, eval_batches=1,
                                     demo={"compression_topk": 4}), **kw})


def _demo_step(**kw):
    """Build DeMo and take one step (so the valid call exercises the whole optimizer)."""
    opt = demo.DeMo(**kw)
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.step()
    return opt


def _demo_valid():
    return {"params": [torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.randn(8))], "lr": 0.1,
            "compression_decay": 0.999, "compression_topk": 4, "compression_chunk": 4, "weight_decay": 0.0,
            "error_feedback": True, "transform": "dct", "tiling": "2d", "wire_format": "compact",
            "process_group": None, "world_size": 1, "nonfinite": "raise", "timeout_s": 30.0, "basis": "official"}


def _lowcomms_step(**kw):
    """Build DeMoLowComms and take two steps (the second applies the first's payload when overlapped)."""
    opt = demo.DeMoLowComms(**kw)
    for _ in range(2):
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.ones_like(p)
        opt.step()
    return opt


def _lowcomms_valid():
    return {"params": [torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.randn(8))], "lr": 0.1,
            "momentum": 0.99, "compression_ratio": 0.01, "feedback_strength": 1.0, "weight_decay": 0.01,
            "nesterov": True, "overlapped": True, "faithful": False, "process_group": None, "world_size": 1,
            "nonfinite": "raise", "timeout_s": 30.0}


def _official_valid():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 4), (6,)]
    return {"params": [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]],
            "grads": [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]],
            "deltas": [[torch.zeros(s, dtype=torch.float64) for s in shapes]],
            "lr": 0.1, "beta": 0.9, "topk": 2, "chunk": 4, "wd": 0.0}


_REPLICAS = Custom(([], [[]], "params", [[torch.zeros(2, 2, 2, dtype=torch.float64), torch.zeros(6)]],
                    [[torch.zeros(4, 4, dtype=torch.int64), torch.zeros(6, dtype=torch.int64)]],
                    [[torch.zeros(4, 4, dtype=torch.float64)]], [[1.0, 2.0]],
                    [[torch.zeros(4, 5, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)]]))


def _agg_idx():
    return torch.tensor([[[0, 1]], [[1, 2]]])


def _agg_val():
    return torch.tensor([[[1.0, 3.0]], [[6.0, 9.0]]])


SPECS = {
    "TILINGS": NoArguments("a constant (the tilings of the chunked DCT)"),
    "TRANSFORMS": NoArguments("a constant (DeMo's transforms)"),
    "BASES": NoArguments("a constant (the DCT bases DeMo can use)"),
    "NONFINITE": NoArguments("a constant (what DeMo does with a non-finite gradient)"),
    "WIRE_FORMATS": NoArguments("a constant (the wire formats)"),
    "OPTIMIZERS": NoArguments("a constant (the trainer's optimizers)"),
    "SCHEDULES": NoArguments("a constant (the trainer's learning-rate schedules)"),
    "olmo_1b_shapes": NoArguments("a function without arguments (OLMo-1B's parameter shapes)"),
    "ByteLM": Spec(
        lambda x, **kw: demo.ByteLM(**kw)(x),
        lambda: {"d_model": 8, "n_layers": 1, "n_heads": 2, "seq_len": 8, "x": torch.randint(0, 256, (2, 8))},
        {"d_model": Int(low=1), "n_layers": Int(low=1), "n_heads": Int(low=1), "seq_len": Int(low=8),
         "x": Tensor(lambda: torch.randint(0, 256, (2, 8)), ndim=2, dtype="integer")}),
    "DeMo": Spec(
        _demo_step, _demo_valid,
        {"params": Custom(([], [3], "params", 3, None, torch.zeros(3), [torch.zeros(0, 4)])),
         "lr": Float(low=0.0), "compression_decay": Float(low=0.0, high=1.0, high_open=True),
         "compression_topk": Int(low=1), "compression_chunk": Int(low=1), "weight_decay": Float(low=0.0),
         "error_feedback": Custom((1, 0, "yes", None)), "transform": Choice(demo.TRANSFORMS),
         "tiling": Choice(demo.TILINGS), "wire_format": Choice(demo.WIRE_FORMATS),
         "process_group": Custom((object(), "gloo", 3, dist)), "world_size": Int(low=1, high=1, optional=True),
         "nonfinite": Choice(demo.NONFINITE), "timeout_s": Float(low=0.0, low_open=True, optional=True),
         "basis": Choice(demo.BASES)}),
    "DeMoLowComms": Spec(
        _lowcomms_step, _lowcomms_valid,
        {"params": Custom(([], [3], "params", 3, None, torch.zeros(3), [torch.zeros(0, 4)])),
         "lr": Float(low=0.0), "momentum": Float(low=0.0, high=1.0, high_open=True),
         "compression_ratio": Float(low=0.0, low_open=True, high=1.0), "feedback_strength": Float(low=0.0),
         "weight_decay": Float(low=0.0), "nesterov": Custom((1, 0, "yes", None)),
         "overlapped": Custom((1, 0, "yes", None)), "faithful": Custom((1, 0, "yes", None)),
         "process_group": Custom((object(), "gloo", 3, dist)), "world_size": Int(low=1, high=1, optional=True),
         "nonfinite": Choice(demo.NONFINITE), "timeout_s": Float(low=0.0, low_open=True, optional=True)}),
    "pack": Spec(
        lambda **kw: demo.pack(**kw),
        lambda: {"idx": torch.tensor([[0, 127]]), "val": torch.tensor([[1.0, -2.0]]), "faithful": False},
        {"idx": Tensor(lambda: torch.tensor([[0, 127]]), dtype="integer"),
         "val": Tensor(lambda: torch.tensor([[1.0, -2.0]]), dtype="floating"), "faithful": Custom((1, "no", None))}),
    "unpack": Spec(
        lambda **kw: demo.unpack(**kw), lambda: {"packed": torch.tensor([[0, 255]], dtype=torch.uint8)},
        {"packed": Custom((torch.tensor([1, 2]), torch.zeros(2), "bytes", None, [1, 2]))}),
    "lowcomms_topk": Spec(
        lambda **kw: demo.lowcomms_topk(**kw), lambda: {"compression_ratio": 0.01, "value_bytes": 4},
        {"compression_ratio": Float(low=0.0, low_open=True, high=1.0), "value_bytes": Custom((3, 0, 2.0, "4", None))}),
    "lowcomms_wire_bytes": Spec(
        lambda **kw: demo.lowcomms_wire_bytes(**kw),
        lambda: {"shapes": [(768, 768), (768,)], "compression_ratio": 0.01, "value_bytes": 4},
        {"shapes": Custom(("shapes", 3, None, [(0, 3)], [(2.5,)], [5], torch.zeros(3))),
         "compression_ratio": Float(low=0.0, low_open=True, high=1.0), "value_bytes": Custom((3, 0, 2.0, "4", None))}),
    "TrainConfig": Spec(
        lambda **kw: demo.TrainConfig(**kw),
        lambda: dict(optimizer="demo", workers=1, steps=1, batch_size=2, seq_len=8, d_model=8, n_layers=1, n_heads=2,
                     lr=1e-3, schedule="cosine", weight_decay=0.0, signsgd_momentum=0.9, demo={"compression_topk": 4},
                     train_bytes=1000,
                     eval_every=0,
                     eval_batches=1, seed=0, timeout_s=60.0),
        {"optimizer": Choice(demo.OPTIMIZERS), "workers": Int(low=1), "steps": Int(low=1), "batch_size": Int(low=1),
         "seq_len": Int(low=1, high=998), "d_model": Int(low=1), "n_layers": Int(low=1), "n_heads": Int(low=1),
         "lr": Float(low=0.0), "schedule": Choice(SCHEDULES), "weight_decay": Float(low=0.0),
         "signsgd_momentum": Float(low=0.0, high=1.0, high_open=True),
         "demo": Custom(({"compression_topk": 0}, {"topk": 3}, [1], None, {"transform": "fft"},
                         {"compression_decay": 1.0}, {"error_feedback": "no"}, {3: 1})),
         "train_bytes": Int(low=10), "eval_every": Int(low=0), "eval_batches": Int(low=1),
         "seed": Int(low=0, high=2**32 - 1), "timeout_s": Float(low=0.0, low_open=True)}),
    "train": Spec(
        lambda **kw: demo.train(**kw), lambda: {"cfg": _tiny_config(), "steps": 1, "workers": 1},
        {"cfg": Custom(("cfg", 3, {"workers": 1}, object())), "steps": Int(low=1), "workers": Int(low=1)}),
    "corpus_bytes": Spec(
        lambda **kw: demo.corpus_bytes(**kw), lambda: {"n": 100, "split": "validation"},
        {"n": Int(low=1), "split": Choice(SPLITS)}),
    "sample_batch": Spec(
        lambda **kw: demo.sample_batch(**kw),
        lambda: {"data": torch.arange(100) % 256, "batch_size": 2, "seq_len": 8,
                 "generator": torch.Generator().manual_seed(0)},
        {"data": Tensor(lambda: torch.arange(100) % 256, ndim=1, dtype="integer"), "batch_size": Int(low=1),
         "seq_len": Int(low=1, high=98), "generator": Custom((3, "gen", object(), 0.5))}),
    "lm_loss": Spec(
        lambda **kw: demo.lm_loss(**kw), lambda: {"model": _tiny_lm(), "batch": torch.randint(0, 256, (2, 9))},
        {"model": Custom(("model", None, 3, object())),
         "batch": Tensor(lambda: torch.randint(0, 256, (2, 9)), ndim=2, dtype="integer")}),
    "official_step": Spec(
        lambda **kw: demo.official_step(**kw), _official_valid,
        {"params": _REPLICAS, "grads": _REPLICAS, "deltas": _REPLICAS, "lr": Float(low=0.0),
         "beta": Float(low=0.0, high=1.0, high_open=True), "topk": Int(low=1), "chunk": Int(low=1),
         "wd": Float(low=0.0)}),
    # ------------------------------------------------------------------ the chunked DCT
    "chunk_size": Spec(
        lambda **kw: demo.chunk_size(**kw), lambda: {"n": 768, "s": 64}, {"n": Int(low=1), "s": Int(low=1)}),
    "matrix_shape": Spec(
        lambda **kw: demo.matrix_shape(**kw), lambda: {"shape": (8, 4, 3, 3)}, {"shape": _SHAPES}),
    "tile_shape": Spec(
        lambda **kw: demo.tile_shape(**kw), lambda: {"shape": (768, 768), "s": 64, "tiling": "2d"},
        {"shape": _SHAPES, "s": Int(low=1), "tiling": Choice(demo.TILINGS)}),
    "dct_matrix": Spec(
        lambda **kw: demo.dct_matrix(**kw), lambda: {"n": 4, "dtype": torch.float64, "device": "cpu"},
        {"n": Int(low=1), "dtype": Custom((torch.int64, torch.bool, "float32", None)),
         "device": Custom(("gpu", "cpu:x", 3.5, object()))}),
    "to_tiles": Spec(
        lambda **kw: demo.to_tiles(**kw), lambda: {"x": torch.randn(4, 6), "tile": (2, 3)},
        {"x": Tensor(lambda: torch.randn(4, 6)),
         "tile": Custom(((4, 4), (5,), (0, 3), (2, 3, 1), (), "23", None, (2.5, 3), 6))}),
    "from_tiles": Spec(
        lambda **kw: demo.from_tiles(**kw), lambda: {"tiles": torch.randn(4, 2, 3), "shape": (4, 6)},
        {"tiles": Tensor(lambda: torch.randn(4, 2, 3), ndim=3),
         "shape": Custom(((6, 4), (24,), (4,), (4, 5), (0, 6), (-4, -6), (4.0, 6), "46", None))}),
    "encode": Spec(
        lambda **kw: demo.encode(**kw), lambda: {"tiles": torch.randn(3, 4, 4)},
        {"tiles": Tensor(lambda: torch.randn(3, 4, 4), ndim=3, dtype="floating")}),
    "decode": Spec(
        lambda **kw: demo.decode(**kw), lambda: {"coeffs": torch.randn(3, 4, 4)},
        {"coeffs": Tensor(lambda: torch.randn(3, 4, 4), ndim=3, dtype="floating")}),
    "decode_sparse": Spec(
        lambda **kw: demo.decode_sparse(**kw),
        lambda: {"idx": torch.tensor([[0, 5]]), "val": torch.randn(1, 2, dtype=torch.float64), "tile": (2, 3)},
        {"idx": Tensor(lambda: torch.tensor([[0, 5]]), ndim=2, dtype="integer"),
         "val": Tensor(lambda: torch.randn(1, 2, dtype=torch.float64), ndim=2, dtype="floating"),
         "tile": Custom(((2,), (1, 1), (0, 3), (2, 3, 4), (), "23", None, (2.0, 3)))}),
    # ------------------------------------------------------------------ compression and bytes
    "topk_compress": Spec(
        lambda **kw: demo.topk_compress(**kw), lambda: {"coeffs": torch.randn(3, 2, 4), "k": 2},
        {"coeffs": Tensor(lambda: torch.randn(3, 2, 4), ndim=3, dtype="floating"), "k": Int(low=1)}),
    "clip_topk": Spec(
        lambda **kw: demo.clip_topk(**kw), lambda: {"k": 4, "length": 8, "warn": False},
        {"k": Int(low=1), "length": Int(low=1), "warn": Custom((1, "yes", None))}),
    "decompress": Spec(
        lambda **kw: demo.decompress(**kw),
        lambda: {"idx": torch.tensor([[0, 3], [1, 2]]), "val": torch.randn(2, 2), "length": 4},
        {"idx": Tensor(lambda: torch.tensor([[0, 3], [1, 2]]), ndim=2, dtype="integer"),
         "val": Tensor(lambda: torch.randn(2, 2), ndim=2, dtype="floating"), "length": Int(low=4)}),
    "aggregate": Spec(
        lambda **kw: demo.aggregate(**kw), lambda: {"idx": _agg_idx(), "val": _agg_val(), "length": 5},
        {"idx": Tensor(_agg_idx, ndim=3, dtype="integer"), "val": Tensor(_agg_val, ndim=3, dtype="floating"),
         "length": Int(low=3)}),
    "index_dtype": Spec(
        lambda **kw: demo.index_dtype(**kw), lambda: {"length": 4096, "wire_format": "compact"},
        {"length": Int(low=1), "wire_format": Choice(demo.WIRE_FORMATS)}),
    "wire_bytes": Spec(
        lambda **kw: demo.wire_bytes(**kw),
        lambda: {"shape": (768, 768), "k": 32, "chunk": 64, "wire_format": "compact", "value_bytes": 4,
                 "tiling": "2d"},
        {"shape": _SHAPES, "k": Int(low=1), "chunk": Int(low=1), "wire_format": Choice(demo.WIRE_FORMATS),
         "value_bytes": Int(low=1), "tiling": Choice(demo.TILINGS)}),
    "model_wire_bytes": Spec(
        lambda **kw: demo.model_wire_bytes(**kw), lambda: {"shapes": [(768, 768), (768,)], "k": 32},
        {"shapes": Custom(("shapes", 3, None, [(0, 3)], [(2.5,)], [5], torch.zeros(3))), "k": Int(low=1)}),
    "allreduce_bytes": Spec(
        lambda **kw: demo.allreduce_bytes(**kw), lambda: {"numel": 1000, "world_size": 2, "value_bytes": 4},
        {"numel": Int(low=0), "world_size": Int(low=1), "value_bytes": Int(low=1)}),
    "allgather_received_bytes": Spec(
        lambda **kw: demo.allgather_received_bytes(**kw), lambda: {"tx_bytes": 100, "world_size": 2},
        {"tx_bytes": Int(low=0), "world_size": Int(low=1)}),
    "topk_energy_share": Spec(
        lambda **kw: demo.topk_energy_share(**kw),
        lambda: {"x": torch.randn(8, 8), "k": 4, "chunk": 4, "transform": "dct", "tiling": "2d"},
        {"x": Tensor(lambda: torch.randn(8, 8), dtype="floating", finite=True), "k": Int(low=1),
         "chunk": Int(low=1), "transform": Choice(("dct", "identity")), "tiling": Choice(demo.TILINGS)}),
}

CLI_SPECS = {
    "demo train": cli_spec(
        ["demo", "train"],
        {"workers": "2", "steps": "0", "lr": "0.001", "schedule": "cosine", "topk": "32", "chunk": "64",
         "decay": "0.999", "seed": "0",
         "timeout_s": "60"},
        {"workers": Int(low=1), "steps": Int(low=0), "lr": Float(low=0.0), "schedule": Choice(SCHEDULES),
         "topk": Int(low=1), "chunk": Int(low=1),
         "decay": Float(low=0.0, high=1.0, high_open=True), "seed": Int(low=0, high=2**32 - 1),
         "timeout_s": Float(low=0.0, low_open=True)}),
}
