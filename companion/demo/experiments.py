"""The DeMo chapter's experiments: energy compaction of real momentum, and multi-worker training sweeps.

- :func:`momentum_snapshot` — train the tiny byte LM (:class:`companion.demo.ByteLM`) in one process with DeMo and
  return every 2-D parameter's momentum as DeMo is about to compress it, the plain (never compressed) momentum
  and the gradient;
- :func:`energy_curves` — share of each tensor's energy held by the top-k coefficients per chunk, DCT vs raw;
- :data:`SETTINGS` / :func:`run_setting` / :func:`sweep` — AdamW + all-reduce, signSGD-momentum + all-reduce, DeMo
  at k = 32, 8, 1, the three ablations, and the two baselines that isolate DeMo's parts (k = a whole tile; signum
  with DeMo's β = 0.999), and the author's later design (:class:`companion.demo.DeMoLowComms`), each trained by N
  gloo workers (:func:`companion.demo.train`);
- :func:`received_vs_workers` — bytes a worker receives per step: DeMo's all-gather vs a ring all-reduce of fp32
  or bf16 gradients, for W workers, and the break-even W.
"""

from __future__ import annotations

import statistics

import time
import warnings
from typing import Any, Callable, Iterable

import torch

from companion.lab.checks import check_float, check_int

from .compress import allgather_received_bytes, allreduce_bytes, model_wire_bytes, topk_energy_share
from .optimizer import DeMo
from .training import ByteLM, TrainConfig, corpus_bytes, lm_loss, sample_batch, train

#: name -> (optimizer, DeMo keyword arguments); the chapter's comparison
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "AdamW": ("adamw", {}),
    "signSGD": ("signsgd", {}),
    "DeMo k=32": ("demo", dict(compression_topk=32)),
    "DeMo k=8": ("demo", dict(compression_topk=8)),
    "DeMo k=1": ("demo", dict(compression_topk=1)),
    "k=32, no error feedback": ("demo", dict(compression_topk=32, error_feedback=False)),
    "k=32, no DCT": ("demo", dict(compression_topk=32, transform="identity")),
    "k=32, 1-D chunks": ("demo", dict(compression_topk=32, tiling="1d")),
    # the two baselines that isolate DeMo's parts: k = a whole 64 x 64 tile (error feedback then empties δ every
    # step, so the update is sign(mean of the workers' g) without momentum), and signum with DeMo's β
    "DeMo k=4096 (whole tile)": ("demo", dict(compression_topk=4096)),
    "signum β=0.999": ("signsgd", {}),
    # the author's later design (DeMoLowComms with its defaults: momentum 0.99 in the DCT domain, k = 5 of 128,
    # 1 byte per coefficient), at the run's lr and weight decay
    "DeMoLowComms (later design)": ("lowcomms", {}),
}
#: :class:`TrainConfig` settings of a setting besides its optimizer and DeMo options
SETTING_CONFIG: dict[str, dict[str, Any]] = {"signum β=0.999": dict(signsgd_momentum=0.999)}


