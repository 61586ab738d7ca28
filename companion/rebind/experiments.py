"""The chapter's experiments, each returning JSON-ready dicts (``python -m companion rebind ...`` runs them).

- :func:`molecules` — train/validation/test molecules from QM9 (DFT) or the RDKit NCI set;
- :func:`edge_census` — what the force rewiring selects on reference geometries (repulsive share, 1-3 share),
  the finding the paper does not report: ~99% repulsive, ~92% angle pairs on QM9;
- :func:`compare_variants` — the same tiny encoder-decoder with bond-only / GTMGC / ReBind / nearest-neighbour
  decoder relations (and optionally ReBind as released, whose rewiring never fires), against ETKDG (+ MMFF);
- :func:`converged_run` — the same four decoders trained to early stopping, resumable across sessions
  (a checkpoint per decoder, partial results after every epoch).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from companion.lab.checks import check_float, check_int
from companion.lab.stats import Spread, spread

from .data import Molecule, collate, load_nci, load_qm9, qm9_available, split_molecules
from .forces import edge_statistics, extra_edge_counts, force_edges
from .model import ConformerConfig
from .training import etkdg_predict, evaluate, evaluate_coordinates, train

#: the decoders every comparison trains, in this order
DECODERS = ("bond", "gtmgc", "rebind", "near")

#: the tiny model of the notebooks
QUICK = ConformerConfig()


def molecules(source: str = "qm9", *, n_train: int = 2000, n_val: int = 200, n_test: int = 500,
              seed: int = 0) -> dict[str, Any]:
    """``{"source", "train", "valid", "test"}``: QM9 splits with DFT geometries (``source="qm9"``, from the
    ``qm9pack`` package; a clear ``ModuleNotFoundError`` without it), or RDKit's NCI set with ETKDG + MMFF
    geometries split 80/10/10 (``source="nci"``, at most 419 molecules in all). Never switches silently."""
    if source not in ("qm9", "nci"):
        raise ValueError(f"source must be 'qm9' or 'nci', got {source!r}")
    if source == "qm9":
        if not qm9_available():
            raise ModuleNotFoundError("source='qm9' needs the package qm9pack (104 MB, offline once installed; "
                                      "it is in requirements.txt): pip install qm9pack")
        return {"source": "qm9", "train": load_qm9("train", max_molecules=n_train, seed=seed),
                "valid": load_qm9("valid", max_molecules=n_val, seed=seed),
                "test": load_qm9("test", max_molecules=n_test, seed=seed)}
    tr, va, te = split_molecules(load_nci(), seed=seed)
    return {"source": "nci", "train": tr[:n_train], "valid": va[:n_val], "test": te[:n_test]}


def edge_census(mols: Sequence[Molecule], *, batch_size: int = 256,
                device: str | torch.device | None = None) -> dict[str, Any]:
    """Force edges of the reference geometries, pooled over ``mols``: counts, shares (repulsive; 1-3, 1-4 and
    farther pairs; symmetric), edges per molecule, and the distribution of ``K_i``. ``device``: where the
    batches are computed (default: the CPU, where the molecules are)."""
    totals: dict[str, float] = {"edges": 0, "repulsive": 0, "attractive": 0}
    hops = {"share_1_3": 0.0, "share_1_4": 0.0, "share_far": 0.0, "symmetric_share": 0.0}
    k_hist: dict[int, int] = {}
    for i in range(0, len(mols), batch_size):
        b = collate(list(mols[i:i + batch_size]), device=device)
        d = torch.cdist(b.coords, b.coords)
        s = edge_statistics(*force_edges(d, b.z, b.adjacency, b.mask), b.adjacency, b.mask)
        for key in totals:
            totals[key] += s[key]
        for key in hops:
            hops[key] += s[key] * s["edges"] if s["edges"] else 0.0
        for k, c in zip(*extra_edge_counts(b.adjacency, b.mask)[b.mask].unique(return_counts=True)):
            k_hist[int(k)] = k_hist.get(int(k), 0) + int(c)
    n = totals["edges"]
    return {"molecules": len(mols), **{k: int(v) for k, v in totals.items()},
            "share_repulsive": totals["repulsive"] / n if n else float("nan"),
            **{k: v / n if n else float("nan") for k, v in hops.items()},
            "edges_per_molecule": n / max(1, len(mols)), "k_histogram": dict(sorted(k_hist.items()))}


def compare_variants(data: dict[str, Any], *, variants: Sequence[str] = ("bond", "gtmgc", "rebind", "near"),
                     released_code: bool = False, config: ConformerConfig = QUICK, baseline: bool = True,
                     **train_kw) -> dict[str, Any]:
    """Train each decoder variant on ``data["train"]`` (early stopping on ``data["valid"]``) and evaluate on
    ``data["test"]`` (D-MAE, D-RMSE, C-RMSD, per-degree D-MAE); optionally ``"rebind_released"`` (rewiring off,
    as the official code runs) and the ETKDG / ETKDG + MMFF94 baselines on the same test molecules."""
    runs: dict[str, Any] = {}
    todo = [(v, replace(config, variant=v)) for v in variants]
    if released_code:
        todo.append(("rebind_released", replace(config, variant="rebind", released_code=True)))
    for name, cfg in todo:
        hist = train(cfg, data["train"], data["valid"], **train_kw)
        res = evaluate(hist.model, data["test"], per_degree=True)
        runs[name] = {**res, "history": hist.to_dict()}
    out: dict[str, Any] = {"source": data.get("source"), "config": asdict(config),
                           "sizes": {k: len(data[k]) for k in ("train", "valid", "test")}, "runs": runs}
    if baseline:
        for mmff in (False, True):
            pred = etkdg_predict(data["test"], mmff=mmff)
            res = evaluate_coordinates(data["test"], pred, per_degree=True)
            out.setdefault("baselines", {})["etkdg_mmff" if mmff else "etkdg"] = res
    return out


def converged_run(data: dict[str, Any], *, checkpoint_dir: str | Path, config: ConformerConfig = QUICK,
                  variants: Sequence[str] = DECODERS, seed: int = 0, epochs: int = 40, patience: int = 5,
                  budget_s: float | None = None, stop_after: int | None = None,
                  on_epoch: Callable[[dict[str, Any]], Any] | None = None,
                  device: str | torch.device | None = None, **train_kw) -> dict[str, Any]:
    """Train each decoder variant to early stopping on ``data["valid"]`` and score it on ``data["test"]``
    (D-MAE, D-RMSE, C-RMSD, per-degree D-MAE), one epoch per :func:`train` call so that the run can stop and
    resume: ``checkpoint_dir/<variant>.pt`` holds each decoder's state after every epoch, and calling again with
    the same arguments continues where the last call stopped (a finished decoder is re-scored from its
    checkpoint, giving the same numbers).

    Args:
        data: ``{"train", "valid", "test", "source"}`` (:func:`molecules`).
        checkpoint_dir: where the checkpoints live (the companion cache in the CLI, never the repository).
        config: the model; ``variant`` is replaced by each of ``variants`` in turn, ``recipe`` picks the recipe.
        seed: initialization and batch order (the split is ``data``'s).
        epochs, patience: at most ``epochs`` epochs (the schedule's length), stopping after ``patience`` epochs
            without a better validation D-MAE.
        budget_s: stop (cleanly, after an epoch) once this many seconds have passed in this call.
        stop_after: stop after this many epochs in this call (over all variants).
        on_epoch: called with the partial result after every epoch (the CLI writes it to ``results/rebind``).
        train_kw: more :func:`train` arguments (``batch_size``, ``lr``, ...; default: the recipe's).

    Returns ``{"source", "config", "sizes", "seed", "epochs", "patience", "runs": {variant: {"complete",
    "history" (:meth:`History.to_dict`: per-epoch records and wall-clock ``epoch_seconds``), and when complete
    the test metrics}}, "complete"}``; ``complete`` is True when every variant finished.
    """
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if budget_s is not None:
        budget_s = check_float("budget_s", budget_s, low=0.0, low_open=True)
    if stop_after is not None:
        stop_after = check_int("stop_after", stop_after, low=1)
    out: dict[str, Any] = {"source": data.get("source"), "config": asdict(config), "seed": seed, "epochs": epochs,
                           "patience": patience, "sizes": {k: len(data[k]) for k in ("train", "valid", "test")},
                           "runs": {}, "complete": False}
    t0, ran = time.perf_counter(), 0
    for v in variants:
        cfg = replace(config, variant=v)
        entry = out["runs"][v] = {"complete": False}
        while True:
            if (budget_s is not None and time.perf_counter() - t0 >= budget_s) or (
                    stop_after is not None and ran >= stop_after):
                return out
            hist = train(cfg, data["train"], data["valid"], epochs=epochs, patience=patience, seed=seed,
                         checkpoint=folder / f"{v}.pt", stop_after=1, device=device, show_progress=False, **train_kw)
            entry["history"] = hist.to_dict()
            ran += hist.epochs_run
            if hist.complete:
                entry.update(evaluate(hist.model, data["test"], per_degree=True), complete=True)
                if on_epoch is not None:
                    on_epoch(out)
                break
            if on_epoch is not None:
                on_epoch(out)
    out["complete"] = True
    return out


def _rows(results: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The entries for ``name`` (a decoder variant or a baseline) in each of ``results`` that has it."""
    found = [r.get("runs", {}).get(name) or r.get("baselines", {}).get(name) for r in results]
    return [f for f in found if f]


def seed_summary(results: Sequence[dict[str, Any]], names: Sequence[str],
                 metrics: Sequence[str] = ("d_mae", "d_rmse", "c_rmsd")) -> dict[str, dict[str, tuple]]:
    """``{name: {metric: (mean, sd, n)}}`` over several :func:`compare_variants` results (one per training
    seed), ``sd`` the sample standard deviation (ddof 1; 0.0 for a single result); a name absent from every
    result is left out (e.g. the ETKDG baselines, run by one seed only)."""
    out = {}
    for name in names:
        found = _rows(results, name)
        if found:
            out[name] = {k: (float(np.mean([f[k] for f in found])),
                             float(np.std([f[k] for f in found], ddof=1)) if len(found) > 1 else 0.0,
                             len(found)) for k in metrics}
    return out


def per_degree_summary(results: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, dict[int, tuple]]:
    """``{name: {degree: (mean D-MAE, atoms)}}`` averaged over results, on the degrees all of them have
    (degrees may be strings after a JSON round trip)."""
    out = {}
    for name in names:
        found = [{int(k): v for k, v in f["per_degree"].items()} for f in _rows(results, name)]
        if found:
            degs = sorted(set.intersection(*(set(f) for f in found)))
            out[name] = {k: (float(np.mean([f[k]["d_mae"] for f in found])), found[0][k]["atoms"]) for k in degs}
    return out


def paired_change(results: Sequence[dict[str, Any]], name: str, base: str = "bond",
                  metric: str = "d_mae") -> Spread:
    """The per-seed relative change of ``name``'s ``metric`` against ``base``'s, in percent (negative = lower
    error), over the results that hold both, as a :func:`companion.lab.spread` (mean, sample sd, n, 95%
    t-interval). The variants of one :func:`compare_variants` run share the seed, so their batch order and
    data are the same and the comparison is paired; the pairing removes the seed-to-seed level shifts that an
    unpaired comparison of the means would count as noise."""
    pairs = [(_rows([r], name), _rows([r], base)) for r in results]
    return spread([100 * (a[0][metric] / b[0][metric] - 1) for a, b in pairs if a and b])


def per_degree_change(results: Sequence[dict[str, Any]], name: str, base: str = "bond") -> dict[int, Spread]:
    """``{degree: Spread}`` of the per-seed relative change of ``name``'s D-MAE against ``base``'s on the pairs
    of the atoms of each bond degree, in percent (negative = lower error), over the results that hold both
    (:func:`companion.lab.spread`: mean, sample sd, n and the 95% t-interval). The paper's per-degree claim
    (largest gains on low-degree atoms) is a claim about the degree-1 entry."""
    changes: dict[int, list[float]] = {}
    for r in results:
        rows = [_rows([r], n) for n in (name, base)]
        if not all(rows):
            continue
        new, old = ({int(k): v["d_mae"] for k, v in f[0]["per_degree"].items()} for f in rows)
        for k in sorted(set(new) & set(old)):
            changes.setdefault(k, []).append(100 * (new[k] / old[k] - 1))
    return {k: spread(v) for k, v in sorted(changes.items())}

