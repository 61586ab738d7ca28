"""The training driver and the command line, in one process (the multi-worker path is tested with gloo in
test_demo_distributed.py)."""

import math

import pytest
import torch

from companion.demo.training import TrainConfig, train

torch.set_num_threads(1)


@pytest.mark.parametrize("optimizer", ["demo", "adamw", "signsgd", "lowcomms"])
def test_single_worker_training_runs_and_logs(optimizer):
    r = train(optimizer=optimizer, workers=1, steps=3, batch_size=2, seq_len=16, d_model=16, n_layers=1,
              n_heads=2, train_bytes=20_000)
    assert len(r["loss"]) == 3 and all(math.isfinite(v) for v in r["loss"])
    assert r["replicas_identical"] and r["bytes_received"] == [0, 0, 0]
    if optimizer in ("demo", "lowcomms"):
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


def test_train_config_rejects_configs_that_can_never_train():
    # each was accepted, then failed inside the worker processes
    with pytest.raises(ValueError, match="n_heads must divide d_model"):
        TrainConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="demo: compression_topk must be an int >= 1, got 0"):
        TrainConfig(demo={"compression_topk": 0})
    with pytest.raises(ValueError, match=r"demo holds unknown DeMo options \['topk'\]"):
        TrainConfig(demo={"topk": 8})
    with pytest.raises(ValueError, match="train_bytes must hold at least seq_len \\+ 2"):
        TrainConfig(seq_len=64, train_bytes=50)
    with pytest.raises(TypeError, match="steps must be an int"):
        TrainConfig(steps=True)
    with pytest.raises(TypeError, match="cfg must be a TrainConfig"):
        train({"workers": 1})


def test_lm_loss_and_sample_batch_reject_bad_batches():
    from companion.demo import ByteLM, lm_loss, sample_batch

    model = ByteLM(d_model=8, n_layers=1, n_heads=2, seq_len=8)
    with pytest.raises(ValueError, match=r"batch must hold bytes in \[0, 255\]"):
        lm_loss(model, torch.full((2, 5), 300))  # was an IndexError from the embedding
    with pytest.raises(ValueError, match="batch holds 12 positions"):
        lm_loss(model, torch.zeros(2, 12, dtype=torch.int64))  # was a broadcasting RuntimeError
    with pytest.raises(ValueError, match="data must hold at least seq_len \\+ 2 = 10 bytes"):
        sample_batch(torch.arange(9), 2, 8)  # was a RuntimeError from randint


def test_cli_rejects_bad_numbers_at_parse_time(capsys):
    from companion.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "train", "--workers", "0"])
    assert "argument --workers: must be an int >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "train", "--decay", "1.0"])
    assert "argument --decay" in capsys.readouterr().err


def _reference_loop(optimizer, *, lr, steps, cosine, **sizes):
    """train()'s one-worker loop written out (seeding, batches, held-out batches as documented), with torch's
    CosineAnnealingLR stepped after every optimizer step when ``cosine``: the final held-out loss."""
    import warnings

    from companion.demo import DeMo
    from companion.demo.training import ByteLM, _val_batches, corpus_bytes, lm_loss, sample_batch

    cfg = TrainConfig(optimizer=optimizer, workers=1, steps=steps, lr=lr, **sizes)
    torch.manual_seed(cfg.seed)
    net = ByteLM(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, seq_len=cfg.seq_len)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = DeMo(list(net.parameters()), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cosine else None
    data, gen = corpus_bytes(cfg.train_bytes), torch.Generator().manual_seed(cfg.seed * 1000)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        lm_loss(net, sample_batch(data, cfg.batch_size, cfg.seq_len, gen)).backward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step()
        if sched is not None:
            sched.step()
    val = corpus_bytes(max(cfg.train_bytes // 10, 4 * (cfg.seq_len + 1)), "validation")
    with torch.no_grad():
        return float(torch.stack([lm_loss(net, b) for b in _val_batches(cfg, val)]).mean())


SMALL = dict(batch_size=2, seq_len=16, d_model=16, n_layers=1, n_heads=2, train_bytes=20_000, eval_batches=2)


@pytest.mark.parametrize("optimizer", ["adamw", "demo"])
def test_schedules_match_the_written_out_loop_bit_for_bit(optimizer):
    lr = 3e-3
    by = {s: train(optimizer=optimizer, workers=1, steps=6, lr=lr, schedule=s, **SMALL)["val_loss"][-1]
          for s in ("constant", "cosine")}
    # the constant schedule is the loop without a scheduler (the default, what train did before schedule existed)
    assert by["constant"] == _reference_loop(optimizer, lr=lr, steps=6, cosine=False, **SMALL)
    assert train(optimizer=optimizer, workers=1, steps=6, lr=lr, **SMALL)["val_loss"][-1] == by["constant"]
    # cosine: torch's CosineAnnealingLR(T_max=steps), stepped after every optimizer step
    assert by["cosine"] == _reference_loop(optimizer, lr=lr, steps=6, cosine=True, **SMALL)
    assert by["cosine"] != by["constant"]


def test_schedule_is_checked_and_on_the_command_line(capsys):
    from companion.__main__ import build_parser

    assert TrainConfig().schedule == "constant"
    with pytest.raises(ValueError, match=r"schedule must be one of \['constant', 'cosine'\], got 'linear'"):
        TrainConfig(schedule="linear")
    with pytest.raises(TypeError, match="schedule must be one of"):
        TrainConfig(schedule=None)
    args = build_parser().parse_args(["demo", "train", "--schedule", "cosine"])
    assert args.schedule == "cosine"
    assert build_parser().parse_args(["demo", "train"]).schedule == "constant"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "train", "--schedule", "linear"])
    assert "argument --schedule" in capsys.readouterr().err
