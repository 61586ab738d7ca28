"""The training driver and the command line, in one process (the multi-worker path is tested with gloo in
test_demo_distributed.py)."""

import math

import pytest
import torch

from companion.demo.training import TrainConfig, train

torch.set_num_threads(1)


@pytest.mark.parametrize("optimizer", ["demo", "adamw", "signsgd"])
def test_single_worker_training_runs_and_logs(optimizer):
    r = train(optimizer=optimizer, workers=1, steps=3, batch_size=2, seq_len=16, d_model=16, n_layers=1,
              n_heads=2, train_bytes=20_000)
    assert len(r["loss"]) == 3 and all(math.isfinite(v) for v in r["loss"])
    assert r["replicas_identical"] and r["bytes_received"] == [0, 0, 0]
    if optimizer == "demo":
        assert 0 < r["bytes_sent"][0] < 4 * r["n_params"]


def test_train_config_rejects_bad_input():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        TrainConfig(workers=0)


def test_cli_registers_demo_train():
    from companion.__main__ import build_parser

    args = build_parser().parse_args(["demo", "train", "--workers", "3", "--no-dct", "--topk", "8"])
    assert args.workers == 3 and args.no_dct and args.topk == 8 and args.run.__module__ == "companion.demo.cli"
