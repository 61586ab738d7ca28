"""Bad-input table of ``companion.remoe`` (see tests/badinput.py).

Everything runs on a one-layer model of width 8 with two experts (``TINY``) and a 260-token BPE trained on a few
lines (``tiny_tokenizer``); only ``load_tokenizer`` and ``corpus_ids`` read the corpus (its first 2000
characters, cached once per machine).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from badinput import Choice, Custom, Float, Int, NoArguments, Obj, Spec, Tensor, cli_spec
from companion import remoe
from companion.remoe import LMConfig, Routing, TinyLM

TINY = LMConfig(vocab_size=300, d_model=8, n_layers=1, n_heads=2, d_ff=8, num_experts=2, k=1)
_SEED = Int(low=0, high=2**32 - 1)


@functools.cache
def tiny_tokenizer():
    """A byte-level BPE of 260 tokens (ids < ``TINY.vocab_size``), trained in milliseconds."""
    docs = ["def f(x):\n    return x + 1\n" * 4, "import os\nprint(os.getcwd())\n" * 4]
    return remoe.train_tokenizer(docs, vocab_size=260)


@functools.cache
def _model(ffn: str = "remoe") -> TinyLM:
    torch.manual_seed(0)
    return TinyLM(TINY.replace(ffn=ffn)).eval()


def _ids(n: int = 40) -> torch.Tensor:
    return torch.arange(n) % TINY.vocab_size


def _routing(T: int = 3, E: int = 4) -> Routing:
    gates = torch.relu(torch.randn(T, E))
    return Routing(gates=gates, mask=gates > 0, logits=gates)


_NOT_A_MODEL = Custom((object(), "model", 3, None, torch.nn.Linear(2, 2)))
_NOT_AN_MOE_MODEL = Custom((object(), None, torch.nn.Linear(2, 2), _model("dense")))


def _moe(x, logits=None, **kw):
    return remoe.MoE(**kw)(x, logits=logits)


def _router(cls):
    def call(x, **kw):
        return cls(**kw)(x)

    return call


def _controller(sparsity, **kw):
    return remoe.LambdaController(**kw).update(sparsity)


def _train_kw() -> dict:
    return {"config": TINY, "steps": 1, "batch_size": 2, "seq_len": 8, "lr": 1e-3, "min_lr": None,
            "warmup_steps": None, "weight_decay": 0.1, "grad_clip": 1.0, "seed": 0, "log_every": 1,
            "eval_every": None, "eval_windows": 2, "train_ids": _ids(), "val_ids": _ids(), "device": "cpu",
            "show_progress": False, "snapshot_every": None, "snapshot_steps": [0, 1], "snapshot_ids": _ids(5)}


_TRAIN_ARGS = {
    "config": Obj(LMConfig), "steps": Int(low=1), "batch_size": Int(low=1), "seq_len": Int(low=2),
    "lr": Float(low=0, low_open=True), "min_lr": Float(low=0, high=1e-3, optional=True),
    "warmup_steps": Int(low=0, optional=True), "weight_decay": Float(low=0), "grad_clip": Float(low=0, optional=True),
    "seed": _SEED,
    "train_ids": Custom(("ids", [1, 2, 3], torch.arange(5), torch.arange(40).float(), torch.arange(40).reshape(4, 10),
                         torch.full((40,), 300), torch.zeros(0, dtype=torch.long))),
    "device": Custom(("gpu", 3.5, object())),
}

SPECS = {
    "EOS": NoArguments("a constant (the end-of-text token)"),
    "FFN_KINDS": NoArguments("a constant (the FFN kinds of LMConfig)"),
    "History": NoArguments("a result record returned by train (swept through train)"),
    "LogitSweep": NoArguments("a result record returned by logit_sweep (swept through logit_sweep)"),
    "Routing": NoArguments("a record returned by the routers; checked where it is read (dispatch, routing_stats)"),
    "LMConfig": Spec(
        lambda **kw: LMConfig(**kw),
        lambda: {"ffn": "remoe", "vocab_size": 300, "d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 8,
                 "num_experts": 2, "k": 1, "rope_theta": 10000.0, "norm_eps": 1e-5, "init_std": 0.02,
                 "router_init_std": 0.01, "aux_coef": 0.01, "l1": "balanced", "lam0": 1e-8, "alpha": 1.2,
                 "tie_embeddings": True},
        {"ffn": Choice(remoe.FFN_KINDS), "vocab_size": Int(low=1), "d_model": Custom((0, -8, 8.0, True, 7, 10)),
         "n_layers": Int(low=1), "n_heads": Custom((0, 2.0, True, 3, 8)), "d_ff": Int(low=1),
         "num_experts": Int(low=2), "k": Int(low=1, high=1), "rope_theta": Float(low=0, low_open=True),
         "norm_eps": Float(low=0, low_open=True), "init_std": Float(low=0, low_open=True),
         "router_init_std": Float(low=0, low_open=True), "aux_coef": Float(low=0), "l1": Choice(("balanced", "plain")),
         "lam0": Float(low=0, low_open=True), "alpha": Float(low=1, low_open=True),
         "tie_embeddings": Custom((1, "yes", None))}),
    "LambdaController": Spec(
        _controller,
        lambda: {"num_experts": 4, "k": 1, "lam0": 1e-8, "alpha": 1.2, "target": None, "sparsity": 0.5},
        {"num_experts": Int(low=2), "k": Int(low=1, high=3), "lam0": Float(low=0, low_open=True),
         "alpha": Float(low=1, low_open=True), "target": Float(low=0, high=1, low_open=True, high_open=True,
                                                               optional=True),
         "sparsity": Float(low=0, high=1)},
        message_names={"target": "target sparsity"}),
    "MoE": Spec(
        _moe,
        lambda: {"d_model": 8, "d_ff": 8, "num_experts": 4, "k": 1, "router": "topk", "aux_coef": 0.01,
                 "router_init_std": 0.01, "init_std": 0.02, "x": torch.randn(2, 3, 8), "logits": None},
        {"d_model": Int(low=1), "d_ff": Int(low=1), "num_experts": Int(low=1), "k": Int(low=1, high=4),
         "router": Choice(("relu", "topk")), "aux_coef": Float(low=0), "router_init_std": Float(low=0, low_open=True),
         "init_std": Float(low=0, low_open=True),
         "x": Custom(("x", None, [[0.0] * 8], torch.randn(3, 7), torch.randn(0, 8), torch.ones(3, 8, dtype=torch.long),
                      torch.randn(3, 8).half(), torch.tensor(1.0))),
         "logits": Custom(("logits", [[0.0] * 4] * 6, torch.zeros(6, 5), torch.zeros(5, 4),
                           torch.zeros(6, 4, dtype=torch.float64), torch.zeros(6, 4, dtype=torch.long)))}),
    "RMSNorm": Spec(
        lambda x, **kw: remoe.RMSNorm(**kw)(x),
        lambda: {"d_model": 8, "eps": 1e-5, "x": torch.randn(2, 8)},
        {"d_model": Int(low=1), "eps": Float(low=0, low_open=True),
         "x": Tensor(lambda: torch.randn(2, 8), dtype="floating")}),
    "ReLURouter": Spec(
        _router(remoe.ReLURouter),
        lambda: {"d_model": 8, "num_experts": 4, "init_std": 0.01, "x": torch.randn(3, 8)},
        {"d_model": Int(low=1), "num_experts": Int(low=1), "init_std": Float(low=0, low_open=True),
         "x": Tensor(lambda: torch.randn(3, 8), ndim=2, dtype="floating")}),
    "TopKRouter": Spec(
        _router(remoe.TopKRouter),
        lambda: {"d_model": 8, "num_experts": 4, "k": 2, "aux_coef": 0.01, "init_std": 0.01, "x": torch.randn(3, 8)},
        {"d_model": Int(low=1), "num_experts": Int(low=2), "k": Int(low=1, high=4), "aux_coef": Float(low=0),
         "init_std": Float(low=0, low_open=True), "x": Tensor(lambda: torch.randn(3, 8), ndim=2, dtype="floating")}),
    "SwiGLU": Spec(
        lambda x, **kw: remoe.SwiGLU(**kw)(x),
        lambda: {"d_model": 8, "d_ff": 4, "init_std": 0.02, "x": torch.randn(2, 8)},
        {"d_model": Int(low=1), "d_ff": Int(low=1), "init_std": Float(low=0, low_open=True),
         "x": Tensor(lambda: torch.randn(2, 8), dtype="floating")}),
    "TinyLM": Spec(
        lambda config, ids: TinyLM(config)(ids),
        lambda: {"config": TINY, "ids": torch.randint(0, 300, (2, 5))},
        {"config": Obj(LMConfig),
         "ids": Custom(("ids", None, [[1, 2]], torch.zeros(1, 0, dtype=torch.long), torch.arange(5),
                        torch.ones(2, 5), torch.tensor([[1, 300]]), torch.tensor([[-1, 2]]),
                        torch.ones(2, 5, dtype=torch.bool)))}),
    "Trainer": Spec(
        lambda **kw: remoe.Trainer(**kw),
        lambda: {k: v for k, v in _train_kw().items() if k in _TRAIN_ARGS},
        _TRAIN_ARGS),
    "train": Spec(
        lambda **kw: remoe.train(**kw),
        _train_kw,
        {**_TRAIN_ARGS, "log_every": Int(low=1), "eval_every": Int(low=1, optional=True),
         "eval_windows": Int(low=1), "show_progress": Custom((1, "yes", None)),
         "val_ids": Custom(("ids", [1, 2, 3], torch.arange(5), torch.arange(40).float(), torch.full((40,), 300))),
         "snapshot_every": Int(low=1, optional=True),
         "snapshot_steps": Custom(([2], [-1], [0.5], [True], 3, "ab", [None])),
         "snapshot_ids": Tensor(lambda: _ids(5), ndim=1, dtype="integer")}),
    "corpus_ids": Spec(
        lambda **kw: remoe.corpus_ids(**kw),
        lambda: {"split": "validation", "tokenizer": tiny_tokenizer(), "vocab_size": 4096, "max_chars": 2000},
        {"split": Choice(("train", "validation")), "tokenizer": Custom(("tokenizer", 3, object())),
         "vocab_size": Int(low=258), "max_chars": Int(low=1, optional=True)}),
    "load_tokenizer": Spec(
        lambda **kw: remoe.load_tokenizer(**kw),
        lambda: {"vocab_size": 258, "max_chars": 2000, "rebuild": False},
        {"vocab_size": Int(low=258), "max_chars": Int(low=1, optional=True), "rebuild": Custom((1, "yes", None))}),
    "train_tokenizer": Spec(
        lambda **kw: remoe.train_tokenizer(**kw),
        lambda: {"texts": ["def f(x):\n    return x\n" * 3], "vocab_size": 258},
        {"texts": Custom(("one string", 3, None, [], [""], [3], [b"bytes"])), "vocab_size": Int(low=258)}),
    "dispatch": Spec(
        lambda **kw: remoe.dispatch(**kw),
        lambda: {"x": torch.randn(3, 8), "routing": _routing(), "w_in": torch.randn(4, 8, 6),
                 "w_out": torch.randn(4, 3, 8)},
        {"x": Tensor(lambda: torch.randn(3, 8), ndim=2, dtype="floating"),
         "routing": Custom((object(), None, "routing", _routing(T=2), _routing(E=3),
                            Routing(gates=torch.ones(3, 4), mask=torch.ones(3, 4), logits=torch.ones(3, 4)),
                            Routing(gates=torch.ones(3, 4).double(), mask=torch.ones(3, 4, dtype=torch.bool),
                                    logits=torch.ones(3, 4)))),
         "w_in": Custom((None, torch.randn(4, 8, 5), torch.randn(3, 8, 6), torch.randn(8, 6),
                         torch.randn(4, 8, 6).double(), torch.ones(4, 8, 6, dtype=torch.long))),
         "w_out": Custom((None, torch.randn(4, 3, 7), torch.randn(4, 3), torch.randn(4, 3, 8).half()))}),
    "swiglu": Spec(
        lambda **kw: remoe.swiglu(**kw),
        lambda: {"x": torch.randn(3, 8), "w_in": torch.randn(8, 6), "w_out": torch.randn(3, 8)},
        {"x": Tensor(lambda: torch.randn(3, 8), ndim=2, dtype="floating"),
         "w_in": Custom((None, torch.randn(8, 5), torch.randn(7, 6), torch.randn(1, 8, 6), torch.randn(8, 6).double())),
         "w_out": Custom((None, torch.randn(3, 7), torch.randn(3), torch.randn(3, 8).half()))}),
    "switch_aux_loss": Spec(
        lambda **kw: remoe.switch_aux_loss(**kw),
        lambda: {"probs": torch.softmax(torch.randn(3, 4), -1), "mask": torch.eye(3, 4, dtype=torch.bool), "k": 1},
        {"probs": Tensor(lambda: torch.softmax(torch.randn(3, 4), -1), ndim=2, dtype="floating"),
         "mask": Custom((None, "mask", torch.eye(3, 4), torch.ones(3, 1, dtype=torch.bool),
                         torch.ones(4, 3, dtype=torch.bool))),
         "k": Int(low=1, high=4)}),
    "load_balanced_l1": Spec(
        lambda **kw: remoe.load_balanced_l1(**kw),
        lambda: {"gates": torch.relu(torch.randn(5, 4)), "k": 1, "balanced": True},
        {"gates": Tensor(lambda: torch.relu(torch.randn(5, 4)), ndim=2, dtype="floating"), "k": Int(low=1, high=4),
         "balanced": Custom((1, "yes", None))}),
    "sparsity": Spec(
        lambda **kw: remoe.sparsity(**kw), lambda: {"gates": torch.relu(torch.randn(5, 4))},
        {"gates": Tensor(lambda: torch.relu(torch.randn(5, 4)), ndim=2)}),
    "expert_load": Spec(
        lambda **kw: remoe.expert_load(**kw), lambda: {"gates": torch.relu(torch.randn(5, 4))},
        {"gates": Tensor(lambda: torch.relu(torch.randn(5, 4)), ndim=2)}),
    "routing_stats": Spec(
        lambda **kw: remoe.routing_stats(**kw), lambda: {"routings": [_routing(), _routing()]},
        {"routings": Custom(([], None, 3, "routings", [object()], [None],
                             [Routing(gates=torch.zeros(0, 4), mask=torch.zeros(0, 4, dtype=torch.bool),
                                      logits=torch.zeros(0, 4))],
                             [Routing(gates=torch.ones(3, 4), mask=torch.ones(3, 4), logits=torch.ones(3, 4))]))}),
    "rope": Spec(
        lambda **kw: remoe.rope(**kw), lambda: {"x": torch.randn(1, 2, 3, 4), "theta": 10000.0},
        {"x": Tensor(lambda: torch.randn(1, 2, 3, 4), ndim=4, dtype="floating"), "theta": Float(low=0, low_open=True)}),
    "logit_sweep": Spec(
        lambda **kw: remoe.logit_sweep(**kw),
        lambda: {"values": torch.linspace(-1, 1, 5), "expert": 0, "d_model": 4, "d_ff": 4, "num_experts": 3, "k": 1,
                 "logits": None, "seed": 0},
        {"values": Custom(("values", torch.zeros(1), torch.zeros(2, 2), torch.tensor([0.0, float("nan")]),
                           torch.tensor([True, False]), ["a", "b"], object())),
         "expert": Int(low=0, high=2), "d_model": Int(low=1), "d_ff": Int(low=1), "num_experts": Int(low=1),
         "k": Int(low=1, high=3), "seed": _SEED,
         "logits": Custom(("logits", torch.zeros(4), torch.zeros(3, 1), [0.0, float("inf"), 0.0], object()))}),
    "gradient_check": Spec(
        lambda **kw: remoe.gradient_check(**kw),
        lambda: {"values": torch.linspace(-1, 1, 3), "expert": 0, "eps": 1e-3, "d_model": 4, "d_ff": 4,
                 "num_experts": 3, "k": 1, "logits": None, "seed": 0},
        {"values": Custom(("values", torch.zeros(1), torch.tensor([0.0, float("nan")]), object())),
         "expert": Int(low=0, high=2), "eps": Float(low=0, low_open=True), "d_model": Int(low=1), "d_ff": Int(low=1),
         "num_experts": Int(low=1), "k": Int(low=1, high=3), "seed": _SEED,
         "logits": Custom(("logits", torch.zeros(4), [0.0, float("nan"), 0.0]))}),
    "lr_at": Spec(
        lambda **kw: remoe.lr_at(**kw),
        lambda: {"step": 3, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 2, "steps": 10},
        {"step": Int(low=0), "lr": Float(low=0, low_open=True), "min_lr": Float(low=0, high=1e-3),
         "warmup_steps": Int(low=0), "steps": Int(low=1)}),
    "evaluate": Spec(
        lambda **kw: remoe.evaluate(**kw),
        lambda: {"model": _model(), "ids": _ids(), "seq_len": 8, "batch_size": 2, "max_windows": 3},
        {"model": _NOT_A_MODEL, "ids": Tensor(_ids, ndim=1, dtype="integer"), "seq_len": Int(low=2, high=39),
         "batch_size": Int(low=1), "max_windows": Int(low=1)}),
    "measure_routing": Spec(
        lambda **kw: remoe.measure_routing(**kw),
        lambda: {"model": _model(), "ids": _ids(), "seq_len": 8, "max_tokens": 32, "batch_size": 2},
        {"model": _NOT_AN_MOE_MODEL,
         "ids": Tensor(_ids, ndim=1, dtype="integer"), "seq_len": Int(low=1, high=32), "max_tokens": Int(low=8),
         "batch_size": Int(low=1)}),
    "routing_snapshot": Spec(
        lambda **kw: remoe.routing_snapshot(**kw), lambda: {"model": _model(), "ids": _ids(6)},
        {"model": _NOT_AN_MOE_MODEL, "ids": Tensor(lambda: _ids(6), ndim=1, dtype="integer")}),
    "expert_counts": Spec(
        lambda **kw: remoe.expert_counts(**kw), lambda: {"model": _model(), "ids": _ids(6)},
        {"model": _NOT_AN_MOE_MODEL, "ids": Tensor(lambda: _ids(6), ndim=1, dtype="integer")}),
    "text_expert_counts": Spec(
        lambda **kw: remoe.text_expert_counts(**kw),
        lambda: {"model": _model(), "tokenizer": tiny_tokenizer(), "text": "import os"},
        {"model": _NOT_AN_MOE_MODEL, "tokenizer": Custom((None, "tok", object())),
         "text": Custom(("", None, 3, b"bytes", ["import"]))}),
    "token_frequency": Spec(
        lambda **kw: remoe.token_frequency(**kw), lambda: {"ids": _ids(), "vocab_size": 300},
        {"ids": Tensor(_ids, ndim=1, dtype="integer"), "vocab_size": Int(low=40)}),
    "experts_vs_frequency": Spec(
        lambda **kw: remoe.experts_vs_frequency(**kw),
        lambda: {"model": _model(), "ids": _ids(), "frequency": np.full(300, 1 / 300), "bins": 2, "seq_len": 8,
                 "max_tokens": 32},
        {"model": _NOT_AN_MOE_MODEL, "ids": Tensor(_ids, ndim=1, dtype="integer"),
         "frequency": Custom((None, "frequency", np.ones(10), np.full(300, np.nan), -np.ones(300), [["a"] * 300])),
         "bins": Int(low=1), "seq_len": Int(low=1, high=32), "max_tokens": Int(low=8)}),
}

CLI_SPECS = {
    f"remoe {name}": cli_spec(["remoe", name], {"seed": "0", "threads": "0"},
                              {"seed": Int(low=0, high=2**32 - 1), "threads": Int(low=0)})
    for name in ("compare", "alpha", "l1", "experts")
}
