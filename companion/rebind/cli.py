"""``python -m companion rebind <experiment> [--full]``: the chapter's larger runs.

Quick mode (the default) runs a small version on QM9 (from the ``qm9pack`` package) and prints a summary; ``--full`` runs the larger version on QM9 and writes
``results/rebind/<experiment>.json`` with its provenance (:func:`companion.lab.save_results`).

=========== ====================================================================================================
experiment  full mode
=========== ====================================================================================================
edges       force edges of 10,000 QM9 test-split DFT geometries: repulsive share, 1-3 share, K_i histogram
compare     bond / GTMGC / ReBind / nearest, d 96, 3 + 3 layers, 20k QM9 train molecules, 12 epochs, one training
            seed per call (``--seed``; the split is always seed 0's, so every seed is scored on the same 1,000
            test molecules), written to ``compare_seed<N>.json``; seed 0 adds ETKDG and ETKDG + MMFF94.
            (ReBind as released — rewiring off — computes exactly the bond-only model; quick mode shows it.)
            ``--recipe official`` trains with the official recipe instead (``compare_official_seed<N>.json``).
converged   the four decoders trained to early stopping (patience 5) with ``--recipe``'s optimiser settings and
            schedule length (companion: at most 40 epochs; official: its 20, the linear decay ending at 0 there),
            d 96, 3 + 3 layers, on 50,000 QM9 train molecules (validation 2,000, test
            2,000; the split is always seed 0's), one training seed per call. Resumable: a checkpoint per decoder
            after every epoch under the companion cache (``rebind/converged/<recipe>_seed<N>/``), and the
            partial result written to ``converged_<recipe>_seed<N>.json`` after every epoch; rerun the same
            command to continue (``--budget-minutes`` stops a call cleanly after an epoch). Delete the checkpoint
            folder to start afresh.
=========== ====================================================================================================
"""

from __future__ import annotations

import argparse
from typing import Any

from companion.lab.checks import cli_device, cli_float, cli_int

#: full-mode settings (also written into the results file)
FULL: dict[str, dict[str, Any]] = {
    "edges": {"data": dict(source="qm9", n_train=1, n_val=1, n_test=10_000)},
    "compare": {"data": dict(source="qm9", n_train=20_000, n_val=1000, n_test=1000),
                "model": dict(d_model=96, n_heads=4, d_ff=192, encoder_layers=3, decoder_layers=3),
                "train": dict(epochs=12, batch_size=64, lr=1e-3, patience=4)},
    "converged": {"data": dict(source="qm9", n_train=50_000, n_val=2_000, n_test=2_000),
                  "model": dict(d_model=96, n_heads=4, d_ff=192, encoder_layers=3, decoder_layers=3),
                  "train": dict(patience=5), "epochs": {"companion": 40, "official": 20}},
}
#: quick versions: small and short (a smoke run of the same code)
QUICK_CLI: dict[str, dict[str, Any]] = {
    "edges": {"data": dict(source="qm9", n_train=1, n_val=1, n_test=300)},
    "compare": {"data": dict(source="qm9", n_train=600, n_val=60, n_test=60), "model": {},
                "train": dict(epochs=15, batch_size=32, lr=2e-3)},
    "converged": {"data": dict(source="qm9", n_train=300, n_val=40, n_test=40), "model": {},
                  "train": dict(patience=2, batch_size=32), "epochs": {"companion": 3, "official": 3}},
}


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

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
    data = ex.molecules(**spec["data"], seed=0)  # the same split for every training seed
    name = args.experiment
    if name == "edges":
        result = ex.edge_census(data["test"], device=device)
        print(f"{data['source']}: {result['molecules']} molecules, {result['edges']} force edges, "
              f"{100 * result['share_repulsive']:.1f}% repulsive, {100 * result['share_1_3']:.1f}% 1-3 pairs, "
              f"{100 * result['share_1_4']:.1f}% 1-4, {100 * result['share_far']:.1f}% farther")
    elif name == "converged":
        result = _converged(args, spec, data, device)
    else:
        config = replace(ex.QUICK, **spec["model"], recipe=args.recipe)
        if args.recipe == "official":  # the official recipe's own batch size and learning rate
            spec = {**spec, "train": {k: v for k, v in spec["train"].items() if k not in ("batch_size", "lr")}}
        result = ex.compare_variants(data, released_code=not args.full, config=config, seed=args.seed,
                                     baseline=not args.full or args.seed == 0, show_progress=args.progress,
                                     device=device, **spec["train"])
        rows = {**result["runs"], **result.get("baselines", {})}
        print(f"{data['source']}: {result['sizes']}")
        for key, r in rows.items():
            print(f"{key:>16s}: D-MAE {r['d_mae']:.3f}  D-RMSE {r['d_rmse']:.3f}  C-RMSD {r['c_rmsd']:.3f}")
    if args.full and name != "converged":  # (converged writes its results after every epoch)
        payload = {"experiment": name, "mode": "full", "settings": spec, "source": data["source"], **result,
                   "device": str(device)}
        if name == "compare":
            name = f"compare_seed{args.seed}" if args.recipe == "companion" else f"compare_official_seed{args.seed}"
        path = save_results("rebind", name, payload, seed=args.seed, command=_command(args))
        print(f"wrote {path}")
    return 0


