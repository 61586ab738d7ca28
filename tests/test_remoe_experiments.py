"""The chapter's experiment helpers, routing snapshots during training, the held-out routing measurement, the
gradient check of the continuity demo and the ``remoe`` CLI, on tiny configurations (300-token BPE of the
first 100k characters, in a temporary cache)."""

import json
import math

import numpy as np
import pytest
import torch

from companion.remoe import (
    LMConfig,
    expert_counts,
    gradient_check,
    logit_sweep,
    measure_routing,
    routing_snapshot,
    routing_stats,
    train,
)
from companion.remoe import experiments as ex

TINY = LMConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2, d_ff=64, num_experts=4, k=1)
RUN = dict(batch_size=4, seq_len=32, lr=3e-3, eval_every=10, eval_windows=8, show_progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(remoe_data):
    return remoe_data


# ------------------------------------------------------------------------------------------ routing snapshots
def test_snapshots_at_chosen_steps_match_a_fresh_reading_of_the_final_model(data):
    _, train_ids, val_ids = data
    text = val_ids[:40]
    h = train(TINY, steps=30, snapshot_steps=[0, 10, 30], snapshot_ids=text, train_ids=train_ids,
              val_ids=val_ids, **RUN)
    assert [s["step"] for s in h.snapshots] == [0, 10, 30]
    last = h.snapshots[-1]
    assert np.array(last["activity"]).shape == (TINY.n_layers, TINY.num_experts)
    assert np.array(last["counts"]).shape == (TINY.n_layers, 40)
    assert last["counts"] == expert_counts(h.model, text).tolist()  # the snapshot is the model at that step
    counts, activity = np.array(last["counts"]), np.array(last["activity"])
    assert np.allclose(activity.sum(-1), counts.mean(-1))  # Σ_e share of tokens = mean experts per token
    assert last["sparsity"] == pytest.approx(1 - counts.mean() / TINY.num_experts)
    assert last["dead_tokens"] == pytest.approx((counts == 0).mean())
    assert h.model.training is False  # train() leaves the model in eval mode, snapshots do not change that
    json.dumps(h.to_dict())  # snapshots are JSON-ready


def test_snapshots_do_not_change_training(data):
    _, train_ids, val_ids = data
    plain = train(TINY, steps=12, train_ids=train_ids, val_ids=val_ids, **RUN)
    snap = train(TINY, steps=12, snapshot_every=5, snapshot_ids=val_ids[:20], train_ids=train_ids,
                 val_ids=val_ids, **RUN)
    assert snap.trace == plain.trace
    assert [s["step"] for s in snap.snapshots] == [0, 5, 10, 12]


def test_topk_snapshots_have_exactly_k_experts_per_token(data):
    _, train_ids, val_ids = data
    h = train(TINY.replace(ffn="topk"), steps=5, snapshot_every=5, snapshot_ids=val_ids[:20],
              train_ids=train_ids, val_ids=val_ids, **RUN)
    assert all((np.array(s["counts"]) == 1).all() and s["dead_tokens"] == 0 for s in h.snapshots)


@pytest.mark.parametrize(
    "kw,err,match",
    [
        (dict(snapshot_every=5), TypeError, "snapshot_ids"),
        (dict(snapshot_every=5, snapshot_steps=[1], snapshot_ids=torch.arange(5)), ValueError, "not both"),
        (dict(snapshot_steps=[99], snapshot_ids=torch.arange(5)), ValueError, r"snapshot_steps\[0\] \(steps = 5\) must be an int >= 0 and <= 5"),
        (dict(snapshot_every=0, snapshot_ids=torch.arange(5)), ValueError, "snapshot_every"),
        (dict(snapshot_every=2, snapshot_ids=torch.ones(5)), TypeError, "integer"),
    ],
)
def test_snapshot_bad_input(data, kw, err, match):
    _, train_ids, val_ids = data
    with pytest.raises(err, match=match):
        train(TINY, steps=5, train_ids=train_ids, val_ids=val_ids, **RUN, **kw)


def test_snapshot_of_dense_model_is_rejected(data):
    _, train_ids, val_ids = data
    with pytest.raises(ValueError, match="dense model has none"):
        train(TINY.replace(ffn="dense"), steps=5, snapshot_every=2, snapshot_ids=torch.arange(5),
              train_ids=train_ids, val_ids=val_ids, **RUN)


# -------------------------------------------------------------------------------------- held-out routing
def test_measure_routing_agrees_with_routing_stats_of_one_window(data):
    _, train_ids, val_ids = data
    torch.manual_seed(0)
    from companion.remoe import TinyLM

    model = TinyLM(TINY).eval()
    ids = val_ids[:64]
    _, routings = model(ids.view(2, 32))
    direct = routing_stats(routings)
    measured = measure_routing(model, ids, seq_len=32)
    for key in ("sparsity", "active_experts", "dead_tokens"):
        assert measured[key] == pytest.approx(direct[key])
    assert np.allclose(measured["expert_load"], direct["expert_load"])
    assert np.allclose(np.sum(measured["expert_load"], -1), 1.0)
    snap = routing_snapshot(model, ids)
    assert snap["counts"] == expert_counts(model, ids).tolist()
    with pytest.raises(TypeError, match="MoE layers"):
        measure_routing(TinyLM(TINY.replace(ffn="dense")), ids)
    with pytest.raises(ValueError, match="at least seq_len"):
        measure_routing(model, ids[:10], seq_len=32)


# ---------------------------------------------------------------------------------------------- stages
def test_stages_on_a_synthetic_curve():
    s = np.concatenate([np.linspace(0.5, 0.1, 20), np.linspace(0.1, 0.875, 30), 0.875 + 0.01 * np.sin(np.arange(50))])
    st = ex.stages(s, 0.875)
    assert st["stage2_start"] == 20  # the minimum, at index 19 (1-based step 20)
    assert 45 <= st["stage3_start"] <= 50
    assert st["min_sparsity"] == pytest.approx(0.1)
    assert abs(st["stage3_mean"] - 0.875) < 0.01 and st["stage3_std"] < 0.01
    never = ex.stages(np.full(10, 0.2), 0.875)
    assert never["stage3_start"] is None and never["stage3_mean"] is None
    with pytest.raises(ValueError, match="target"):
        ex.stages(s, 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        ex.stages([], 0.5)


# ---------------------------------------------------------------------------------------------- experiments
def test_compare_routers_is_json_ready_and_reports_active_experts(data):
    tok, train_ids, val_ids = data
    out = ex.compare_routers(TINY, steps=20, train_ids=train_ids, val_ids=val_ids, **RUN)
    text = json.dumps(out)
    assert set(json.loads(text)["runs"]) == {"dense", "topk", "remoe"}
    runs = out["runs"]
    assert runs["topk"]["active_experts_train"] == 1.0 and runs["topk"]["routing"]["dead_tokens"] == 0.0
    assert "routing" not in runs["dense"] and "lam" in runs["remoe"] and "stages" in runs["remoe"]
    assert runs["remoe"]["target"] == pytest.approx(0.75)
    assert len(runs["remoe"]["sparsity"]) == 20 and runs["remoe"]["val"][-1][0] == 20
    assert sum(runs["remoe"]["frequency"]["tokens"]) > 0
    assert all(math.isfinite(r["final_val_loss"]) for r in runs.values())
    assert out["settings"]["train"]["steps"] == 20


def test_train_routers_same_seed_same_batches_and_bad_kinds(data):
    _, train_ids, val_ids = data
    runs = ex.train_routers(TINY, kinds=["topk", "remoe"], steps=3, snapshot_every=3,
                            snapshot_ids=val_ids[:10], train_ids=train_ids, val_ids=val_ids, **RUN)
    assert set(runs) == {"topk", "remoe"} and len(runs["remoe"].snapshots) == 2
    with pytest.raises(ValueError, match="kinds"):
        ex.train_routers(TINY, kinds=["switch"], steps=1, train_ids=train_ids, val_ids=val_ids, **RUN)
    with pytest.raises(TypeError, match="LMConfig"):
        ex.train_routers({"ffn": "remoe"}, steps=1, train_ids=train_ids, val_ids=val_ids, **RUN)


def test_alpha_sweep_each_run_follows_its_alpha(data):
    _, train_ids, val_ids = data
    out = ex.alpha_sweep(TINY, alphas=[1.1, 1.5], steps=15, train_ids=train_ids, val_ids=val_ids, **RUN)
    json.dumps(out)
    for a, run in zip(out["alphas"], out["runs"]):
        lam = np.array(run["lam"])
        ratios = lam[1:] / lam[:-1]
        assert np.allclose(np.minimum(ratios, 1 / ratios), 1 / a)  # every step multiplies or divides by α
    with pytest.raises(ValueError, match="alphas"):
        ex.alpha_sweep(TINY, alphas=[1.0], steps=1, train_ids=train_ids, val_ids=val_ids, **RUN)


def test_l1_comparison_reports_both_penalties_per_layer(data):
    _, train_ids, val_ids = data
    out = ex.l1_comparison(TINY, steps=15, train_ids=train_ids, val_ids=val_ids, **RUN)
    assert set(out["runs"]) == {"balanced", "plain"}
    for run in out["runs"].values():
        assert run["config"]["l1"] in ("balanced", "plain")
        assert len(run["routing"]["layer_sparsity"]) == TINY.n_layers
        assert np.array(run["routing"]["expert_load"]).shape == (TINY.n_layers, TINY.num_experts)
    assert out["runs"]["plain"]["config"]["l1"] == "plain"
    only = ex.l1_comparison(TINY, variants=["plain"], steps=15, train_ids=train_ids, val_ids=val_ids, **RUN)
    assert only["runs"]["plain"]["final_val_loss"] == out["runs"]["plain"]["final_val_loss"]  # same seed
    with pytest.raises(ValueError, match="variants"):
        ex.l1_comparison(TINY, variants=["l2"], steps=1, train_ids=train_ids, val_ids=val_ids, **RUN)


def test_alpha_sweep_at_default_alpha_is_the_balanced_l1_run(data):
    _, train_ids, val_ids = data
    sweep = ex.alpha_sweep(TINY, alphas=[1.2], steps=12, train_ids=train_ids, val_ids=val_ids, **RUN)
    l1 = ex.l1_comparison(TINY, variants=["balanced"], steps=12, train_ids=train_ids, val_ids=val_ids, **RUN)
    assert sweep["runs"][0]["loss"] == l1["runs"]["balanced"]["loss"]  # the notebook reuses one for the other


def test_expert_scaling_gap_is_topk_minus_remoe(data):
    _, train_ids, val_ids = data
    out = ex.expert_scaling(TINY, experts=[2, 4], steps=6, train_ids=train_ids, val_ids=val_ids, **RUN)
    json.dumps(out)
    assert [r["config"]["num_experts"] for r in out["remoe"]] == [2, 4]
    assert out["gap"] == pytest.approx([t["final_val_loss"] - r["final_val_loss"]
                                        for t, r in zip(out["topk"], out["remoe"])])
    assert out["dense"]["ffn"] == "dense"
    with pytest.raises(ValueError, match=r"experts\[0\] \(E > k = 1\) must be an int >= 2"):
        ex.expert_scaling(TINY, experts=[1], steps=1, train_ids=train_ids, val_ids=val_ids, **RUN)


def test_summarize_rejects_non_history():
    with pytest.raises(TypeError, match="History"):
        ex.summarize({"loss": []})


# ---------------------------------------------------------------------------------------------- gradient check
def test_gradient_check_relu_matches_finite_differences_topk_does_not_at_the_flip():
    values = torch.linspace(-1, 1, 81)
    g = gradient_check(values, expert=0, eps=1e-4)
    v = np.array(g["values"])
    away = np.abs(v) > 1e-3  # the ReLU kink at 0
    assert np.allclose(np.array(g["relu_autograd"])[away], np.array(g["relu_fd"])[away], atol=1e-6)
    assert np.all(np.array(g["relu_autograd"])[v < 0] == 0)  # an inactive expert gets no gradient
    sweep = logit_sweep(values, expert=0)
    chosen = sweep.topk_gates.argmax(-1).numpy()
    flips = np.flatnonzero(chosen[1:] != chosen[:-1])
    assert flips.size >= 1  # the sweep crosses a ranking flip
    topk_ad, topk_fd = np.array(g["topk_autograd"]), np.array(g["topk_fd"])
    smooth = np.ones_like(v, dtype=bool)
    smooth[flips] = smooth[flips + 1] = False
    # between flips autograd is right (TopK's softmax runs in float32, hence the looser tolerance)
    assert np.allclose(topk_ad[smooth], topk_fd[smooth], rtol=1e-2, atol=2e-3)
    # straddling a flip (±ε around the flip point) the difference sees the jump, of size ~ jump / 2ε
    flip_at = float(sweep.logits[chosen[0]])  # expert 0 takes the lead where its logit passes the leader's
    at = gradient_check(torch.tensor([flip_at - 2e-5, flip_at + 2e-5]), expert=0, eps=1e-4)
    assert max(abs(x) for x in at["topk_fd"]) > 100 * max(abs(x) for x in at["topk_autograd"])
    with pytest.raises(ValueError, match="eps"):
        gradient_check(eps=0)


# ---------------------------------------------------------------------------------------------------- the CLI
def test_cli_registers_the_remoe_experiments():
    from companion.__main__ import build_parser

    parser = build_parser()
    for name in ("compare", "alpha", "l1", "experts"):
        args = parser.parse_args(["remoe", name, "--full", "--seed", "3"])
        assert args.experiment == name and args.full and args.seed == 3 and callable(args.run)
    with pytest.raises(SystemExit):
        parser.parse_args(["remoe", "no-such-experiment"])


def test_seed_summary_by_hand():
    from companion.remoe.experiments import seed_summary

    def run(seed, dense, topk, remoe, used):
        return {"settings": {"train": {"seed": seed}},
                "runs": {"dense": {"final_val_loss": dense},
                         "topk": {"final_val_loss": topk, "active_experts_train": 1.0, "active_experts_tail": 1.0},
                         "remoe": {"final_val_loss": remoe, "active_experts_train": used,
                                   "active_experts_tail": 1.0}}}

    s = seed_summary([run(0, 3.0, 3.2, 3.1, 1.2), run(1, 3.2, 3.3, 3.2, 1.4), run(2, 3.1, 3.4, 3.0, 1.0)])
    assert s["seeds"] == [0, 1, 2]
    assert s["loss"]["dense"].mean == pytest.approx(3.1) and s["loss"]["dense"].sd == pytest.approx(0.1)
    d = s["difference"]["remoe - topk"]                   # -0.1, -0.1, -0.4
    assert (d.mean, d.n) == (pytest.approx(-0.2), 3) and d.sd == pytest.approx(0.3 / 3 ** 0.5)
    assert s["difference"]["remoe - dense"].mean == pytest.approx(0.0)
    assert not s["difference"]["remoe - dense"].detectable
    assert s["active_experts_train"]["remoe"].mean == pytest.approx(1.2)
    assert "dense" not in s["active_experts_train"]
    with pytest.raises(TypeError, match="results\\[0\\]"):
        seed_summary([{"no": "runs"}])
    with pytest.raises(ValueError, match="results"):
        seed_summary([])
