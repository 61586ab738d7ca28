"""The DeMo chapter's experiment helpers: momentum snapshots, energy curves, byte scaling, the sweep driver."""

import math

import pytest
import torch

from companion.demo import allreduce_bytes, model_wire_bytes, topk_energy_share
from companion.demo.cli import best_lrs, family_lr
from companion.demo.experiments import (
    SETTINGS,
    energy_curves,
    momentum_snapshot,
    received_vs_workers,
    run_setting,
    sweep,
)
from companion.demo.training import TrainConfig, train

torch.set_num_threads(1)
TINY = dict(d_model=16, n_layers=1, n_heads=2, seq_len=16, batch_size=2, train_bytes=20_000)


def test_momentum_snapshot_kinds_and_relations():
    snap = momentum_snapshot(3, **{k: TINY[k] for k in ("d_model", "n_layers", "n_heads", "seq_len")})
    assert set(snap) == {"demo", "momentum", "gradient"}
    names = set(snap["gradient"])
    assert names == set(snap["demo"]) == set(snap["momentum"]) and "head.weight" in names
    for n in names:
        g, m, d = snap["gradient"][n], snap["momentum"][n], snap["demo"][n]
        assert g.dim() == 2 and g.shape == m.shape == d.shape
        # error feedback removed energy from DeMo's momentum that the plain momentum still holds
        assert float(d.norm()) < float(m.norm())
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        momentum_snapshot(-1)


def test_momentum_snapshot_zero_steps_is_lr_times_gradient():
    snap = momentum_snapshot(0, lr=0.5, **{k: TINY[k] for k in ("d_model", "n_layers", "n_heads", "seq_len")})
    for n, g in snap["gradient"].items():
        torch.testing.assert_close(snap["momentum"][n], 0.5 * g)
        torch.testing.assert_close(snap["demo"][n], 0.5 * g)


