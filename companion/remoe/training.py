"""Training the tiny dense / TopK / ReMoE language models, and reading their routing afterwards.

:func:`train` follows Llama/GPT-style defaults at CPU scale: AdamW (betas 0.9/0.95, weight decay 0.1), linear
warm-up over 5% of the steps and cosine decay to a tenth of the learning rate, gradient clipping at 1.0, tied
embeddings, RoPE base 10^4. (The paper's official scripts: lr 5e-4, 1% warm-up, betas 0.9/0.999, weight decay
0.01, every weight initialised N(0, 0.01), untied embeddings, RoPE base 10^6; the router's N(0, 0.01) is the
same here.) The loss is next-token cross-entropy plus

- TopK: the Switch load-balancing loss of every MoE layer (coefficient 0.01), summed over layers;
- ReMoE: ``λ · Σ_layers (1/T) Σ_t Σ_e f_e R_te`` (:func:`~companion.remoe.load_balanced_l1`), then, once per step,
  λ ← λ·α or λ/α from the step's mean sparsity (:class:`~companion.remoe.LambdaController`).

Batches are random windows of the training split drawn from a generator seeded with ``seed``, so a run is
deterministic given its seed (on the CPU). :func:`expert_counts`, :func:`text_expert_counts` and
:func:`experts_vs_frequency` read how many experts each token uses in a trained model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from companion.lab.checks import check_float, check_int, check_tensor, check_type, describe
from companion.lab.runtime import get_device, progress, seed_everything

from .model import LMConfig, TinyLM
from .regularization import LambdaController, load_balanced_l1, routing_stats


@dataclass
class History:
    """What :func:`train` measured.

    Attributes:
        config: the model's configuration.
        records: one dict per logged step: ``step``, ``loss`` (train cross-entropy), ``lr``, and for MoE models
            ``sparsity`` (mean over layers), ``layer_sparsity``, ``expert_load`` (per layer, per expert share of
            the active pairs), ``active_experts`` (mean per token), ``layer_active_experts``, ``dead_tokens``,
            ``aux_loss`` (TopK) or ``lam`` and ``reg_loss`` (ReMoE, the λ used in that step); ``val_loss``
            on evaluation steps.
        trace: every step's scalars: ``loss``, and for MoE ``sparsity`` and ``active_experts``, for ReMoE ``lam``.
        snapshots: the routing of a fixed text at chosen steps (``snapshot_steps`` / ``snapshot_every`` of
            :func:`train`), one :func:`routing_snapshot` dict per step, step 0 being the untrained model.
        model: the trained :class:`TinyLM` (left out of :meth:`to_dict`).
        seconds: wall-clock training time.
    """

    config: LMConfig
    records: list[dict[str, Any]] = field(default_factory=list)
    trace: dict[str, list[float]] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    model: TinyLM | None = field(default=None, repr=False)
    seconds: float = 0.0

    def column(self, key: str) -> list:
        """``[(step, value)]`` of ``key`` over the logged steps that have it."""
        return [(r["step"], r[key]) for r in self.records if r.get(key) is not None]

    @property
    def final_val_loss(self) -> float | None:
        vals = self.column("val_loss")
        return vals[-1][1] if vals else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: config, records, trace, snapshots and seconds."""
        from dataclasses import asdict

        return {"config": asdict(self.config), "records": self.records, "trace": self.trace,
                "snapshots": self.snapshots, "seconds": self.seconds}


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up to ``lr``, then cosine decay to ``min_lr``."""
    step = check_int("step", step, low=0)
    lr = check_float("lr", lr, low=0, low_open=True)
    min_lr = check_float("min_lr", min_lr, low=0, high=lr)
    warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
    steps = check_int("steps", steps, low=1)
    return _lr_at(step, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, steps=steps)


def _lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress_ = (step - warmup_steps) / max(1, steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress_)))


def _windows(ids: torch.Tensor, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + torch.arange(seq_len + 1)
    chunk = ids[idx]
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def evaluate(model: TinyLM, ids: torch.Tensor, *, seq_len: int = 128, batch_size: int = 16, max_windows: int = 32) -> float:
    """Mean next-token cross-entropy (nats) on up to ``max_windows`` windows spread evenly over ``ids``."""
    check_type("model", model, TinyLM, what="a TinyLM")
    check_tensor("ids", ids, ndim=1, dtype="integer")
    seq_len = check_int("seq_len", seq_len, low=2)
    batch_size = check_int("batch_size", batch_size, low=1)
    max_windows = check_int("max_windows", max_windows, low=1)
    if ids.numel() < seq_len + 1:
        raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} ids to evaluate, got {ids.numel()}")
    device = next(model.parameters()).device
    n = min(max_windows, ids.numel() // (seq_len + 1))
    starts = torch.linspace(0, ids.numel() - seq_len - 1, n).long()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, n, batch_size):
        x, y = _windows(ids, starts[i : i + batch_size], seq_len)
        logits, _ = model(x.to(device))
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


class Trainer:
    """One model with its AdamW optimizer, learning-rate schedule, λ controller (ReMoE) and seeded batch stream;
    :meth:`step` does one optimizer step. :func:`train` drives it; the step-time benchmark times it.

    Arguments as in :func:`train` (``train_ids`` is required here).
    """

    def __init__(self, config: LMConfig, *, train_ids: torch.Tensor, steps: int, batch_size: int = 16,
                 seq_len: int = 128, lr: float = 5e-4, min_lr: float | None = None, warmup_steps: int | None = None,
                 weight_decay: float = 0.1, grad_clip: float = 1.0, seed: int = 0,
                 device: str | torch.device | None = None):
        steps, batch_size, seq_len, lr, min_lr, warmup_steps, seed = _check_run(
            config, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, min_lr=min_lr,
            warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip, seed=seed)
        warmup_steps = max(1, steps // 20) if warmup_steps is None else warmup_steps
        min_lr = lr / 10 if min_lr is None else min_lr
        _check_ids("train_ids", train_ids, seq_len, config.vocab_size)
        self.config, self.steps, self.batch_size, self.seq_len = config, steps, batch_size, seq_len
        self.lr, self.min_lr, self.warmup_steps, self.grad_clip = lr, min_lr, warmup_steps, grad_clip
        self.device = get_device(device)
        self.train_ids = train_ids.long()
        seed_everything(seed)
        self.model = TinyLM(config).to(self.device)
        self.model.train()
        params = list(self.model.named_parameters())
        self.opt = torch.optim.AdamW(
            [{"params": [p for _, p in params if p.dim() >= 2], "weight_decay": weight_decay},
             {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0}],
            lr=lr, betas=(0.9, 0.95), eps=1e-8)
        self.controller = (LambdaController(num_experts=config.num_experts, k=config.k, lam0=config.lam0,
                                            alpha=config.alpha) if config.ffn == "remoe" else None)
        self.gen = torch.Generator().manual_seed(seed)
        self.done = 0

    def step(self) -> dict[str, Any]:
        """One optimizer step; returns ``loss`` (cross-entropy), ``lr``, ``routings``, and for MoE models
        ``sparsity`` (mean over layers), plus ``aux_loss`` (TopK) or ``lam`` (used in this step) and ``reg_loss``."""
        c = self.config
        lr = _lr_at(self.done, lr=self.lr, min_lr=self.min_lr, warmup_steps=self.warmup_steps, steps=self.steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, self.train_ids.numel() - self.seq_len, (self.batch_size,), generator=self.gen)
        x, y = _windows(self.train_ids, starts, self.seq_len)
        logits, routings = self.model(x.to(self.device))
        ce = F.cross_entropy(logits.flatten(0, 1).float(), y.to(self.device).flatten())
        loss = ce
        out: dict[str, Any] = {"lr": lr, "routings": routings}
        if c.ffn == "topk":
            aux = torch.stack([r.aux_loss for r in routings]).sum()  # Σ_layers 0.01·E·Σ_e f_e P_e
            loss = loss + aux
            out["aux_loss"] = aux.item()
        elif self.controller is not None:
            reg = torch.stack([load_balanced_l1(r.gates, k=c.k, balanced=c.l1 == "balanced")
                               for r in routings]).sum()  # Σ_layers (1/T) Σ_t Σ_e f_e R_te
            out.update(lam=self.controller.lam, reg_loss=reg.item())
            loss = loss + self.controller.lam * reg
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.done += 1
        out["loss"] = ce.item()
        if routings:
            layer_s = [1.0 - r.mask.sum().item() / r.mask.numel() for r in routings]  # S = 1 - nonzero/(T·E)
            out["sparsity"] = sum(layer_s) / len(layer_s)
            if self.controller is not None:
                self.controller.update(min(1.0, max(0.0, out["sparsity"])))  # λ ← λ·α or λ/α
        return out


def _check_run(config, *, steps, batch_size, seq_len, lr, min_lr, warmup_steps, weight_decay, grad_clip, seed):
    """The checks shared by :class:`Trainer` and :func:`train`; returns the normalised
    ``(steps, batch_size, seq_len, lr, min_lr, warmup_steps, seed)`` (``None`` left as ``None``)."""
    check_type("config", config, LMConfig, what="an LMConfig")
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    seq_len = check_int("seq_len", seq_len, low=2)
    warmup_steps = None if warmup_steps is None else check_int("warmup_steps", warmup_steps, low=0)
    lr = check_float("lr", lr, low=0, low_open=True)
    min_lr = None if min_lr is None else check_float("min_lr", min_lr, low=0, high=lr)
    check_float("weight_decay", weight_decay, low=0)
    if grad_clip is not None:  # None or 0: no clipping
        check_float("grad_clip", grad_clip, low=0)
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    return steps, batch_size, seq_len, lr, min_lr, warmup_steps, seed


def _check_ids(name: str, ids, seq_len: int, vocab_size: int | None = None) -> None:
    check_tensor(name, ids, ndim=1, dtype="integer", nonempty=False)
    if ids.numel() < seq_len + 1:
        raise ValueError(f"{name} has {ids.numel()} ids, fewer than seq_len + 1 = {seq_len + 1}")
    if vocab_size is not None:
        _check_vocab(name, ids, vocab_size)


def _check_vocab(name: str, ids: torch.Tensor, vocab_size: int) -> None:
    """Token ids in ``[0, vocab_size)`` (checked once, up front, not at the step that would read them)."""
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"{name} must hold token ids in [0, vocab_size = {vocab_size}), got range [{low}, {high}]")


def _check_moe_model(model) -> None:
    if not isinstance(model, TinyLM) or model.config.ffn == "dense":
        raise TypeError(f"model must be a TinyLM with MoE layers (ffn 'topk' or 'remoe'), got {describe(model)}")


def train(
    config: LMConfig,
    *,
    steps: int,
    batch_size: int = 16,
    seq_len: int = 128,
    lr: float = 5e-4,
    min_lr: float | None = None,
    warmup_steps: int | None = None,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    seed: int = 0,
    log_every: int = 10,
    eval_every: int | None = None,
    eval_windows: int = 32,
    train_ids: torch.Tensor | None = None,
    val_ids: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    show_progress: bool = True,
    snapshot_every: int | None = None,
    snapshot_steps: Iterable[int] | None = None,
    snapshot_ids: torch.Tensor | None = None,
) -> History:
    """Train a :class:`TinyLM` from scratch and record its loss and routing.

    Args:
        config: the model (``config.ffn`` picks dense / TopK / ReMoE).
        steps: optimizer steps.
        batch_size, seq_len: each step sees ``batch_size`` random windows of ``seq_len`` tokens (T = their product).
        lr, min_lr: peak learning rate (the paper's 5e-4) and the end of the cosine (default ``lr / 10``).
        warmup_steps: linear warm-up (default ``max(1, steps // 20)``).
        weight_decay, grad_clip: AdamW's decoupled weight decay (0.1) and the gradient-norm clip (1.0).
        seed: seeds the initialisation and the batches.
        log_every: write a record every ``log_every`` steps (and at the first and last step).
        eval_every: measure the validation loss every ``eval_every`` steps (default ``max(log_every, steps // 10)``)
            and at the last step.
        eval_windows: validation windows per evaluation.
        train_ids, val_ids: ``LongTensor[N]`` token ids (default: :func:`~companion.remoe.corpus_ids`).
        device: default CUDA when available, else CPU.
        show_progress: a tqdm bar (``companion.lab.progress``).
        snapshot_every: take a :func:`routing_snapshot` of ``snapshot_ids`` at step 0 (before training), every
            ``snapshot_every`` steps and at the last step (MoE models only).
        snapshot_steps: or at exactly these steps (ints in ``[0, steps]``; 0 is the untrained model).
        snapshot_ids: ``LongTensor[T]``, the fixed text the snapshots read (required with either option).
    Returns:
        A :class:`History` with the trained model (and its :attr:`History.snapshots`).
    """
    steps, _, seq_len, *_ = _check_run(config, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                                       min_lr=min_lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
                                       grad_clip=grad_clip, seed=seed)
    log_every = check_int("log_every", log_every, low=1)
    eval_every = max(log_every, steps // 10) if eval_every is None else check_int("eval_every", eval_every, low=1)
    eval_windows = check_int("eval_windows", eval_windows, low=1)
    check_type("show_progress", show_progress, bool)
    get_device(device)  # a bad device fails now, not after the corpus is loaded
    for name, ids in (("train_ids", train_ids), ("val_ids", val_ids)):
        if ids is not None:
            _check_ids(name, ids, seq_len, config.vocab_size)
    snap_at = _snapshot_plan(config, steps, snapshot_every, snapshot_steps, snapshot_ids)
    if train_ids is None or val_ids is None:
        from .tokenizer import corpus_ids

        train_ids = corpus_ids("train", vocab_size=config.vocab_size) if train_ids is None else train_ids
        val_ids = corpus_ids("validation", vocab_size=config.vocab_size) if val_ids is None else val_ids
    _check_ids("val_ids", val_ids, seq_len)
    trainer = Trainer(config, train_ids=train_ids, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                      min_lr=min_lr, warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip,
                      seed=seed, device=device)
    val_ids = val_ids.long()
    history = History(config=config, model=trainer.model)
    trace: dict[str, list[float]] = {"loss": []}
    if config.ffn != "dense":
        trace.update(sparsity=[], active_experts=[])
    if config.ffn == "remoe":
        trace["lam"] = []
    history.trace = trace
    start = time.perf_counter()
    if 0 in snap_at:
        history.snapshots.append({"step": 0, **routing_snapshot(trainer.model, snapshot_ids)})
    bar = progress(range(steps), desc=f"training {config.ffn}") if show_progress else range(steps)
    for step in bar:
        out = trainer.step()
        done = step + 1
        trace["loss"].append(out["loss"])
        if "sparsity" in out:
            trace["sparsity"].append(out["sparsity"])
            trace["active_experts"].append(config.num_experts * (1 - out["sparsity"]))
        if "lam" in out:
            trace["lam"].append(out["lam"])
        if done % log_every == 0 or done % eval_every == 0 or done in (1, steps):
            record: dict[str, Any] = {"step": done, **{k: v for k, v in out.items() if k not in ("routings", "sparsity")}}
            if out["routings"]:
                record.update(routing_stats(out["routings"]))
            if done % eval_every == 0 or done == steps:
                record["val_loss"] = evaluate(trainer.model, val_ids, seq_len=seq_len, batch_size=batch_size,
                                              max_windows=eval_windows)
            history.records.append(record)
            if show_progress and hasattr(bar, "set_postfix"):
                post = {"loss": f"{out['loss']:.3f}"}
                if "sparsity" in out:
                    post["S"] = f"{out['sparsity']:.3f}"
                if "lam" in out:
                    post["λ"] = f"{out['lam']:.1e}"
                bar.set_postfix(post)
        if done in snap_at:
            history.snapshots.append({"step": done, **routing_snapshot(trainer.model, snapshot_ids)})
    history.seconds = time.perf_counter() - start
    trainer.model.eval()
    return history


def _snapshot_plan(config: LMConfig, steps: int, every, at, ids) -> set[int]:
    if every is not None:
        every = check_int("snapshot_every", every, low=1)
    if at is not None:
        if isinstance(at, (str, bytes)) or not hasattr(at, "__iter__"):
            raise TypeError(f"snapshot_steps must be an iterable of ints in [0, steps = {steps}], got {describe(at)}")
        at = [check_int(f"snapshot_steps[{i}] (steps = {steps})", s, low=0, high=steps) for i, s in enumerate(at)]
    if every is None and at is None:
        return set()
    if every is not None and at is not None:
        raise ValueError("pass snapshot_every or snapshot_steps, not both")
    if config.ffn == "dense":
        raise ValueError("snapshots read the routing, and a dense model has none (ffn='dense')")
    check_tensor("snapshot_ids", ids, ndim=1, dtype="integer")  # the fixed text
    _check_vocab("snapshot_ids", ids, config.vocab_size)
    if every is not None:
        return {0, steps, *range(every, steps, every)}
    return set(at)


@torch.no_grad()
def routing_snapshot(model: TinyLM, ids: torch.Tensor) -> dict[str, Any]:
    """How a model routes one fixed text, as plain Python numbers (the expert-sparsity widget's frames).

    Args:
        model: an MoE :class:`TinyLM`.
        ids: ``LongTensor[T]``, read as one sequence.
    Returns:
        ``{"activity": [n_layers][E] share of the T tokens that use each expert, "counts": [n_layers][T] active
        experts of every token, "sparsity": S = 1 − #nonzero/(T·E) averaged over layers,
        "dead_tokens": share of (token, layer) pairs with no expert}``.
    """
    _check_moe_model(model)
    check_tensor("ids", ids, ndim=1, dtype="integer")
    was_training = model.training
    model.eval()
    try:
        _, routings = model(ids.long()[None].to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    counts = torch.stack([r.mask.sum(-1) for r in routings]).cpu()  # [L, T] active experts per token
    activity = torch.stack([r.mask.double().mean(0) for r in routings]).cpu()  # [L, E] share of tokens
    return {"activity": activity.tolist(), "counts": counts.tolist(),
            "sparsity": float(1.0 - activity.mean()), "dead_tokens": float((counts == 0).double().mean())}


@torch.no_grad()
def measure_routing(model: TinyLM, ids: torch.Tensor, *, seq_len: int = 128, max_tokens: int = 16384,
                    batch_size: int = 16) -> dict[str, Any]:
    """:func:`~companion.remoe.routing_stats` of a trained model over held-out text (not one training batch).

    Args:
        model: an MoE :class:`TinyLM`.
        ids: ``LongTensor[N]``, read in windows of ``seq_len`` (at most ``max_tokens`` ids).
    Returns:
        ``routing_stats`` over all the windows' tokens: ``sparsity``, ``layer_sparsity``, ``expert_load``
        (``[n_layers][E]``, shares summing to 1 per layer), ``active_experts``, ``layer_active_experts``,
        ``dead_tokens``.
    """
    from .routers import Routing

    _check_moe_model(model)
    check_tensor("ids", ids, ndim=1, dtype="integer")
    seq_len = check_int("seq_len", seq_len, low=1)
    max_tokens = check_int("max_tokens", max_tokens, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    ids = ids.long()[:max_tokens]
    n = (ids.numel() // seq_len) * seq_len
    if n == 0:
        raise ValueError(f"need at least seq_len = {seq_len} ids, got {ids.numel()} (max_tokens = {max_tokens})")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    masks: list[list[torch.Tensor]] = [[] for _ in range(model.config.n_layers)]
    try:
        for chunk in ids[:n].view(-1, seq_len).split(batch_size):
            _, routings = model(chunk.to(device))
            for layer, r in enumerate(routings):
                masks[layer].append(r.mask.cpu())
    finally:
        model.train(was_training)
    merged = []
    for m in masks:
        mask = torch.cat(m)
        merged.append(Routing(gates=mask.double(), mask=mask, logits=mask.double()))
    return routing_stats(merged)


@torch.no_grad()
def expert_counts(model: TinyLM, ids: torch.Tensor) -> torch.Tensor:
    """Active experts of every token in every MoE layer.

    Args:
        model: a trained MoE :class:`TinyLM`.
        ids: ``LongTensor[T]``, read as one sequence.
    Returns:
        ``LongTensor[n_layers, T]``.
    """
    _check_moe_model(model)
    check_tensor("ids", ids, ndim=1, dtype="integer")
    device = next(model.parameters()).device
    _, routings = model(ids.long()[None].to(device))
    return torch.stack([r.mask.sum(-1) for r in routings]).cpu()


def text_expert_counts(model: TinyLM, tokenizer, text: str) -> tuple[list[str], torch.Tensor]:
    """Tokenize ``text`` and return ``(token strings, LongTensor[n_layers, T] of active experts)``."""
    _check_moe_model(model)
    if not hasattr(tokenizer, "encode") or not hasattr(tokenizer, "decode"):
        raise TypeError(f"tokenizer must be a tokenizers.Tokenizer (from load_tokenizer), got {describe(tokenizer)}")
    check_type("text", text, str)
    if not text:
        raise ValueError("text must be a non-empty string")
    enc = tokenizer.encode(text)
    tokens = [tokenizer.decode([i]) for i in enc.ids]
    return tokens, expert_counts(model, torch.tensor(enc.ids))


def token_frequency(ids: torch.Tensor, vocab_size: int) -> np.ndarray:
    """Relative frequency of each token id in ``ids``, ``float64[vocab_size]`` summing to 1."""
    check_tensor("ids", ids, ndim=1, dtype="integer")
    vocab_size = check_int("vocab_size", vocab_size, low=1)
    _check_vocab("ids", ids, vocab_size)
    counts = np.bincount(ids.cpu().numpy().astype(np.int64), minlength=vocab_size).astype(np.float64)
    return counts / max(1.0, counts.sum())


@torch.no_grad()
def experts_vs_frequency(model: TinyLM, ids: torch.Tensor, frequency: np.ndarray, *, bins: int = 6,
                         seq_len: int = 128, max_tokens: int = 32768) -> dict[str, list[float]]:
    """Mean active experts per token (averaged over layers), binned by the token's training frequency.

    The paper finds that ReMoE gives rarer tokens more experts (check it on your run: a short run need not show
    it). Bins are quantiles of ``log frequency`` over the evaluated tokens, so each holds about as many tokens.

    Args:
        model: a trained MoE :class:`TinyLM`.
        ids: ``LongTensor[N]`` text to read (e.g. the validation split), in windows of ``seq_len``.
        frequency: ``[vocab]`` relative frequencies (from :func:`token_frequency` on the training split).
        bins: number of frequency bins.
        max_tokens: read at most this many ids.
    Returns:
        ``{"frequency": median frequency per bin, "low", "high": bin edges, "mean_experts", "tokens"}`` lists,
        rarest bin first.
    """
    _check_moe_model(model)
    check_tensor("ids", ids, ndim=1, dtype="integer")
    bins = check_int("bins", bins, low=1)
    seq_len = check_int("seq_len", seq_len, low=1)
    max_tokens = check_int("max_tokens", max_tokens, low=1)
    if isinstance(frequency, (str, bytes)) or frequency is None:
        raise TypeError(f"frequency must be a numpy array of [vocab] relative frequencies, got {describe(frequency)}")
    try:
        frequency = np.asarray(frequency, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"frequency must be an array of numbers, got {describe(frequency)}") from None
    if frequency.shape != (model.config.vocab_size,):
        raise ValueError(f"frequency must have shape [{model.config.vocab_size}], got {frequency.shape}")
    if not (np.isfinite(frequency).all() and (frequency >= 0).all()):
        raise ValueError("frequency must hold finite numbers >= 0 (relative token frequencies)")
    ids = ids.long()[:max_tokens]
    n = (ids.numel() // seq_len) * seq_len
    if n == 0:
        raise ValueError(f"need at least seq_len = {seq_len} ids, got {ids.numel()} (max_tokens = {max_tokens})")
    device = next(model.parameters()).device
    counts = []
    for chunk in ids[:n].view(-1, seq_len).split(16):
        _, routings = model(chunk.to(device))
        counts.append(torch.stack([r.mask.sum(-1) for r in routings]).double().mean(0).cpu())
    experts = torch.cat(counts).numpy()
    logf = np.log10(np.maximum(frequency[ids[:n].numpy()], 1e-12))
    edges = np.unique(np.quantile(logf, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, logf, side="right") - 1, 0, len(edges) - 2)
    out: dict[str, list[float]] = {"frequency": [], "low": [], "high": [], "mean_experts": [], "tokens": []}
    for b in range(len(edges) - 1):
        sel = which == b
        if not sel.any():
            continue
        out["frequency"].append(float(10 ** np.median(logf[sel])))
        out["low"].append(float(10 ** edges[b]))
        out["high"].append(float(10 ** edges[b + 1]))
        out["mean_experts"].append(float(experts[sel].mean()))
        out["tokens"].append(int(sel.sum()))
    return out