def momentum_snapshot(steps: int = 200, *, lr: float = 1e-3, seed: int = 0, compression_decay: float = 0.999,
                      **model) -> dict[str, dict[str, torch.Tensor]]:
    """Real tensors DeMo could compress, from a ByteLM trained ``steps`` steps with single-worker DeMo (k = 32).

    Along DeMo's trajectory, for every 2-D parameter and the gradient of one more batch ``g``:

    - ``"demo"``: ``β δ + η g``, the tensor DeMo's step 3 encodes next (``δ`` is what error feedback left);
    - ``"momentum"``: ``β m + η g`` with ``m`` accumulated the same way but never compressed (no error feedback);
    - ``"gradient"``: ``g`` itself.

    ``β`` is DeMo's ``compression_decay`` (default 0.999, the paper's and the official code's; :class:`DeMo`),
    used by the optimizer and by the plain momentum alike; ``η`` is ``lr``. Batches ``[batch_size, seq_len + 1]``
    of the corpus (:class:`TrainConfig`'s defaults: 8 x 65; :func:`~companion.demo.training.sample_batch`, its
    generator seeded with ``seed``).

    Returns ``{kind: {parameter name: tensor}}``, each tensor of its parameter's shape. ``model`` overrides
    ByteLM's sizes (``d_model``, ``n_layers``, ``n_heads``, ``seq_len``).

    Raises:
        TypeError/ValueError: ``steps`` not an int >= 0, ``compression_decay`` not a number in [0, 1), or a bad
            ``lr``, ``seed`` or model size (named in the message).
    """
    steps = check_int("steps", steps, low=0)
    compression_decay = check_float("compression_decay", compression_decay, low=0.0, high=1.0, high_open=True)
    cfg = TrainConfig(workers=1, seed=seed, **model)
    torch.manual_seed(seed)
    net = ByteLM(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, seq_len=cfg.seq_len)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = DeMo(net.parameters(), lr=lr, compression_decay=compression_decay)
    beta = opt.compression_decay
    named = [(n, p) for n, p in net.named_parameters() if p.dim() == 2]
    plain = {n: torch.zeros_like(p) for n, p in named}
    data = corpus_bytes(cfg.train_bytes)
    gen = torch.Generator().manual_seed(seed)

    def backward():
        opt.zero_grad(set_to_none=True)
        lm_loss(net, sample_batch(data, cfg.batch_size, cfg.seq_len, gen)).backward()

    for _ in range(steps):
        backward()
        with torch.no_grad():
            for n, p in named:
                plain[n].mul_(beta).add_(p.grad, alpha=lr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step()
    backward()
    out: dict[str, dict[str, torch.Tensor]] = {"demo": {}, "momentum": {}, "gradient": {}}
    with torch.no_grad():
        for n, p in named:
            delta = opt.state[p]["delta"] if p in opt.state else torch.zeros_like(p)
            out["demo"][n] = beta * delta + lr * p.grad
            out["momentum"][n] = beta * plain[n] + lr * p.grad
            out["gradient"][n] = p.grad.clone()
    return out


def energy_curves(tensors: dict[str, torch.Tensor], ks: Iterable[int], *, chunk: int = 64) -> dict[str, dict]:
    """``{name: {"shape", "dct": [share per k], "raw": [share per k]}}`` — :func:`topk_energy_share` for each k."""
    ks = list(ks)
    if not ks:
        raise ValueError("ks must be a non-empty list of ints >= 1, got []")
    ks = [check_int(f"ks[{i}]", k, low=1) for i, k in enumerate(ks)]
    return {name: {"shape": list(t.shape),
                   "dct": [topk_energy_share(t, k, chunk=chunk, transform="dct") for k in ks],
                   "raw": [topk_energy_share(t, k, chunk=chunk, transform="identity") for k in ks]}
            for name, t in tensors.items()}


def run_setting(name: str, *, workers: int = 2, steps: int = 300, lr: float | None = None, seed: int = 0,
                **overrides) -> dict[str, Any]:
    """Train one of :data:`SETTINGS` with ``workers`` gloo processes; a compact record of the run.

    ``lr`` defaults to 3e-3 for AdamW and 1e-3 for the sign-based updates. Returns ``{"setting", "workers",
    "lr", "seed", "steps", "n_params", "loss", "val_step", "val_loss", "bytes_sent", "bytes_received", "step_ms",
    "opt_ms", "replicas_identical", "seconds"}`` — ``loss`` per step, bytes and times per step (medians).
    """
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; expected one of {list(SETTINGS)}")
    optimizer, demo = SETTINGS[name]
    lr = lr if lr is not None else (3e-3 if optimizer == "adamw" else 1e-3)
    t0 = time.perf_counter()
    r = train(TrainConfig(optimizer=optimizer, workers=workers, steps=steps, lr=lr, seed=seed, demo=dict(demo),
                          **{**SETTING_CONFIG.get(name, {}), **overrides}))
    med = lambda xs: float(torch.tensor(xs, dtype=torch.float64).median())  # noqa: E731
    return dict(setting=name, workers=workers, lr=lr, seed=seed, steps=steps, n_params=r["n_params"], loss=r["loss"],
                val_step=r["val_step"], val_loss=r["val_loss"], bytes_sent=med(r["bytes_sent"]),
                bytes_received=med(r["bytes_received"]), step_ms=1e3 * med(r["step_s"]),
                opt_ms=1e3 * med(r["opt_s"]), replicas_identical=r["replicas_identical"],
                seconds=time.perf_counter() - t0)


def sweep(names: Iterable[str], *, workers: int = 2, steps: int = 300, lrs: dict[str, float] | None = None,
          seeds: Iterable[int] = (0,), done: list[dict] | None = None,
          on_result: Callable[[list[dict]], None] | None = None, **overrides) -> list[dict]:
    """:func:`run_setting` for every name x seed; runs already in ``done`` (same setting, workers, lr, seed and
    steps) are skipped, and ``on_result`` is called with the growing list after each run (to save progress)."""
    names, lrs = list(names), dict(lrs or {})
    results = list(done or [])
    for name in names:
        for seed in seeds:
            lr = lrs.get(name)
            key = (name, workers, lr, seed, steps)
            if any((r["setting"], r["workers"], r.get("lr_requested"), r["seed"], r["steps"]) == key
                   for r in results):
                continue
            rec = run_setting(name, workers=workers, steps=steps, lr=lr, seed=seed, **overrides)
            rec["lr_requested"] = lr
            results.append(rec)
            if on_result is not None:
                on_result(results)
    return results


def thin_loss(run: dict[str, Any], every: int = 10) -> dict[str, Any]:
    """The run with its per-step training ``loss`` replaced by means over blocks of ``every`` steps
    (``train_loss``, ``train_loss_every``): the saved results stay small (a sweep has tens of 1000-step runs)."""
    every = check_int("every", every, low=1)
    if "loss" not in run:
        return run
    loss = run["loss"]
    blocks = [loss[i:i + every] for i in range(0, len(loss), every)]
    out = {k: v for k, v in run.items() if k != "loss"}
    return {**out, "train_loss": [round(sum(b) / len(b), 4) for b in blocks], "train_loss_every": every}


def paired_difference(summary: dict[str, dict[str, Any]], first: str, second: str):
    """``second − first`` final held-out loss, seed by seed over the seeds both settings of a :func:`sweep_summary`
    have, as a :func:`companion.lab.spread` (mean, sample sd, n, 95% t-interval)."""
    from companion.lab.stats import spread

    a, b = summary[first], summary[second]
    both = sorted(set(a["seeds"]) & set(b["seeds"]))
    return spread([b["losses"][b["seeds"].index(i)] - a["losses"][a["seeds"].index(i)] for i in both])


def received_vs_workers(shapes: Iterable[tuple[int, ...]], workers: Iterable[int], *, k: int = 32,
                        chunk: int = 64, wire_format: str = "compact", value_bytes: int = 4) -> dict[str, list]:
    """Bytes one worker receives per step with W workers: DeMo's all-gather ``(W − 1) · tx`` vs a ring all-reduce
    of the gradients ``2 (W − 1)/W · b · P`` (``b`` = ``value_bytes`` of the all-reduce: 4 for fp32, 2 for bf16,
    the paper's AdamW-DDP figure of 2416.6 MB for OLMo-1B's 1.18 B parameters); and the smallest W where the
    all-gather receives more, ``floor(2 b P / tx) + 1``. ``wire_format`` is DeMo's (``"compact"`` /
    ``"official"``, fp32 values) or ``"lowcomms"`` (the later 1-byte index+sign format at its default ratio,
    :func:`companion.demo.lowcomms_wire_bytes`; ``k`` and ``chunk`` are then unused)."""
    from .lowcomms import lowcomms_wire_bytes

    shapes = [tuple(s) for s in shapes]
    if not shapes:
        raise ValueError("shapes must hold at least one parameter shape, got none")
    workers = list(workers)
    value_bytes = check_int("value_bytes", value_bytes, low=1)
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    if wire_format == "lowcomms":
        tx = lowcomms_wire_bytes(shapes)
    else:
        tx = model_wire_bytes(shapes, k=k, chunk=chunk, wire_format=wire_format)
    gather = [allgather_received_bytes(tx, w) for w in workers]
    ring = [allreduce_bytes(numel, w, value_bytes=value_bytes) for w in workers]
    # (W-1) tx > 2 (W-1)/W b P  <=>  W > 2 b P / tx  (for W > 1)
    breakeven = int(2 * value_bytes * numel // tx) + 1
    return dict(workers=workers, tx=tx, numel=numel, allgather=gather, allreduce=ring, breakeven=breakeven)


def sweep_summary(full: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per setting of a saved full sweep (``results/demo/sweep.json``): each family's learning rate (the one
    with the lowest final held-out loss for seed 0 and 2 workers in the search), then at that rate over 2
    workers and every seed: ``{"loss": mean final held-out loss, "losses": per seed, "seeds", "bytes": bytes
    sent per worker per step, "lr", "steps"}``. Settings outside the search use DeMo k = 32's rate, as the sweep
    does (``results/demo/baselines.json``, whose settings all have their own search, works the same way).
    ``extra`` (``results/demo/seeds.json``, from ``python -m companion demo seeds --full``) adds its runs of the
    same settings, workers, rate and length as further seeds."""
    runs = full["runs"]
    grid = full["settings"]["lr_grid"]
    best = {}
    for name, lrs in grid.items():
        finals = {lr: next(r["val_loss"][-1] for r in runs if r["setting"] == name and r["workers"] == 2
                           and r["seed"] == 0 and r["lr"] == lr) for lr in lrs}
        best[name] = min(finals, key=finals.get)
    pool = [r for r in runs if r["seed"] in full["settings"]["seeds"]] + list((extra or {}).get("runs", []))
    out = {}
    for name in sorted({r["setting"] for r in runs}):
        lr = best[name] if name in best else best["DeMo k=32"]
        rs = sorted((r for r in pool if r["setting"] == name and r["workers"] == 2 and r["lr"] == lr
                     and r["steps"] == full["settings"]["steps"]), key=lambda r: r["seed"])
        seen = set()
        rs = [r for r in rs if not (r["seed"] in seen or seen.add(r["seed"]))]  # one run per seed
        if rs:
            out[name] = {"loss": statistics.mean(r["val_loss"][-1] for r in rs),
                         "losses": [r["val_loss"][-1] for r in rs], "seeds": [r["seed"] for r in rs],
                         "bytes": rs[0]["bytes_sent"], "lr": lr, "steps": rs[0]["steps"]}
    return out