def _snapshot_loop(steps, beta, *, lr=1e-3, seed=0, **sizes):
    """momentum_snapshot written out with DeMo built for ``compression_decay=beta``: {"momentum", "demo"}."""
    import warnings

    from companion.demo import DeMo
    from companion.demo.training import ByteLM, corpus_bytes, lm_loss, sample_batch

    cfg = TrainConfig(workers=1, seed=seed, **sizes)
    torch.manual_seed(seed)
    net = ByteLM(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, seq_len=cfg.seq_len)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = DeMo(net.parameters(), lr=lr, compression_decay=beta)
    mats = {n: p for n, p in net.named_parameters() if p.dim() == 2}
    plain = {n: torch.zeros_like(p) for n, p in mats.items()}
    data, gen = corpus_bytes(cfg.train_bytes), torch.Generator().manual_seed(seed)
    for step in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        lm_loss(net, sample_batch(data, cfg.batch_size, cfg.seq_len, gen)).backward()
        if step == steps:
            break
        with torch.no_grad():
            for n, p in mats.items():
                plain[n].mul_(beta).add_(p.grad, alpha=lr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step()
    with torch.no_grad():
        return {"momentum": {n: beta * plain[n] + lr * p.grad for n, p in mats.items()},
                "demo": {n: beta * opt.state[p]["delta"] + lr * p.grad for n, p in mats.items()}}


SIZES = {k: TINY[k] for k in ("d_model", "n_layers", "n_heads", "seq_len")}


def test_momentum_snapshot_default_decay_is_demos_and_matches_the_written_out_loop():
    import inspect

    from companion.demo import DeMo

    default = inspect.signature(momentum_snapshot).parameters["compression_decay"].default
    assert default == inspect.signature(DeMo).parameters["compression_decay"].default == 0.999
    snap = momentum_snapshot(4, **SIZES)
    for beta, got in ((0.999, snap), (0.9, momentum_snapshot(4, compression_decay=0.9, **SIZES))):
        ref = _snapshot_loop(4, beta, **SIZES)
        for kind in ("momentum", "demo"):
            assert set(got[kind]) == set(ref[kind])
            for n in ref[kind]:
                assert torch.equal(got[kind][n], ref[kind][n]), (beta, kind, n)
    other = momentum_snapshot(4, compression_decay=0.9, **SIZES)
    assert not torch.equal(other["momentum"]["head.weight"], snap["momentum"]["head.weight"])


def test_momentum_snapshot_without_decay_keeps_only_the_last_gradient():
    # β = 0: both momenta are η g of the last batch, whatever came before
    snap = momentum_snapshot(3, lr=0.5, compression_decay=0.0, **SIZES)
    for n, g in snap["gradient"].items():
        torch.testing.assert_close(snap["momentum"][n], 0.5 * g)
        torch.testing.assert_close(snap["demo"][n], 0.5 * g)


@pytest.mark.parametrize(("bad", "error"), [(1.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                                            ("0.9", TypeError), (None, TypeError), (True, TypeError)])
def test_momentum_snapshot_rejects_a_bad_decay(bad, error):
    with pytest.raises(error, match="compression_decay must be"):
        momentum_snapshot(1, compression_decay=bad, **SIZES)


def test_energy_curves_match_topk_energy_share_and_are_monotone():
    torch.manual_seed(0)
    x = {"a": torch.randn(64, 128)}
    e = energy_curves(x, [1, 4, 4096], chunk=64)["a"]
    assert e["shape"] == [64, 128]
    assert e["dct"][1] == pytest.approx(topk_energy_share(x["a"], 4, transform="dct"))
    assert e["dct"] == sorted(e["dct"]) and e["raw"] == sorted(e["raw"])
    assert e["dct"][-1] == pytest.approx(1.0) and e["raw"][-1] == pytest.approx(1.0)
    # a smooth tensor: the DCT compacts it far better than the raw basis
    i = torch.arange(64.0)
    smooth = {"s": torch.cos(math.pi * i[:, None] / 64) * torch.cos(math.pi * i[None, :] / 64)}
    s = energy_curves(smooth, [1])["s"]
    assert s["dct"][0] > 0.5 > s["raw"][0]
    with pytest.raises(ValueError, match=r"ks\[0\] must be an int >= 1, got 0"):
        energy_curves(x, [0])


def test_received_vs_workers_formulas_and_breakeven():
    shapes = [(64, 64), (256, 64)]
    r = received_vs_workers(shapes, [1, 2, 8])
    tx = model_wire_bytes(shapes, k=32)
    assert r["tx"] == tx and r["numel"] == 64 * 64 + 256 * 64
    assert r["allgather"] == [0, tx, 7 * tx]
    assert r["allreduce"] == [allreduce_bytes(r["numel"], w) for w in (1, 2, 8)]
    W = r["breakeven"]  # first W where the all-gather receives more than the ring all-reduce
    assert (W - 1) * tx > allreduce_bytes(r["numel"], W)
    assert (W - 2) * tx <= allreduce_bytes(r["numel"], W - 1)
    # the brief: k=32, s=64, fp32 compact ~ 8P / (P/4096*32*6) -> ~170; official (12 B) ~85
    assert received_vs_workers([(4096, 4096)], [2], wire_format="official")["breakeven"] == 86
    # against a bf16 all-reduce (2 bytes per value) the break-even halves: OLMo-1B at k = 32, official wire: 43
    from companion.demo import olmo_1b_shapes

    assert received_vs_workers(olmo_1b_shapes(), [2], wire_format="official", value_bytes=2)["breakeven"] == 43
    r = received_vs_workers(olmo_1b_shapes(), [64], wire_format="official", value_bytes=2)
    assert 1.4 < r["allgather"][0] / r["allreduce"][0] < 1.6  # the all-gather receives about 1.5x more at W = 64
    low = received_vs_workers([(4096, 4096)], [2], wire_format="lowcomms")
    assert low["tx"] == 4096 * 4096 // 128 * 5 and low["breakeven"] == 8 * 4096 * 4096 // low["tx"] + 1


def test_run_setting_single_worker_and_bad_name():
    r = run_setting("DeMo k=8", workers=1, steps=4, eval_every=2, **TINY)
    assert r["setting"] == "DeMo k=8" and r["lr"] == 1e-3 and len(r["loss"]) == 4
    assert r["val_step"] == [2, 4] and all(math.isfinite(v) for v in r["val_loss"])
    assert r["bytes_received"] == 0 and r["bytes_sent"] > 0 and r["replicas_identical"]
    with pytest.raises(ValueError, match="unknown setting 'SGD'"):
        run_setting("SGD")


def test_sweep_skips_finished_runs_and_reports_progress():
    seen = []
    runs = sweep(["AdamW"], workers=1, steps=2, lrs={"AdamW": 1e-2}, on_result=lambda rs: seen.append(len(rs)), **TINY)
    assert len(runs) == 1 and seen == [1] and runs[0]["lr"] == 1e-2
    again = sweep(["AdamW", "signSGD"], workers=1, steps=2, lrs={"AdamW": 1e-2}, done=runs, **TINY)
    assert [r["setting"] for r in again] == ["AdamW", "signSGD"] and again[0] is runs[0]


def test_best_lrs_and_family():
    runs = [dict(setting="AdamW", workers=2, seed=0, lr=lr, val_loss=[9, v]) for lr, v in ((1e-3, 2.0), (3e-3, 1.5))]
    runs += [dict(setting="DeMo k=32", workers=2, seed=0, lr=1e-3, val_loss=[3.0])]
    best = best_lrs(runs, {"AdamW": [1e-3, 3e-3], "DeMo k=32": [1e-3]})
    assert best == {"AdamW": 3e-3, "DeMo k=32": 1e-3}
    assert family_lr("k=32, no DCT", best) == 1e-3 and family_lr("AdamW", best) == 3e-3
    assert set(SETTINGS) >= {"AdamW", "signSGD", "DeMo k=1", "k=32, 1-D chunks"}


def test_train_eval_every_validation():
    r = train(optimizer="adamw", workers=1, steps=5, eval_every=2, eval_batches=2, **TINY)
    assert r["val_step"] == [2, 4, 5] and len(r["val_loss"]) == 3
    with pytest.raises(ValueError, match="eval_every must be an int >= 0"):
        TrainConfig(eval_every=-1)


def test_cli_registers_demo_sweep():
    from companion.__main__ import build_parser

    args = build_parser().parse_args(["demo", "sweep", "--full", "--resume"])
    assert args.full and args.resume and args.run.__name__ == "_sweep"


def test_sweep_summary_picks_each_familys_best_rate_and_averages_the_seeds():
    from companion.demo.experiments import sweep_summary

    def run(setting, lr, seed, loss, workers=2):
        return {"setting": setting, "lr": lr, "seed": seed, "workers": workers, "val_loss": [9.0, loss],
                "bytes_sent": 10.0, "steps": 5}

    full = {"settings": {"lr_grid": {"AdamW": [1e-3, 3e-3], "DeMo k=32": [1e-3]}, "seeds": [0, 1], "steps": 5},
            "runs": [run("AdamW", 1e-3, 0, 2.0), run("AdamW", 3e-3, 0, 1.5), run("AdamW", 3e-3, 1, 1.7),
                     run("AdamW", 3e-3, 0, 0.1, workers=4), run("DeMo k=32", 1e-3, 0, 1.9),
                     run("DeMo k=32", 1e-3, 1, 2.1), run("k=32, no DCT", 1e-3, 0, 2.5)]}
    s = sweep_summary(full)
    assert s["AdamW"]["lr"] == 3e-3 and s["AdamW"]["losses"] == [1.5, 1.7]
    assert s["AdamW"]["loss"] == pytest.approx(1.6)
    assert s["DeMo k=32"]["loss"] == pytest.approx(2.0)
    assert s["k=32, no DCT"]["lr"] == 1e-3 and s["k=32, no DCT"]["losses"] == [2.5]
    # more seeds from `demo seeds`: same rate, workers and length count, anything else does not
    extra = {"runs": [run("AdamW", 3e-3, 2, 1.9), run("AdamW", 1e-3, 3, 0.0), run("AdamW", 3e-3, 4, 0.0, workers=4),
                      {**run("AdamW", 3e-3, 5, 0.0), "steps": 7}, run("AdamW", 3e-3, 1, 0.0)]}
    s = sweep_summary(full, extra)
    assert s["AdamW"]["seeds"] == [0, 1, 2] and s["AdamW"]["losses"] == [1.5, 1.7, 1.9]
    from companion.demo.experiments import paired_difference

    d = paired_difference(s, "DeMo k=32", "AdamW")      # seeds 0 and 1 only: 1.5 − 1.9, 1.7 − 2.1
    assert (d.mean, d.n) == (pytest.approx(-0.4), 2) and d.sd == pytest.approx(0.0, abs=1e-12)
