"""Data-parallel training of a tiny byte-level LM with N workers (``torch.distributed``).

Two ways to start the workers:

- :func:`train` spawns ``cfg.workers`` CPU processes on this machine (gloo on 127.0.0.1; what the notebooks do);
- under ``torchrun --nproc-per-node N`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
  ``MASTER_PORT``), each process runs one worker itself: ``env://`` rendezvous, NCCL on ``cuda:LOCAL_RANK`` when
  CUDA is present, gloo on the CPU otherwise.

Each worker holds a full replica and draws its own batches (seeded by ``(seed, rank)``). Three ways to keep the
replicas in sync:

- ``"demo"``: :class:`companion.demo.DeMo`, no gradient synchronisation at all (what DDP would do is switched off);
  the optimizer all-gathers the top-k DCT coefficients of each worker's momentum;
- ``"lowcomms"``: :class:`companion.demo.DeMoLowComms`, the author's later design (its defaults; ``lr`` and
  ``weight_decay`` from here), no gradient synchronisation either;
- ``"adamw"``: gradients averaged with an all-reduce, then AdamW (the paper's baseline; betas (0.9, 0.95));
- ``"signsgd"``: gradients averaged with an all-reduce, then signSGD with momentum (signum:
  ``m ← β m + g``, ``p ← p − η sign(m)``; ``β`` = ``signsgd_momentum``, default 0.9; with DeMo's 0.999 it is
  DeMo's update without the compression).

Bytes per step: DeMo's are measured by the optimizer (payload sent, payloads received from the W − 1 others); an
all-reduce's are the ring formula ``2 (W − 1)/W · 4 P`` (gloo does not count them).
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from companion.lab.checks import check_choice, check_float, check_int, check_tensor, check_type, describe

from .compress import allreduce_bytes
from .lowcomms import DeMoLowComms
from .optimizer import COMPRESSION_OPTIONS, DeMo, _check_compression

OPTIMIZERS = ("demo", "adamw", "signsgd", "lowcomms")
#: learning-rate schedules of :class:`TrainConfig`
SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Settings of one run (all workers share them).

    Attributes:
        optimizer: ``"demo"``, ``"adamw"``, ``"signsgd"`` or ``"lowcomms"``.
        workers: number of worker processes W (1 runs in this process without a process group).
        steps, batch_size, seq_len: training length, per-worker batch ``[batch_size, seq_len]`` of bytes.
        d_model, n_layers, n_heads: the tiny transformer.
        lr: learning rate (DeMo and signSGD use a sign update, so a smaller lr than AdamW).
        schedule: ``"constant"`` (default: ``lr`` at every step) or ``"cosine"``: torch's
            ``CosineAnnealingLR(opt, T_max=steps)`` (``η_t = lr · (1 + cos(π t / steps)) / 2`` at step ``t + 1``,
            from ``lr`` down to 0 after the last step), stepped once per optimizer step in every worker. The
            paper's OLMo runs decay the rate with a cosine schedule; the default keeps the chapter's constant
            rate (the committed sweeps).
        weight_decay: decoupled weight decay of DeMo and AdamW (signSGD has none).
        signsgd_momentum: β of ``"signsgd"``'s momentum ``m ← β m + g``, in [0, 1) (default 0.9; 0.999 is
            DeMo's ``compression_decay``); ignored by the other optimizers.
        demo: extra keyword arguments of :class:`DeMo` (``compression_topk``, ``error_feedback``, ...).
        train_bytes: how many bytes of the standard-library corpus to train on.
        eval_every: rank 0 measures the held-out loss every this many steps (0: only after the last step);
            ``eval_batches`` fixed batches of the corpus's validation split (the same for every run).
        seed: model init (same on all workers) and data (``seed + rank``), in ``[0, 2**32 - 1]``.
        timeout_s: process-group timeout: a dead or hung worker makes the others fail after at most this long
            (DeMo's collectives wait at most this long too, :class:`DeMo`'s ``timeout_s``).

    Every setting is checked here, before any worker starts (``n_heads`` must divide ``d_model``; the
    ``train_bytes`` must hold at least one window of ``seq_len + 1`` bytes plus one; ``demo`` holds only valid
    :class:`DeMo` compression settings).
    """

    optimizer: str = "demo"
    workers: int = 2
    steps: int = 100
    batch_size: int = 8
    seq_len: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    lr: float = 1e-3
    schedule: str = "constant"
    weight_decay: float = 0.0
    signsgd_momentum: float = 0.9
    demo: dict = field(default_factory=dict)
    train_bytes: int = 1_000_000
    eval_every: int = 0
    eval_batches: int = 16
    seed: int = 0
    timeout_s: float = 60.0

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("workers", "steps", "batch_size", "seq_len", "d_model", "n_layers", "n_heads", "eval_batches"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        self.eval_every = check_int("eval_every", self.eval_every, low=0)
        self.train_bytes = check_int("train_bytes", self.train_bytes, low=1)
        if self.train_bytes < self.seq_len + 2:
            raise ValueError(f"train_bytes must hold at least seq_len + 2 = {self.seq_len + 2} bytes (one window "
                             f"of seq_len + 1 and a start to draw), got train_bytes = {self.train_bytes}")
        self.seed = check_int("seed", self.seed, low=0, high=2**32 - 1)
        check_float("lr", self.lr, low=0.0)
        check_float("weight_decay", self.weight_decay, low=0.0)
        check_float("signsgd_momentum", self.signsgd_momentum, low=0.0, high=1.0, high_open=True)
        check_float("timeout_s", self.timeout_s, low=0.0, low_open=True)
        _check_heads(self.d_model, self.n_heads)
        check_type("demo", self.demo, dict, what="a dict of DeMo keyword arguments")
        unknown = sorted(str(k) for k in set(self.demo) - set(COMPRESSION_OPTIONS))
        if unknown:
            raise ValueError(f"demo holds unknown DeMo options {unknown}; expected some of {list(COMPRESSION_OPTIONS)}")
        try:
            _check_compression(**self.demo)
        except (TypeError, ValueError) as err:
            raise type(err)(f"demo: {err}") from None


def _check_heads(d_model: int, n_heads: int) -> None:
    if d_model % n_heads:
        raise ValueError(f"n_heads must divide d_model, got n_heads = {n_heads} and d_model = {d_model}")


class ByteLM(nn.Module):
    """A tiny causal transformer over bytes: ``[B, T] int64 -> [B, T, 256]`` logits."""

    def __init__(self, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, seq_len: int = 64):
        d_model = check_int("d_model", d_model, low=1)
        n_layers = check_int("n_layers", n_layers, low=1)
        n_heads = check_int("n_heads", n_heads, low=1)
        seq_len = check_int("seq_len", seq_len, low=1)
        _check_heads(d_model, n_heads)
        super().__init__()
        self.embed = nn.Embedding(256, d_model)
        self.pos = nn.Parameter(torch.zeros(seq_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 256, bias=False)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, ndim=2, dtype="integer")
        if x.shape[1] > self.pos.shape[0]:
            raise ValueError(f"x holds {x.shape[1]} positions, more than the model's seq_len = {self.pos.shape[0]}")
        t = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device)
        h = self.blocks(self.embed(x) + self.pos[:t], mask=mask, is_causal=True)
        return self.head(self.norm(h))