def _command(args: argparse.Namespace) -> str:
    recipe = f" --recipe {args.recipe}" if args.recipe != "companion" else ""
    return f"python -m companion rebind {args.experiment} --full --seed {args.seed}{recipe}"


def _converged(args: argparse.Namespace, spec: dict[str, Any], data: dict[str, Any], device) -> dict[str, Any]:
    """The resumable converged comparison (see the module docstring); quick mode runs in a fresh temporary
    folder and writes nothing."""
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from companion.lab import cache_dir, save_results

    from . import experiments as ex

    config = replace(ex.QUICK, **spec["model"], recipe=args.recipe)
    name = f"converged_{args.recipe}_seed{args.seed}"

    def write(partial: dict[str, Any]) -> None:
        done = {v: len(r["history"]["records"]) for v, r in partial["runs"].items() if "history" in r}
        print(f"{name}: epochs so far {done}", flush=True)
        if args.full:
            save_results("rebind", name, {"experiment": "converged", "mode": "full", "settings": spec,
                                          "recipe": args.recipe, **partial, "device": str(device)},
                         seed=args.seed, command=_command(args))

    budget = None if args.budget_minutes is None else 60 * args.budget_minutes
    with tempfile.TemporaryDirectory() as tmp:
        folder = cache_dir("rebind", "converged", f"{args.recipe}_seed{args.seed}") if args.full else Path(tmp)
        result = ex.converged_run(data, checkpoint_dir=folder, config=config, seed=args.seed, budget_s=budget,
                                  epochs=spec["epochs"][args.recipe], on_epoch=write, device=device,
                                  **spec["train"])
    write(result)
    for key, r in result["runs"].items():
        if r["complete"]:
            print(f"{key:>8s}: D-MAE {r['d_mae']:.3f}  D-RMSE {r['d_rmse']:.3f}  C-RMSD {r['c_rmsd']:.3f}  "
                  f"({len(r['history']['records'])} epochs, best {r['history']['best_epoch'] + 1})")
    print("complete" if result["complete"] else "stopped: rerun the same command to continue")
    return result


def register(sub: argparse._SubParsersAction) -> None:
    rebind = sub.add_parser("rebind", help="chapter 2: ReBind (force-based rewiring for molecular conformations)")
    experiments = rebind.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    helps = {
        "edges": "what the force rewiring selects on reference geometries (repulsive share, 1-3 pairs)",
        "compare": "bond-only / GTMGC / ReBind / nearest-neighbour decoders vs ETKDG (+ MMFF94)",
        "converged": "the four decoders trained to early stopping on 50k QM9 molecules (resumable)",
    }
    for name, text in helps.items():
        p = experiments.add_parser(name, help=text)
        written = {"edges": "edges.json", "compare": "compare_seed<N>.json (compare_official_seed<N>.json)",
                   "converged": "converged_<recipe>_seed<N>.json after every epoch"}[name]
        p.add_argument("--full", action="store_true",
                       help=f"the larger run; writes results/rebind/{written} with its provenance")
        p.add_argument("--seed", type=cli_int(low=0, high=2**32 - 1), default=0)
        p.add_argument("--threads", type=cli_int(low=0), default=0, help="torch threads (default: torch's choice)")
        p.add_argument("--progress", action="store_true", help="show a progress bar per training run")
        p.add_argument("--device", type=cli_device, default="cpu", help="where to run (cpu, cuda, cuda:N)")
        p.add_argument("--recipe", choices=("companion", "official"), default="companion",
                       help="training recipe: ours (default) or the official ReBind one")
        if name == "converged":
            p.add_argument("--budget-minutes", type=cli_float(low=0.0, low_open=True), default=None,
                           help="stop cleanly after an epoch once this much time has passed (resume later)")
        p.set_defaults(run=_run, experiment=name)
