"""``python -m companion demo train --workers N [--optimizer demo|adamw|signsgd] [--full]``.

Launches N CPU worker processes (gloo) that train a tiny byte-level LM on the standard-library corpus and prints
loss, bytes and wall time per step. Quick mode (the default) is a short smoke run; ``--full`` trains longer and
writes ``results/demo/train_<optimizer>_w<N>.json`` with its provenance (:func:`companion.lab.save_results`).
"""

from __future__ import annotations

import argparse
import statistics

#: steps of the quick and the full run
QUICK_STEPS, FULL_STEPS = 30, 600


def _run(args: argparse.Namespace) -> int:
    from .training import TrainConfig, train

    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    demo = dict(compression_topk=args.topk, compression_chunk=args.chunk, compression_decay=args.decay,
                error_feedback=not args.no_error_feedback, transform="identity" if args.no_dct else "dct",
                tiling="1d" if args.tiling_1d else "2d", wire_format=args.wire)
    lr = args.lr if args.lr is not None else (3e-3 if args.optimizer == "adamw" else 1e-3)
    cfg = TrainConfig(optimizer=args.optimizer, workers=args.workers, lr=lr, seed=args.seed,
                      steps=args.steps or (FULL_STEPS if args.full else QUICK_STEPS),
                      demo=demo if args.optimizer == "demo" else {})
    r = train(cfg)
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

        path = save_results("demo", f"train_{args.optimizer}_w{cfg.workers}",
                            {"experiment": "train", "mode": "full", **r}, seed=args.seed)
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="DeMo: decoupled momentum, DCT-compressed data parallelism")
    experiments = demo.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    p = experiments.add_parser("train", help="N CPU workers (gloo) train a tiny byte-level LM")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--optimizer", choices=("demo", "adamw", "signsgd"), default="demo")
    p.add_argument("--steps", type=int, default=0, help=f"default {QUICK_STEPS} (quick) / {FULL_STEPS} (--full)")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (sign updates), 3e-3 (AdamW)")
    p.add_argument("--topk", type=int, default=32, help="DeMo compression_topk (default 32)")
    p.add_argument("--chunk", type=int, default=64, help="DeMo compression_chunk (default 64)")
    p.add_argument("--decay", type=float, default=0.999, help="DeMo compression_decay (default 0.999)")
    p.add_argument("--no-error-feedback", action="store_true", help="ablation: keep the sent part in δ")
    p.add_argument("--no-dct", action="store_true", help="ablation: top-k of raw momentum entries")
    p.add_argument("--tiling-1d", action="store_true", help="ablation: 1-D chunks instead of s x s tiles")
    p.add_argument("--wire", choices=("compact", "official"), default="compact", help="index dtype on the wire")
    p.add_argument("--full", action="store_true", help="the longer run; writes results/demo/train_*.json")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run, experiment="train")
