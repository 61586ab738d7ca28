"""DeMo under faults, with two real gloo workers: a NaN / inf gradient raises the same error on every worker (or
skips the step on every worker, leaving the replicas identical and equal to the official run without that step),
a parameter without a gradient on some workers gives the same ValueError everywhere (no abort, no hang), and a hung
worker makes the others fail after ``timeout_s``. Plus the same checks with one worker, in this process.

The scenarios run one after the other in the same two processes (a ValueError of the per-step check leaves the
process group healthy); the hung worker comes last. Time limits are generous on purpose (the machine may be
loaded): the hung-worker case is decided by what rank 0 reports, not by how long it took.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import time

import pytest
import torch

from companion.demo import DeMo
from companion.demo.reference import official_step

torch.set_num_threads(1)

STEPS = 5
LR, TOPK, CHUNK = 1e-2, 4, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial model on every worker
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 2)).double()


def _inject(scenario: str, rank: int, step: int, model) -> None:
    """Damage the gradients of one worker at one step."""
    if scenario == "nan_raise" and rank == 1 and step == 1:
        model[0].weight.grad[3, 2] = math.nan
    elif scenario == "nan_skip" and rank == 1 and step == 1:
        model[0].weight.grad[3, 2] = math.nan
    elif scenario == "nan_skip" and rank == 0 and step == 3:
        model[4].bias.grad[0] = math.inf
    elif scenario == "layout_missing" and rank == 1 and step == 2:
        model[4].bias.grad = None
    elif scenario == "layout_swapped" and step == 1:  # two [16] biases: same bytes, different parameters
        (model[0] if rank == 0 else model[2]).bias.grad = None


def _scenario(rank: int, scenario: str, **kw) -> dict:
    model = _model()
    init = [p.detach().clone() for p in model.parameters()]
    opt = DeMo(model.named_parameters(), lr=LR, compression_topk=TOPK, compression_chunk=CHUNK, world_size=2, **kw)
    gen = torch.Generator().manual_seed(1000 + rank)  # each worker its own data
    grads, error = [], None
    for step in range(STEPS):
        x = torch.randn(32, 8, generator=gen, dtype=torch.float64)
        y = torch.randn(32, 2, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        _inject(scenario, rank, step, model)
        grads.append([None if p.grad is None else p.grad.detach().clone() for p in model.parameters()])
        try:
            opt.step()
        except ValueError as e:
            error = str(e)
            break
    return {"init": init, "grads": grads, "error": error, "skipped": opt.skipped_steps,
            "params": [p.detach().clone() for p in model.parameters()],
            "deltas": [opt.state[p]["delta"].clone() if p in opt.state else None for p in model.parameters()]}


def _worker(rank: int, port: int, outdir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=300))
    results = {}
    for scenario, kw in (("nan_raise", {}), ("nan_skip", {"nonfinite": "skip"}), ("layout_missing", {}),
                         ("layout_swapped", {})):
        results[scenario] = _scenario(rank, scenario, **kw)
        torch.save(results, os.path.join(outdir, f"{rank}.pt"))
    # a hung worker: rank 1 stops answering (alive, asleep) at step 2; rank 0 waits at most timeout_s = 3 s
    model = _model()
    opt = DeMo(model.parameters(), lr=LR, compression_topk=TOPK, compression_chunk=CHUNK, timeout_s=3.0)
    for step in range(STEPS):
        if rank == 1 and step == 2:
            time.sleep(120)  # the test kills this worker long before
        model.zero_grad()
        model(torch.ones(4, 8, dtype=torch.float64)).sum().backward()
        try:
            opt.step()
        except RuntimeError as e:
            results["hung"] = {"error": str(e), "step": step}
            break
    torch.save(results, os.path.join(outdir, f"{rank}.pt"))
    os._exit(0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("demo_faults")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(out))) for r in range(2)]
    for p in procs:
        p.start()
    procs[0].join(600)  # rank 0 ends after its timeout fires; rank 1 is asleep by then
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert procs[0].exitcode == 0, f"rank 0 did not finish (exit code {procs[0].exitcode})"
    return [torch.load(out / f"{r}.pt") for r in range(2)]


def _reference(r0: dict, r1: dict, steps) -> tuple[list, list]:
    """The official algorithm with 2 simulated workers over the given steps of the recorded gradients."""
    ref_p = [[t.clone() for t in r0["init"]] for _ in range(2)]
    ref_d = [[torch.zeros_like(t) for t in r0["init"]] for _ in range(2)]
    for s in steps:
        official_step(ref_p, [r0["grads"][s], r1["grads"][s]], ref_d, lr=LR, topk=TOPK, chunk=CHUNK)
    return ref_p, ref_d


def test_nan_raises_the_same_error_on_every_worker_before_anything_changes(runs):
    r0, r1 = (r["nan_raise"] for r in runs)
    assert r0["error"] == r1["error"]
    assert "non-finite gradient" in r0["error"] and "on rank 1 in '0.weight'" in r0["error"]
    assert len(r0["grads"]) == 2  # stopped in step 1
    ref_p, _ = _reference(r0, r1, [0])  # only step 0 was applied, on both workers
    for a, b, r in zip(r0["params"], r1["params"], ref_p[0]):
        assert torch.equal(a, b) and torch.allclose(a, r, atol=1e-12)


def test_skip_nonfinite_skips_on_every_worker_and_replicas_stay_identical(runs):
    r0, r1 = (r["nan_skip"] for r in runs)
    assert r0["error"] is None and r1["error"] is None
    assert r0["skipped"] == r1["skipped"] == 2  # step 1 (NaN on rank 1) and step 3 (inf on rank 0)
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b) and torch.isfinite(a).all()
    # equal to the official run without the two bad steps, momenta included
    ref_p, ref_d = _reference(r0, r1, [0, 2, 4])
    for a, r in zip(r0["params"], ref_p[0]):
        assert torch.allclose(a, r, atol=1e-12)
    for run, rd in ((r0, ref_d[0]), (r1, ref_d[1])):
        for d, r in zip(run["deltas"], rd):
            assert torch.allclose(d, r, atol=1e-12)


def test_a_parameter_without_gradient_on_one_worker_is_the_same_valueerror_everywhere(runs):
    r0, r1 = (r["layout_missing"] for r in runs)
    assert r0["error"] is not None and r0["error"] == r1["error"]
    assert "'4.bias'" in r0["error"] and "on rank(s) [0] but not on rank(s) [1]" in r0["error"]
    assert len(r0["grads"]) == len(r1["grads"]) == 3  # stopped in step 2 on both


def test_same_bytes_but_different_parameters_is_caught(runs):
    """Rank 0 lacks one [16] bias, rank 1 the other: same payload size, so the old check (and the official code)
    would mix the coefficients of two different parameters."""
    r0, r1 = (r["layout_swapped"] for r in runs)
    assert r0["error"] is not None and r0["error"] == r1["error"]
    assert "'0.bias'" in r0["error"] and "'2.bias'" in r0["error"]


def test_a_hung_worker_makes_the_others_fail_after_timeout_s(runs):
    """Rank 1 sleeps for 120 s inside step 2; rank 0 gives up after timeout_s = 3 s (were the timeout ignored,
    rank 0 would have waited for rank 1 and finished without error, or the test would have killed it)."""
    hung = runs[0]["hung"]
    assert hung["step"] == 2
    assert "timeout_s = 3 s" in hung["error"] and "a worker probably died, hung" in hung["error"]


def test_one_worker_nonfinite_raise_skip_and_official():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(8, 8))
    opt = DeMo([p], lr=0.1, compression_topk=4, compression_chunk=4)
    p.grad = torch.randn(8, 8)
    opt.step()
    before, delta = p.detach().clone(), opt.state[p]["delta"].clone()
    p.grad[1, 1] = math.inf
    with pytest.raises(ValueError, match=r"non-finite gradient \(NaN or inf\) on rank 0 in param_groups\[0\]"):
        opt.step()
    assert torch.equal(p, before) and torch.equal(opt.state[p]["delta"], delta) and opt.state[p]["step"] == 1
    opt.nonfinite = "skip"
    opt.step()
    assert opt.skipped_steps == 1 and opt.bytes_sent == 0
    assert torch.equal(p, before) and torch.equal(opt.state[p]["delta"], delta) and opt.state[p]["step"] == 1
    p.grad = torch.full((8, 8), 3e38)  # finite, but its sum overflows: not an error
    opt.nonfinite = "raise"
    opt.step()
    assert opt.state[p]["step"] == 2 and torch.isfinite(opt.state[p]["delta"]).all()
    opt.nonfinite = "official"  # as the official code: the NaN enters the momentum and stays
    p.grad[1, 1] = math.nan
    opt.step()
    p.grad = torch.randn(8, 8)
    opt.step()
    assert torch.isnan(opt.state[p]["delta"]).any()
