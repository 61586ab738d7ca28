"""``python -m companion demo <experiment>``: the chapter's multi-worker runs.

- ``train --workers N [--optimizer demo|adamw|signsgd|lowcomms] [--schedule constant|cosine] [--full]``: N CPU
  worker processes (gloo) train a tiny byte-level LM on the standard-library corpus (``--schedule cosine``: the
  rate decays to 0 over the run, :class:`~companion.demo.TrainConfig`'s ``schedule``); prints loss, bytes and
  wall time per step. ``--full`` trains longer and writes ``results/demo/train_<optimizer>_w<N>.json``
  (``..._w<N>_cosine.json`` with the cosine schedule). Under ``torchrun --nproc-per-node N -m companion demo
  train`` each process is one worker (env:// rendezvous; NCCL on CUDA, gloo otherwise; ``--workers`` defaults to
  N) and rank 0 prints and writes.
- ``sweep [--full] [--resume]``: the comparison of the chapter (:data:`companion.demo.experiments.SETTINGS`).
  Quick: AdamW, DeMo k = 32 and k = 1, 2 workers, 100 steps, printed only. Full (:data:`SWEEP`): a learning-rate
  search for AdamW, signSGD and DeMo k = 32 (2 workers, seed 0), then every setting at its family's best rate
  with 2 workers and two seeds, then AdamW / DeMo k = 32 / k = 1 with 4 workers; written to
  ``results/demo/sweep.json`` after every run (``--resume`` keeps finished runs).
- ``baselines --full [--resume]``: the baselines that isolate DeMo's parts, DeMo with k = a whole 64 x 64 tile
  and signum with DeMo's β = 0.999, the no-DCT ablation and the author's later design (DeMoLowComms), each with
  its own learning-rate search (seed 0, :data:`BASELINES`), then five seeds at the best rate; written to
  ``results/demo/baselines.json``.
- ``seeds --full [--resume]``: more seeds (:data:`SEEDS`) of AdamW, signSGD and DeMo k = 32 at the learning
  rates the committed sweep tuned, so that their paired differences have a spread worth the name; written to
  ``results/demo/seeds.json`` (its own provenance: the runs of ``sweep.json`` are not touched).
"""

from __future__ import annotations

import argparse
import statistics

from companion.lab.checks import cli_float, cli_int

from .training import SCHEDULES

#: steps of the quick and the full run
QUICK_STEPS, FULL_STEPS = 30, 600

#: the settings of the full sweep (the committed results/demo/sweep.json)
SWEEP_SETTINGS = ["AdamW", "signSGD", "DeMo k=32", "DeMo k=8", "DeMo k=1", "k=32, no error feedback",
                  "k=32, no DCT", "k=32, 1-D chunks"]
#: the full sweep
SWEEP = dict(steps=1000, eval_every=50,
             lr_grid={"AdamW": [1e-3, 3e-3, 1e-2, 3e-2], "signSGD": [3e-4, 1e-3, 3e-3], "DeMo k=32": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]},
             seeds=[0, 1], wide=dict(workers=4, settings=["AdamW", "DeMo k=32", "DeMo k=1"]))
#: the extra seeds of the main comparison (``demo seeds --full``), at the sweep's tuned rates
SEEDS = dict(steps=1000, eval_every=50, workers=2, seeds=[2, 3, 4], settings=["AdamW", "signSGD", "DeMo k=32"])
#: the baselines that isolate DeMo's parts, the no-DCT ablation's own rate and the later design (``demo baselines
#: --full``): a rate search per setting (seed 0), then ``seeds`` at each one's best rate; same model, data, workers
#: and length as the sweep
BASELINES = dict(steps=1000, eval_every=50, workers=2, seeds=[0, 1, 2, 3, 4],
                 lr_grid={"DeMo k=4096 (whole tile)": [1e-3, 3e-3, 1e-2, 3e-2],
                          "signum β=0.999": [3e-4, 1e-3, 3e-3, 1e-2], "k=32, no DCT": [1e-2, 3e-2, 1e-1],
                          "DeMoLowComms (later design)": [1e-3, 3e-3, 1e-2, 3e-2]})
