"""DeMo is faithful to the official step in every dtype the official code runs in: the same basis matrices (built
in float32 with torch-dct's FFT route, cast), the same order of operations in bf16 / fp16, bit for bit, with one
worker and with two gloo workers; and the exact basis has exact zeros."""

from __future__ import annotations

import datetime
import math
import os
import socket
import warnings

import pytest
import torch

from companion.demo import DeMo, dct_matrix
from companion.demo.dct import _official
from companion.demo.reference import official_step

torch.set_num_threads(1)

SHAPES = [(128, 192), (64,), (96,), (48, 48), (50, 29), (8, 16)]


def _data(shape, dtype, steps, seed):
    g = torch.Generator().manual_seed(seed)
    p0 = torch.randn(shape, generator=g).to(dtype)
    return p0, [torch.randn(shape, generator=g).to(dtype) for _ in range(steps)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_half_precision_step_equals_the_ported_official_step_bit_for_bit(shape, dtype):
    p0, grads = _data(shape, dtype, 5, seed=0)
    p = torch.nn.Parameter(p0.clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k = 32 is clipped on the [8, 16] tensor
        opt = DeMo([p], lr=1e-2, compression_topk=32, compression_chunk=64)
    ref_p, ref_d = [[p0.clone()]], [[torch.zeros_like(p0)]]
    for g in grads:
        p.grad = g
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step()
        official_step(ref_p, [[g]], ref_d, lr=1e-2, topk=32, chunk=64)
        assert torch.equal(p.detach(), ref_p[0][0])
        assert torch.equal(opt.state[p]["delta"], ref_d[0][0])
    assert not torch.equal(p.detach(), p0)


@pytest.mark.parametrize("n", [6, 12, 29, 48, 50, 96])
def test_k1_leaves_still_exactly_the_weights_the_official_step_leaves_still(n):
    """With k = 1 the update is the sign of one basis row: where that row is 0 the weight stays; the official
    basis has some exact zeros and some ±1e-9 instead, and the default reproduces which is which."""
    p0, (g,) = _data((n,), torch.float64, 1, seed=0)
    p = torch.nn.Parameter(p0.clone())
    opt = DeMo([p], lr=0.1, compression_topk=1, compression_chunk=n)
    p.grad = g
    opt.step()
    ref_p, ref_d = [[p0.clone()]], [[torch.zeros_like(p0)]]
    official_step(ref_p, [[g]], ref_d, lr=0.1, topk=1, chunk=n)
    assert torch.equal(p.detach(), ref_p[0][0])


@pytest.mark.parametrize("n", [1, 3, 6, 29, 48, 64, 96])
def test_bases(n):
    exact = dct_matrix(n, dtype=torch.float64)
    k, i = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    true_zero = ((2 * i + 1) * k) % (2 * n) == n  # cos(π (2i + 1) k / 2n) = 0
    assert torch.all(exact[true_zero] == 0) and torch.all(exact[~true_zero] != 0)
    for inverse in (False, True):
        off = _official(n, inverse)
        assert off.dtype == torch.float32 and torch.allclose(off.double(), exact, atol=1e-6)
        assert torch.all(off[~true_zero] != 0)
    # the official forward and inverse matrices are two float32 computations, not one matrix and its transpose
    if n in (29, 48, 96):
        assert not torch.equal(_official(n, False), _official(n, True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, outdir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=300))
    torch.manual_seed(0)
    model = torch.nn.Linear(192, 128).to(torch.bfloat16)  # weight [128, 192], bias [128]
    init = [p.detach().clone() for p in model.parameters()]
    opt = DeMo(model.parameters(), lr=1e-2, compression_topk=32, compression_chunk=64, world_size=2)
    gen = torch.Generator().manual_seed(1000 + rank)
    grads = []
    for _ in range(5):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen).to(torch.bfloat16)
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    torch.save({"init": init, "grads": grads, "params": [p.detach().clone() for p in model.parameters()]},
               os.path.join(outdir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_workers_in_bf16_equal_the_official_step_bit_for_bit(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # generous: a loaded machine
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in range(2))
    ref_p = [[t.clone() for t in r0["init"]] for _ in range(2)]
    ref_d = [[torch.zeros_like(t) for t in r0["init"]] for _ in range(2)]
    for step in range(5):
        official_step(ref_p, [r0["grads"][step], r1["grads"][step]], ref_d, lr=1e-2, topk=32, chunk=64)
    for a, b, r in zip(r0["params"], r1["params"], ref_p[0]):
        assert torch.equal(a, b) and torch.equal(a, r)
    assert math.isfinite(float(r0["params"][0].float().sum()))
