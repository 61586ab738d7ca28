"""``python -m companion remoe <experiment> [--full]``: the chapter's larger runs.

Quick mode (the default) runs a small version and prints a summary; ``--full`` runs the larger version and
writes ``results/remoe/<experiment>.json`` with its provenance (:func:`companion.lab.save_results`).

=========== ====================================================================================================
experiment  full mode
=========== ====================================================================================================
compare     dense / TopK / ReMoE, d_model 128, 4 layers, E = 8, k = 1, 1200 steps of 8 x 128 tokens
alpha       ReMoE with α = 1.05, 1.1, 1.2, 1.5, 2 (the notebooks' model), 600 steps
l1          plain vs load-balanced L1, d_model 64, 4 layers, 600 steps
experts     TopK vs ReMoE for E = 4, 8, 16, 32 (plus dense), the notebooks' model, 600 steps
=========== ====================================================================================================
"""

from __future__ import annotations

import argparse
from typing import Any

from companion.lab.checks import cli_device, cli_int

#: the full-mode settings of each experiment (also written into the results file)
FULL: dict[str, dict[str, Any]] = {
    "compare": {"model": dict(d_model=128, n_layers=4, n_heads=4, d_ff=384, num_experts=8, k=1),
                "train": dict(steps=1200, batch_size=8, seq_len=128, lr=2e-3, eval_every=100, eval_windows=48)},
    "alpha": {"model": {}, "train": dict(steps=600, eval_every=50), "alphas": [1.05, 1.1, 1.2, 1.5, 2.0]},
    "l1": {"model": dict(n_layers=4), "train": dict(steps=600, eval_every=50)},
    "experts": {"model": {}, "train": dict(steps=600, eval_every=100), "experts": [4, 8, 16, 32]},
}
#: the quick versions: tiny and short (a smoke run of the same code)
QUICK_CLI: dict[str, dict[str, Any]] = {
    "compare": {"model": {}, "train": dict(steps=60, eval_every=20)},
    "alpha": {"model": {}, "train": dict(steps=60, eval_every=20), "alphas": [1.1, 1.5]},
    "l1": {"model": {}, "train": dict(steps=60, eval_every=20)},
    "experts": {"model": {}, "train": dict(steps=40, eval_every=20), "experts": [4, 8]},
}


def _line(name: str, s: dict[str, Any]) -> str:
    text = f"{name:>10s}: val loss {s['final_val_loss']:.3f}"
    if "active_experts_train" in s:
        text += (f", active experts/token {s['active_experts_train']:.2f} (training mean), "
                 f"{s['active_experts_tail']:.2f} (last 20%)")
    if "routing" in s:
        text += f", held-out dead tokens {100 * s['routing']['dead_tokens']:.1f}%"
    if "stages" in s:
        st = s["stages"]
        text += f", stage II from step {st['stage2_start']}, stage III from step {st['stage3_start']}"
    return text + f" [{s['seconds']:.0f} s]"


def _run(args: argparse.Namespace) -> int:
    import torch

    from companion.lab import get_device, save_results, seed_everything

    from . import experiments as ex

    try:
        device = get_device(args.device)
    except ValueError as err:  # e.g. cuda on a machine without CUDA
        raise SystemExit(f"--device {args.device}: {err}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    spec = (FULL if args.full else QUICK_CLI)[args.experiment]
    base = ex.QUICK.replace(**spec["model"])
    train_kw = {**spec["train"], "seed": args.seed, "show_progress": args.progress, "device": device}
    name = args.experiment
    if name == "compare":
        result = ex.compare_routers(base, **train_kw)
        for kind, s in result["runs"].items():
            print(_line(kind, s))
    elif name == "alpha":
        result = ex.alpha_sweep(base, alphas=spec["alphas"], **train_kw)
        for a, s in zip(result["alphas"], result["runs"]):
            print(_line(f"α = {a:g}", s))
    elif name == "l1":
        result = ex.l1_comparison(base, **train_kw)
        for kind, s in result["runs"].items():
            print(_line(kind, s) + f"; layer sparsity {[round(v, 3) for v in s['routing']['layer_sparsity']]}")
    else:
        result = ex.expert_scaling(base, experts=spec["experts"], **train_kw)
        for e, t, r, gap in zip(result["experts"], result["topk"], result["remoe"], result["gap"]):
            print(f"E = {e:3d}: TopK {t['final_val_loss']:.3f}, ReMoE {r['final_val_loss']:.3f}, "
                  f"gap (TopK − ReMoE) {gap:+.3f}")
        if result["dense"]:
            print(f"dense: {result['dense']['final_val_loss']:.3f}")
    if args.full:
        # Seed 0 keeps the plain name the pages have always read; other seeds get their own file.
        if args.seed:
            name = f"{name}_seed{args.seed}"
        path = save_results("remoe", name, {"experiment": args.experiment, "mode": "full", **result, "device": str(device)},
                            seed=args.seed)
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    remoe = sub.add_parser("remoe", help="chapter 6: ReMoE (ReLU routing for mixture-of-experts)")
    experiments = remoe.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    helps = {
        "compare": "dense vs TopK vs ReMoE at matched active compute (validation loss, routing)",
        "alpha": "ReMoE's sparsity and λ over training for several α (the three stages)",
        "l1": "plain L1 vs load-balanced L1: per-layer sparsity and per-expert load",
        "experts": "TopK vs ReMoE for a growing number of experts E (k = 1)",
    }
    for name, text in helps.items():
        p = experiments.add_parser(name, help=text)
        p.add_argument("--full", action="store_true",
                       help=f"the larger run; writes results/remoe/{name}.json (seed 0) or {name}_seedN.json, with its provenance")
        p.add_argument("--seed", type=cli_int(low=0, high=2**32 - 1), default=0)
        p.add_argument("--threads", type=cli_int(low=0), default=0, help="torch threads (default: torch's choice)")
        p.add_argument("--progress", action="store_true", help="show a progress bar per training run")
        p.add_argument("--device", type=cli_device, default="cpu", help="where to run (cpu, cuda, cuda:N)")
        p.set_defaults(run=_run, experiment=name)