#: the quick version
QUICK_SWEEP = dict(steps=100, eval_every=25, settings=["AdamW", "DeMo k=32", "DeMo k=1"])


def best_lrs(runs: list[dict], grid: dict[str, list[float]], *, workers: int = 2) -> dict[str, float]:
    """The learning rate with the lowest final held-out loss of each setting in ``grid`` (seed 0 runs)."""
    best = {}
    for name, lrs in grid.items():
        cands = [r for r in runs if r["setting"] == name and r["workers"] == workers and r["seed"] == 0
                 and r["lr"] in lrs]
        if cands:
            best[name] = min(cands, key=lambda r: r["val_loss"][-1])["lr"]
    return best


def family_lr(name: str, best: dict[str, float]) -> float:
    """DeMo variants and ablations use DeMo k = 32's tuned rate; AdamW and signSGD their own."""
    return best[name] if name in best else best["DeMo k=32"]


def _sweep(args: argparse.Namespace) -> int:
    import torch

    from companion.lab import load_results, save_results

    from . import experiments as ex

    torch.set_num_threads(1)

    def show(r):
        print(f"{r['setting']:>24s}  W={r['workers']} lr={r['lr']:.0e} seed={r['seed']}: val loss "
              f"{r['val_loss'][-1]:.3f}, {r['bytes_sent']:,.0f} B sent/step, step {r['step_ms']:.1f} ms, "
              f"replicas identical {r['replicas_identical']} [{r['seconds']:.0f} s]", flush=True)

    if not args.full:
        q = QUICK_SWEEP
        for r in ex.sweep(q["settings"], steps=q["steps"], eval_every=q["eval_every"]):
            show(r)
        return 0
    done = []
    if args.resume:
        old = load_results("demo", "sweep")
        done = old["runs"] if old else []

    def save(runs):
        show(runs[-1])
        runs[:] = [ex.thin_loss(r) for r in runs]  # keeps the file small
        save_results("demo", "sweep", {"experiment": "sweep", "mode": "full", "settings": SWEEP, "runs": runs},
                     seed=0, command="python -m companion demo sweep --full")

    common = dict(steps=SWEEP["steps"], eval_every=SWEEP["eval_every"], on_result=save)
    runs = done
    for name, grid in SWEEP["lr_grid"].items():
        for lr in grid:
            runs = ex.sweep([name], lrs={name: lr}, done=runs, **common)
    best = best_lrs(runs, SWEEP["lr_grid"])
    print("best learning rates:", best, flush=True)
    lrs = {name: family_lr(name, best) for name in SWEEP_SETTINGS}
    runs = ex.sweep(SWEEP_SETTINGS, lrs=lrs, seeds=SWEEP["seeds"], done=runs, **common)
    wide = SWEEP["wide"]
    runs = ex.sweep(wide["settings"], workers=wide["workers"], lrs=lrs, done=runs, **common)
    print(f"{len(runs)} runs in results/demo/sweep.json")
    return 0


def _seeds(args: argparse.Namespace) -> int:
    import torch

    from companion.lab import load_results, save_results

    from . import experiments as ex

    if not args.full:
        raise SystemExit("demo seeds: only a full run exists (add --full); the quick comparison is `demo sweep`")
    sweep = load_results("demo", "sweep")
    if sweep is None:
        raise SystemExit("demo seeds: results/demo/sweep.json is missing; run `python -m companion demo sweep "
                         "--full` first (the seeds run at its tuned learning rates)")
    torch.set_num_threads(1)
    best = best_lrs(sweep["runs"], sweep["settings"]["lr_grid"])
    lrs = {name: family_lr(name, best) for name in SEEDS["settings"]}
    old = load_results("demo", "seeds") if args.resume else None

    def save(runs):
        r = runs[-1]
        print(f"{r['setting']:>10s} lr={r['lr']:.0e} seed={r['seed']}: val loss {r['val_loss'][-1]:.3f} "
              f"[{r['seconds']:.0f} s]", flush=True)
        runs[:] = [ex.thin_loss(r) for r in runs]
        save_results("demo", "seeds", {"experiment": "seeds", "mode": "full", "settings": {**SEEDS, "lrs": lrs},
                                       "runs": runs}, seed=None, command="python -m companion demo seeds --full")

    runs = ex.sweep(SEEDS["settings"], workers=SEEDS["workers"], lrs=lrs, seeds=SEEDS["seeds"],
                    done=old["runs"] if old else [], steps=SEEDS["steps"], eval_every=SEEDS["eval_every"],
                    on_result=save)
    print(f"{len(runs)} runs in results/demo/seeds.json")
    return 0


