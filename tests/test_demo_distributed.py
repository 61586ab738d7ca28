"""DeMo over torch.distributed (gloo, 2 CPU workers): replicas stay bit-identical, the run matches the official
algorithm with 2 simulated workers, a worker that dies makes the other fail with a clear error, not a hang, and
workers with mismatched settings are stopped at the first step."""

import datetime
import os
import socket
import time

import torch

from companion.demo.reference import official_step

torch.set_num_threads(1)

STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, outdir: str, die_at: int | str | None) -> None:
    import torch.distributed as dist

    from companion.demo import DeMo

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))  # generous: spawning is slow under load
    torch.manual_seed(0)  # same initial model on every worker
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    init = [p.detach().clone() for p in model.parameters()]
    chunk = 4 if (die_at == "mismatch" and rank == 1) else 8  # a worker built with other settings
    opt = DeMo(model.parameters(), lr=1e-2, compression_topk=4, compression_chunk=chunk, world_size=world)
    gen = torch.Generator().manual_seed(1000 + rank)  # each worker its own data
    grads, sent, received = [], [], []
    try:
        for step in range(STEPS):
            if isinstance(die_at, int) and rank == 1 and step == die_at:
                os._exit(0)
            x = torch.randn(32, 8, generator=gen, dtype=torch.float64)
            y = torch.randn(32, 2, generator=gen, dtype=torch.float64)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            grads.append([p.grad.detach().clone() for p in model.parameters()])
            opt.step()
            sent.append(opt.bytes_sent)
            received.append(opt.bytes_received)
    except (RuntimeError, ValueError) as e:
        torch.save({"error": str(e)}, os.path.join(outdir, f"{rank}.pt"))
        os._exit(0)
    torch.save({"init": init, "grads": grads, "params": [p.detach() for p in model.parameters()],
                "sent": sent, "received": received}, os.path.join(outdir, f"{rank}.pt"))
    dist.destroy_process_group()


def _launch(tmp_path, die_at=None, world=2, timeout=600.0):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, str(tmp_path), die_at)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a worker hung"
    return [torch.load(tmp_path / f"{r}.pt") if (tmp_path / f"{r}.pt").exists() else None for r in range(world)]


def test_two_gloo_workers_stay_bit_identical_and_failures_are_clear(tmp_path):
    from companion.demo import model_wire_bytes

    (tmp_path / "ok").mkdir()
    r0, r1 = _launch(tmp_path / "ok")
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)  # bit-identical replicas
    assert any(not torch.equal(a, b) for a, b in zip(r0["grads"][0], r1["grads"][0]))  # different data
    # the same run, 2 workers simulated in one process with the official algorithm
    ref_p = [[t.clone() for t in r0["init"]] for _ in range(2)]
    ref_d = [[torch.zeros_like(t) for t in r0["init"]] for _ in range(2)]
    for step in range(STEPS):
        official_step(ref_p, [r0["grads"][step], r1["grads"][step]], ref_d, lr=1e-2, topk=4, chunk=8)
    for a, r in zip(r0["params"], ref_p[0]):
        assert torch.allclose(a, r, atol=1e-12)
    # counters: one payload sent, the other worker's received
    tx = model_wire_bytes([p.shape for p in r0["params"]], k=4, chunk=8, value_bytes=8)
    assert r0["sent"] == [tx] * STEPS and r0["received"] == [tx] * STEPS

    # worker 1 dies before step 2: worker 0 gets a clear error, not a hang (the launcher would report "a worker
    # hung"); no wall-clock bound is asserted, the machine may be loaded
    (tmp_path / "dead").mkdir()
    d0, d1 = _launch(tmp_path / "dead", die_at=2)
    assert d1 is None
    assert "a worker probably died" in d0["error"]

    # workers built with different DeMo settings: both stop at the per-step check of the first step (ValueError)
    (tmp_path / "mismatch").mkdir()
    m0, m1 = _launch(tmp_path / "mismatch", die_at="mismatch")
    assert "workers disagree" in m0["error"] and "workers disagree" in m1["error"]