def corpus_bytes(n: int, split: str = "train") -> torch.Tensor:
    """The first ``n`` bytes of the standard-library corpus (:func:`companion.lab.load_corpus`) as ``[n]`` int64
    (fewer if the split is shorter)."""
    from companion.lab import load_corpus
    from companion.lab.corpus import SPLITS

    n = check_int("n", n, low=1)
    check_choice("split", split, SPLITS)

    data = load_corpus(split).text.encode("utf-8", errors="replace")[:n]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


class _SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                m.mul_(group["momentum"]).add_(p.grad)
                p.add_(m.sign(), alpha=-group["lr"])


def sample_batch(data: torch.Tensor, batch_size: int, seq_len: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``[batch_size, seq_len + 1]`` random windows of the byte stream ``data`` (inputs ``[:, :-1]``, targets
    ``[:, 1:]``); ``data`` must hold at least ``seq_len + 2`` bytes."""
    check_tensor("data", data, ndim=1, dtype="integer")
    batch_size = check_int("batch_size", batch_size, low=1)
    seq_len = check_int("seq_len", seq_len, low=1)
    if generator is not None:
        check_type("generator", generator, torch.Generator, what="a torch.Generator or None")
    if data.numel() < seq_len + 2:
        raise ValueError(f"data must hold at least seq_len + 2 = {seq_len + 2} bytes, got {describe(data)}")
    return _sample_batch(data, batch_size, seq_len, generator)


def _sample_batch(data: torch.Tensor, batch_size: int, seq_len: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`sample_batch` without the argument checks (the training loop's per-step path)."""
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    return torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Next-byte cross-entropy of ``model`` on a ``[B, T + 1]`` batch of bytes (ints in ``[0, 256)``) from
    :func:`sample_batch`; ``model`` maps ``[B, T]`` to ``[B, T, 256]`` logits."""
    check_type("model", model, nn.Module, what="a torch.nn.Module (e.g. a ByteLM)")
    check_tensor("batch", batch, ndim=2, dtype="integer")
    if batch.shape[1] < 2:
        raise ValueError(f"batch must hold at least 2 positions (inputs and next-byte targets), got {describe(batch)}")
    if isinstance(model, ByteLM) and batch.shape[1] - 1 > model.pos.shape[0]:
        raise ValueError(f"batch holds {batch.shape[1]} positions, more than the model's seq_len + 1 = "
                         f"{model.pos.shape[0] + 1}")
    low, high = (int(v) for v in torch.aminmax(batch))
    if low < 0 or high > 255:
        raise ValueError(f"batch must hold bytes in [0, 255], got values from {low} to {high}")
    logits = model(batch[:, :-1])
    if not isinstance(logits, torch.Tensor) or logits.shape != (*batch[:, :-1].shape, 256):
        raise ValueError(f"model must return [B, T, 256] logits for a [B, T] input of shape "
                         f"{tuple(batch[:, :-1].shape)}, got {describe(logits)}")
    return nn.functional.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))


def _lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """:func:`lm_loss` without the argument checks (the training loop's per-step path)."""
    return nn.functional.cross_entropy(model(batch[:, :-1]).reshape(-1, 256), batch[:, 1:].reshape(-1))


def _val_batches(cfg: TrainConfig, val: torch.Tensor) -> torch.Tensor:
    """``[eval_batches, batch_size, seq_len + 1]``: fixed windows of the validation bytes (seed 1234)."""
    gen = torch.Generator().manual_seed(1234)
    starts = torch.randint(0, val.numel() - cfg.seq_len - 1, (cfg.eval_batches * cfg.batch_size,), generator=gen)
    windows = torch.stack([val[s:s + cfg.seq_len + 1] for s in starts.tolist()])
    return windows.reshape(cfg.eval_batches, cfg.batch_size, cfg.seq_len + 1)


@torch.no_grad()
def _val_loss(model: nn.Module, batches: torch.Tensor) -> float:
    return float(torch.stack([_lm_loss(model, b) for b in batches]).mean())


def _torchrun_env() -> dict | None:
    """``{"rank", "world_size", "local_rank"}`` read from the environment a launcher such as ``torchrun`` sets
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; ``LOCAL_RANK`` defaults to 0), or ``None`` when
    they are not all set (a plain ``python`` process: :func:`train` spawns its own workers).

    Raises:
        ValueError: the variables are set but not integers, or ``RANK`` is outside ``[0, WORLD_SIZE)``.
    """
    keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    if not all(os.environ.get(k) for k in keys):
        return None
    try:
        env = {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"]),
               "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}
    except ValueError:
        got = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got {got}") from None
    if env["world_size"] < 1 or not 0 <= env["rank"] < env["world_size"]:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE), got RANK = {env['rank']} and WORLD_SIZE = "
                         f"{env['world_size']}")
    return env


def _worker(rank: int, cfg: TrainConfig, data: torch.Tensor, port: int | None, out: str | None,
            val: torch.Tensor | None = None, local_rank: int | None = None) -> dict:
    """One worker. ``port``: spawned on this machine (gloo, tcp://127.0.0.1:port); ``None``: launched by torchrun
    (env:// rendezvous, NCCL on ``cuda:local_rank`` when CUDA is present, gloo otherwise)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    W = cfg.workers
    device = torch.device("cpu")
    if port is None and torch.cuda.is_available():
        device = torch.device("cuda", local_rank or 0)
        torch.cuda.set_device(device)
    if W > 1:
        timeout = datetime.timedelta(seconds=cfg.timeout_s)
        if port is None:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://", rank=rank,
                                    world_size=W, timeout=timeout)
        else:
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=W,
                                    timeout=timeout)
    torch.manual_seed(cfg.seed)  # identical replicas
    model = ByteLM(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, seq_len=cfg.seq_len).to(device)
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)
    if cfg.optimizer == "demo":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # k clipped on small tensors (norms, biases) is expected
            opt = DeMo(params, lr=cfg.lr, weight_decay=cfg.weight_decay, timeout_s=cfg.timeout_s, **cfg.demo)
    elif cfg.optimizer == "lowcomms":
        opt = DeMoLowComms(params, lr=cfg.lr, weight_decay=cfg.weight_decay, timeout_s=cfg.timeout_s)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    else:
        opt = _SignSGD(params, lr=cfg.lr, momentum=cfg.signsgd_momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps) if cfg.schedule == "cosine" else None
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    hist = dict(loss=[], bytes_sent=[], bytes_received=[], step_s=[], opt_s=[], val_step=[], val_loss=[])
    val_batches = _val_batches(cfg, val).to(device) if (rank == 0 and val is not None) else None
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        batch = _sample_batch(data, cfg.batch_size, cfg.seq_len, gen).to(device)
        opt.zero_grad(set_to_none=True)
        loss = _lm_loss(model, batch)
        loss.backward()
        t1 = time.perf_counter()
        if cfg.optimizer in ("demo", "lowcomms"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt.step()
            sent, recv = opt.bytes_sent, opt.bytes_received
        else:
            if W > 1:  # synchronous data parallelism: average the gradients
                flat = torch.cat([p.grad.reshape(-1) for p in params])
                dist.all_reduce(flat)
                flat /= W
                torch.nn.utils.vector_to_parameters(flat, [p.grad for p in params])
            opt.step()
            sent = recv = round(allreduce_bytes(n_params, W))
        if sched is not None:
            sched.step()
        t2 = time.perf_counter()
        lv = loss.detach()
        if W > 1:
            dist.all_reduce(lv)
            lv /= W
        hist["loss"].append(float(lv))
        hist["bytes_sent"].append(sent)
        hist["bytes_received"].append(recv)
        hist["opt_s"].append(t2 - t1)
        hist["step_s"].append(time.perf_counter() - t0)
        if val_batches is not None and (step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            hist["val_step"].append(step)
            hist["val_loss"].append(_val_loss(model, val_batches))
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    identical = True
    if W > 1:
        allp = [torch.empty_like(flat) for _ in range(W)]
        dist.all_gather(allp, flat)
        identical = all(torch.equal(allp[0], a) for a in allp)
        dist.destroy_process_group()
    result = dict(config=asdict(cfg), n_params=n_params, replicas_identical=identical, **hist)
    if out is not None and rank == 0:
        torch.save(result, out)
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(cfg: TrainConfig | None = None, **overrides) -> dict:
    """Train with ``cfg.workers`` processes and return rank 0's history.

    In a plain process the workers are spawned here (CPU, gloo). Under ``torchrun`` (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` set) this process is one of the workers: ``cfg.workers`` must equal
    ``WORLD_SIZE``, and each process returns its own history (rank 0's is the one the spawned path returns).

    Returns:
        ``{"config", "n_params", "replicas_identical", "loss", "bytes_sent", "bytes_received", "step_s",
        "opt_s", "val_step", "val_loss"}`` — per-step lists: mean training loss over workers, bytes this worker
        sent / received, wall time of the whole step and of the optimizer part (sync + update); and the held-out
        loss at steps ``val_step`` (measured outside the timed step).
    """
    import tempfile

    import torch.multiprocessing as mp

    if cfg is not None:
        check_type("cfg", cfg, TrainConfig, what="a TrainConfig or None")
    cfg = TrainConfig(**{**asdict(cfg or TrainConfig()), **overrides})
    data = corpus_bytes(cfg.train_bytes)
    val = corpus_bytes(max(cfg.train_bytes // 10, 4 * (cfg.seq_len + 1)), "validation")
    for split, got in (("train", data), ("validation", val)):
        if got.numel() < cfg.seq_len + 2:
            raise ValueError(f"seq_len = {cfg.seq_len} is too long: the corpus's {split} split has only "
                             f"{got.numel()} bytes")
    env = _torchrun_env()
    if env is not None:
        if cfg.workers != env["world_size"]:
            raise ValueError(f"workers = {cfg.workers} but the launcher started WORLD_SIZE = {env['world_size']} "
                             f"processes (torchrun --nproc-per-node); they must be equal")
        return _worker(env["rank"], cfg, data, None, None, val, env["local_rank"])
    if cfg.workers == 1:
        return _worker(0, cfg, data, 0, None, val)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.pt")
        mp.start_processes(_worker, args=(cfg, data, _free_port(), out, val), nprocs=cfg.workers, join=True,
                           start_method="spawn")
        return torch.load(out, weights_only=False)