def _baselines(args: argparse.Namespace) -> int:
    import torch

    from companion.lab import load_results, save_results

    from . import experiments as ex

    if not args.full:
        raise SystemExit("demo baselines: only a full run exists (add --full); the quick comparison is `demo sweep`")
    torch.set_num_threads(1)
    b = BASELINES
    old = load_results("demo", "baselines") if args.resume else None

    def save(runs):
        r = runs[-1]
        print(f"{r['setting']:>24s} lr={r['lr']:.0e} seed={r['seed']}: val loss {r['val_loss'][-1]:.3f}, "
              f"{r['bytes_sent']:,.0f} B sent/step, replicas identical {r['replicas_identical']} "
              f"[{r['seconds']:.0f} s]", flush=True)
        runs[:] = [ex.thin_loss(r) for r in runs]
        save_results("demo", "baselines", {"experiment": "baselines", "mode": "full", "settings": b, "runs": runs},
                     seed=None, command="python -m companion demo baselines --full")

    common = dict(workers=b["workers"], steps=b["steps"], eval_every=b["eval_every"], on_result=save)
    runs = old["runs"] if old else []
    for name, grid in b["lr_grid"].items():
        for lr in grid:
            runs = ex.sweep([name], lrs={name: lr}, done=runs, **common)
    best = best_lrs(runs, b["lr_grid"], workers=b["workers"])
    print("best learning rates:", best, flush=True)
    runs = ex.sweep(list(b["lr_grid"]), lrs=best, seeds=b["seeds"], done=runs, **common)
    print(f"{len(runs)} runs in results/demo/baselines.json")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .training import TrainConfig, _torchrun_env, train

    env = _torchrun_env()
    workers = args.workers or (env["world_size"] if env else 2)

    demo = dict(compression_topk=args.topk, compression_chunk=args.chunk, compression_decay=args.decay,
                error_feedback=not args.no_error_feedback, transform="identity" if args.no_dct else "dct",
                tiling="1d" if args.tiling_1d else "2d", wire_format=args.wire)
    lr = args.lr if args.lr is not None else (3e-3 if args.optimizer == "adamw" else 1e-3)
    cfg = TrainConfig(optimizer=args.optimizer, workers=workers, lr=lr, schedule=args.schedule, seed=args.seed,
                      timeout_s=args.timeout_s,
                      steps=args.steps or (FULL_STEPS if args.full else QUICK_STEPS),
                      demo=demo if args.optimizer == "demo" else {})
    r = train(cfg)
    if env and env["rank"] != 0:
        return 0
    every = max(1, cfg.steps // 10)
    for i in range(0, cfg.steps, every):
        print(f"step {i + 1:5d}  loss {r['loss'][i]:.3f}  sent {r['bytes_sent'][i]:>9,d} B  "
              f"received {r['bytes_received'][i]:>9,d} B  step {1e3 * r['step_s'][i]:.1f} ms")
    print(f"{args.optimizer}, {cfg.workers} worker(s), {r['n_params']:,} parameters: final loss {r['loss'][-1]:.3f}, "
          f"{statistics.mean(r['bytes_sent']):,.0f} B sent/step, "
          f"median step {1e3 * statistics.median(r['step_s']):.1f} ms "
          f"(optimizer + sync {1e3 * statistics.median(r['opt_s']):.1f} ms), replicas bit-identical: "
          f"{r['replicas_identical']}")
    if args.full:
        from companion.lab import save_results

        suffix = "" if cfg.schedule == "constant" else f"_{cfg.schedule}"
        path = save_results("demo", f"train_{args.optimizer}_w{cfg.workers}{suffix}",
                            {"experiment": "train", "mode": "full", **r}, seed=args.seed)
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="DeMo: decoupled momentum, DCT-compressed data parallelism")
    experiments = demo.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    p = experiments.add_parser("train", help="N workers (spawned, or torchrun's) train a tiny byte-level LM")
    p.add_argument("--workers", type=cli_int(low=1), default=None,
                   help="worker processes (default 2; under torchrun: WORLD_SIZE)")
    p.add_argument("--optimizer", choices=("demo", "adamw", "signsgd", "lowcomms"), default="demo",
                   help="lowcomms: the author's later design (DeMoLowComms, its defaults)")
    p.add_argument("--steps", type=cli_int(low=0), default=0,
                   help=f"0: the default, {QUICK_STEPS} (quick) / {FULL_STEPS} (--full)")
    p.add_argument("--lr", type=cli_float(low=0.0), default=None, help="default 1e-3 (sign updates), 3e-3 (AdamW)")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning rate: constant (default) or cosine decay to 0 over the run (CosineAnnealingLR)")
    p.add_argument("--topk", type=cli_int(low=1), default=32, help="DeMo compression_topk (default 32)")
    p.add_argument("--chunk", type=cli_int(low=1), default=64, help="DeMo compression_chunk (default 64)")
    p.add_argument("--decay", type=cli_float(low=0.0, high=1.0, high_open=True), default=0.999,
                   help="DeMo compression_decay, in [0, 1) (default 0.999)")
    p.add_argument("--no-error-feedback", action="store_true", help="ablation: keep the sent part in δ")
    p.add_argument("--no-dct", action="store_true", help="ablation: top-k of raw momentum entries")
    p.add_argument("--tiling-1d", action="store_true", help="ablation: 1-D chunks instead of s x s tiles")
    p.add_argument("--wire", choices=("compact", "official"), default="compact", help="index dtype on the wire")
    p.add_argument("--full", action="store_true", help="the longer run; writes results/demo/train_*.json")
    p.add_argument("--seed", type=cli_int(low=0, high=2**32 - 1), default=0)
    p.add_argument("--timeout-s", type=cli_float(low=0.0, low_open=True), default=60.0,
                   help="seconds a worker waits for the others in a collective before failing (default 60)")
    p.set_defaults(run=_run, experiment="train")
    p = experiments.add_parser("sweep", help="AdamW / signSGD / DeMo k=32,8,1 / ablations with 2 and 4 workers")
    p.add_argument("--full", action="store_true", help="lr search + every setting, 2 seeds; writes results/demo/sweep.json")
    p.add_argument("--resume", action="store_true", help="with --full: keep the runs already in the results file")
    p.set_defaults(run=_sweep, experiment="sweep")
    p = experiments.add_parser("seeds", help="more seeds of AdamW / signSGD / DeMo k=32 at the sweep's tuned rates")
    p.add_argument("--full", action="store_true", help="required: writes results/demo/seeds.json")
    p.add_argument("--resume", action="store_true", help="keep the runs already in results/demo/seeds.json")
    p.set_defaults(run=_seeds, experiment="seeds")
    p = experiments.add_parser("baselines", help="DeMo k = whole tile, signum with DeMo's β, the no-DCT rate search")
    p.add_argument("--full", action="store_true", help="required: writes results/demo/baselines.json")
    p.add_argument("--resume", action="store_true", help="keep the runs already in results/demo/baselines.json")
    p.set_defaults(run=_baselines, experiment="baselines")
