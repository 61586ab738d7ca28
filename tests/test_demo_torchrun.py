"""``python -m companion demo train`` under ``torchrun`` (env:// rendezvous, one worker per process; gloo here, CUDA
hidden), how the trainer reads the launcher's environment, and (``-m gpu``, on a CUDA machine) DeMo's NCCL path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from companion.demo.training import _torchrun_env, train

ROOT = Path(__file__).resolve().parents[1]


def _torchrun() -> list[str]:
    """The ``torchrun`` next to this Python (it comes with torch), else the module it runs."""
    exe = Path(sys.executable).parent / "torchrun"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def test_demo_train_runs_under_torchrun_with_two_gloo_workers(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [*_torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "companion", "demo", "train",
           "--steps", "3", "--topk", "8"]
    # generous limit: two interpreters importing torch on a loaded machine
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = [line for line in proc.stdout.splitlines() if line.startswith("demo, ")]
    assert len(final) == 1, proc.stdout  # rank 0 prints, rank 1 does not
    assert "demo, 2 worker(s)" in final[0] and "replicas bit-identical: True" in final[0]
    moved = re.findall(r"sent\s+([\d,]+) B\s+received\s+([\d,]+) B", proc.stdout)
    assert len(moved) == 3 and all(int(a.replace(",", "")) > 0 and a == b for a, b in moved)  # W = 2: sent = received


def test_torchrun_env_reads_the_launcher_variables(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert _torchrun_env() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert _torchrun_env() is None  # no rendezvous address: not launched by torchrun
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert _torchrun_env() == {"rank": 1, "world_size": 3, "local_rank": 0}
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _torchrun_env()["local_rank"] == 1
    # the trainer refuses a worker count that differs from the launcher's, before any rendezvous
    with pytest.raises(ValueError, match="workers = 2 but the launcher started WORLD_SIZE = 3"):
        train(workers=2, steps=1, batch_size=2, seq_len=8, d_model=8, n_layers=1, n_heads=2, train_bytes=1000)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match=r"RANK must be in \[0, WORLD_SIZE\), got RANK = 3 and WORLD_SIZE = 3"):
        _torchrun_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK, WORLD_SIZE and LOCAL_RANK must be integers"):
        _torchrun_env()



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())")
def test_demo_over_nccl_on_cuda_matches_the_cpu_step(tmp_path):
    """The NCCL path (collectives on the GPU, the per-step check included), one process: the same update as the
    CPU optimizer without a process group, up to sign flips where the aggregate is ~0 (GPU matmuls round
    differently)."""
    import torch.distributed as dist

    from companion.demo import DeMo

    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(128, 192, generator=g, dtype=torch.float64)
    grads = [torch.randn(128, 192, generator=g, dtype=torch.float64) for _ in range(3)]
    cpu = torch.nn.Parameter(p0.clone())
    opt = DeMo([cpu], lr=1e-2)
    for gr in grads:
        cpu.grad = gr.clone()
        opt.step()
    dist.init_process_group("nccl", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        gpu = torch.nn.Parameter(p0.cuda())
        opt_gpu = DeMo([gpu], lr=1e-2, timeout_s=60.0)
        assert opt_gpu._distributed and dist.get_backend() == "nccl"
        for gr in grads:
            gpu.grad = gr.cuda()
            opt_gpu.step()
    finally:
        dist.destroy_process_group()
    assert opt_gpu.bytes_sent == opt.bytes_sent
    assert (gpu.detach().cpu() != cpu.detach()).sum() <= 0.001 * cpu.numel()
