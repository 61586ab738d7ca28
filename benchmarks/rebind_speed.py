"""ReBind vs the classical baseline, in one process: conformations per second and accuracy against DFT.

    python benchmarks/rebind_speed.py [--train 2000] [--test 300] [--epochs 20] [--threads 2] [--device cpu] [--save]

Data: QM9 (DFT geometries, ``pip install qm9pack``); without it, the RDKit NCI set (ETKDG + MMFF94 references:
the baseline's accuracy is then not an error against DFT). Measured, on the same test molecules:

1. featurization (XYZ block → bonds → 9 atom features → Laplacian encoding) in molecules/s, and the force
   rewiring (:func:`force_edges` on padded batches of reference distances) in molecules/s;
2. batched inference of a tiny ReBind model trained here for ``--epochs`` (conformations/s), against RDKit ETKDGv3
   with and without MMFF94 (one conformer per molecule, sequential, as a chemist would call it);
3. D-MAE / D-RMSE / C-RMSD of every predictor against the reference geometries.

Printed: a table and the speed ratios (model / ETKDG): above 1, the model produces conformations faster than
RDKit. Never asserted: timings depend on the machine.

``--save`` writes results/rebind/bench_speed.json with its provenance: ``settings`` (every option),
``threads``, ``measurements`` (data source and sizes, featurization and rewiring speeds, force-edge statistics,
every predictor's speed, seconds and errors, the model's configuration and best validation D-MAE) and
``ratios``: ``speed_model_over_etkdg`` and ``speed_model_over_etkdg_mmff94``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from companion.lab.results import benchmark_payload, save_benchmark

from companion.rebind import (
    ConformerConfig,
    collate,
    edge_statistics,
    etkdg_predict,
    evaluate_coordinates,
    force_edges,
    load_nci,
    load_qm9,
    predict,
    qm9_available,
    split_molecules,
    train,
)
from companion.rebind.data import qm9_molecule, qm9_rows


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _plain(res: dict) -> dict:
    """Metric values as JSON numbers (numpy and torch scalars unwrapped)."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in res.items()}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the payload that ``--save`` writes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=2000, help="training molecules (QM9; NCI has 335)")
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="inference batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="default: CUDA when available, else CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", action="store_true", help="write results/rebind/bench_speed.json (with provenance)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if qm9_available():
        source = "QM9 (DFT)"
        train_mols = load_qm9("train", max_molecules=args.train, seed=args.seed)
        val_mols = load_qm9("valid", max_molecules=max(50, args.train // 10), seed=args.seed)
        test_mols = load_qm9("test", max_molecules=args.test, seed=args.seed)
        wanted = {int(m.name[4:]) for m in test_mols}
        rows = list(qm9_rows(keep=wanted.__contains__))
        _, t_feat = timed(lambda: [qm9_molecule(r) for r in rows])
    else:
        source = "RDKit NCI (ETKDG + MMFF94 references)"
        train_mols, val_mols, test_mols = split_molecules(load_nci(), seed=args.seed)
        test_mols = test_mols[: args.test]
        from companion.rebind import molecule_from_mol

        _, t_feat = timed(lambda: [molecule_from_mol(m.mol, name=m.name) for m in test_mols])
    n = len(test_mols)
    print(f"data: {source}; {len(train_mols)} train, {len(val_mols)} validation, {n} test molecules")

    batches = [collate(test_mols[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
    dists = [torch.cdist(b.coords, b.coords) for b in batches]

    def rewire():
        return [force_edges(d, b.z, b.adjacency, b.mask) for d, b in zip(dists, batches)]

    edges, t_rewire = timed(rewire)
    stats = [edge_statistics(a, r, b.adjacency, b.mask) for (a, r), b in zip(edges, batches)]
    total = sum(s["edges"] for s in stats)
    share_rep = sum(s["repulsive"] for s in stats) / total
    share_13 = sum(s["share_1_3"] * s["edges"] for s in stats) / total
    print(f"featurization: {n / t_feat:8.0f} molecules/s;  force rewiring: {n / t_rewire:8.0f} molecules/s")
    print(f"force edges on the reference geometries: {total} edges, {100 * share_rep:.1f}% repulsive, "
          f"{100 * share_13:.1f}% 1-3 (angle) pairs")

    hist = train(ConformerConfig(variant="rebind"), train_mols, val_mols, epochs=args.epochs, seed=args.seed,
                 device=args.device)
    model = hist.model
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    predict(model, test_mols[: args.batch_size], batch_size=args.batch_size)  # warm-up
    sync()
    start = time.perf_counter()
    model_pred = predict(model, test_mols, batch_size=args.batch_size)
    sync()
    t_model = time.perf_counter() - start

    results = {}
    results["ReBind (tiny, trained here)"] = (n / t_model, evaluate_coordinates(test_mols, model_pred))
    seconds = {"ReBind (tiny, trained here)": t_model}
    for mmff in (False, True):
        pred, t = timed(etkdg_predict, test_mols, mmff=mmff, seed=args.seed + 1)
        res = evaluate_coordinates(test_mols, pred)
        results["ETKDG + MMFF94" if mmff else "ETKDG"] = (n / t, res)
        seconds["ETKDG + MMFF94" if mmff else "ETKDG"] = t

    print(f"\n{'predictor':30s} {'conf/s':>10s} {'D-MAE':>7s} {'D-RMSE':>7s} {'C-RMSD':>7s}  (Å, vs {source})")
    for name, (speed, res) in results.items():
        failed = f"  ({res['failed']} not embedded)" if res["failed"] else ""
        print(f"{name:30s} {speed:10.0f} {res['d_mae']:7.3f} {res['d_rmse']:7.3f} {res['c_rmsd']:7.3f}{failed}")
    model_speed = results["ReBind (tiny, trained here)"][0]
    for name in ("ETKDG", "ETKDG + MMFF94"):
        print(f"speed ratio model / {name}: {model_speed / results[name][0]:.1f}x")
    print(json.dumps({"device": str(device), "threads": args.threads, "test_molecules": n,
                      "model_config": hist.to_dict()["config"], "best_val_d_mae": hist.best_val_d_mae}))

    measurements = {
        "source": source, "device": str(device), "train_molecules": len(train_mols),
        "validation_molecules": len(val_mols), "test_molecules": n,
        "featurization_s": t_feat, "featurization_molecules_per_s": n / t_feat,
        "rewiring_s": t_rewire, "rewiring_molecules_per_s": n / t_rewire,
        "force_edges": {"edges": int(total), "repulsive_share": float(share_rep), "share_1_3": float(share_13)},
        "predictors": {name: {"conformations_per_s": speed, "seconds": seconds[name], **_plain(res)}
                       for name, (speed, res) in results.items()},
        "model_config": hist.to_dict()["config"], "best_val_d_mae": hist.best_val_d_mae}
    ratios = {"speed_model_over_etkdg": model_speed / results["ETKDG"][0],
              "speed_model_over_etkdg_mmff94": model_speed / results["ETKDG + MMFF94"][0]}
    payload = benchmark_payload("rebind_speed", vars(args), measurements, ratios)
    if args.save:
        print("saved", save_benchmark("rebind", "bench_speed", payload, argv=argv, seed=args.seed))
    return payload


if __name__ == "__main__":
    main()
