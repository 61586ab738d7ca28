"""Conformation metrics of ReBind and GTMGC, pooled exactly as the papers do.

- **D-MAE** ``= Σ_mol Σ_ij |D_ij − D̂_ij| / Σ_mol N²`` — pooled over all pairs of all molecules (hydrogens and
  the diagonal included), so large molecules weigh more than in a per-molecule mean;
- **D-RMSE** ``= √(Σ_mol Σ_ij (D_ij − D̂_ij)² / Σ_mol N²)``;
- **C-RMSD** — RDKit's ``rdMolAlign.GetBestRMS`` between predicted and reference heavy-atom coordinates: the
  best rigid alignment over all symmetry-equivalent atom mappings, averaged over molecules;
- :func:`per_degree_errors` — the distance error of an atom's pairs, grouped by the atom's bond degree (the paper
  reports the largest gains on low-degree atoms).

Coordinates are passed as a list of ``[N_b, 3]`` tensors/arrays (one per molecule) or as a padded ``[B, N, 3]``
tensor with its ``[B, N]`` mask.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .data import Molecule


def _as_list(coords, mask: torch.Tensor | None, what: str) -> list[np.ndarray]:
    if isinstance(coords, torch.Tensor) and coords.dim() == 3:
        if mask is None:
            return [c.detach().cpu().double().numpy() for c in coords]
        if mask.shape != coords.shape[:2]:
            raise ValueError(f"mask must be [B, N] = {list(coords.shape[:2])}, got {list(mask.shape)}")
        return [c[m].detach().cpu().double().numpy() for c, m in zip(coords, mask.bool())]
    if isinstance(coords, (list, tuple)):
        out = []
        for i, c in enumerate(coords):
            a = c.detach().cpu().double().numpy() if isinstance(c, torch.Tensor) else np.asarray(c, dtype=float)
            if a.ndim != 2 or a.shape[1] != 3:
                raise ValueError(f"{what}[{i}] must be [N, 3], got shape {list(a.shape)}")
            out.append(a)
        return out
    raise TypeError(f"{what} must be a list of [N, 3] arrays or a padded [B, N, 3] tensor, got "
                    f"{type(coords).__name__}")


def _pairs(pred, true, mask) -> list[tuple[np.ndarray, np.ndarray]]:
    p, t = _as_list(pred, mask, "pred"), _as_list(true, mask, "true")
    if len(p) != len(t):
        raise ValueError(f"pred has {len(p)} molecules but true has {len(t)}")
    for i, (a, b) in enumerate(zip(p, t)):
        if a.shape != b.shape:
            raise ValueError(f"molecule {i}: pred has shape {list(a.shape)}, true {list(b.shape)}")
    return list(zip(p, t))


def _dist(x: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


def distance_errors(pred, true, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Pooled ``d_mae``, ``d_rmse``, plus ``pairs`` (``Σ N²``) and ``molecules``.

    Args:
        pred, true: predicted and reference coordinates (lists of ``[N_b, 3]`` or padded ``[B, N, 3]``).
        mask: ``[B, N]`` real atoms for padded inputs.
    """
    abs_sum = sq_sum = 0.0
    pairs = 0
    for p, t in _pairs(pred, true, mask):
        e = _dist(p) - _dist(t)
        abs_sum += float(np.abs(e).sum())
        sq_sum += float((e * e).sum())
        pairs += e.size
    if pairs == 0:
        raise ValueError("no molecules to evaluate")
    return {"d_mae": abs_sum / pairs, "d_rmse": math.sqrt(sq_sum / pairs), "pairs": pairs,
            "molecules": len(_pairs(pred, true, mask))}


def d_mae(pred, true, mask: torch.Tensor | None = None) -> float:
    """Pooled D-MAE (Å): ``Σ_mol Σ_ij |D − D̂| / Σ_mol N²``."""
    return distance_errors(pred, true, mask)["d_mae"]


def d_rmse(pred, true, mask: torch.Tensor | None = None) -> float:
    """Pooled D-RMSE (Å): ``√(Σ_mol Σ_ij (D − D̂)² / Σ_mol N²)``."""
    return distance_errors(pred, true, mask)["d_rmse"]


def c_rmsd_one(mol, pred: np.ndarray | torch.Tensor, *, heavy_only: bool = True,
               ref: np.ndarray | torch.Tensor | None = None) -> float:
    """Symmetry-aware RMSD (Å) after the best alignment: ``rdMolAlign.GetBestRMS(probe, reference)``.

    Args:
        mol: RDKit molecule with explicit hydrogens; its conformer is the reference unless ``ref`` is given.
        pred: ``[N, 3]`` predicted coordinates in ``mol``'s atom order.
        heavy_only: compare heavy atoms only (the papers' C-RMSD); False includes hydrogens (slower: every
            permutation of equivalent hydrogens is tried).
    """
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign
    from rdkit.Geometry import Point3D

    pred = pred.detach().cpu().double().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred, float)
    n = mol.GetNumAtoms()
    if pred.shape != (n, 3):
        raise ValueError(f"pred must be [{n}, 3] for a molecule of {n} atoms, got {list(pred.shape)}")
    if not np.isfinite(pred).all():
        raise ValueError("pred holds NaN or infinite coordinates")

    def with_coords(xyz: np.ndarray):
        m = Chem.Mol(mol)
        m.RemoveAllConformers()
        conf = Chem.Conformer(n)
        for i, (x, y, z) in enumerate(xyz):
            conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
        m.AddConformer(conf, assignId=True)
        return Chem.RemoveHs(m, sanitize=False) if heavy_only else m

    reference = mol.GetConformer().GetPositions() if ref is None else (
        ref.detach().cpu().double().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref, float))
    return float(rdMolAlign.GetBestRMS(with_coords(pred), with_coords(reference)))


def c_rmsd(molecules: Sequence[Molecule], pred, mask: torch.Tensor | None = None, *,
           heavy_only: bool = True) -> float:
    """Mean over molecules of :func:`c_rmsd_one` against each :class:`Molecule`'s reference coordinates."""
    preds = _as_list(pred, mask, "pred")
    if len(preds) != len(molecules):
        raise ValueError(f"got {len(preds)} predictions for {len(molecules)} molecules")
    if not preds:
        raise ValueError("no molecules to evaluate")
    vals = [c_rmsd_one(m.mol, p, heavy_only=heavy_only, ref=m.coords) for m, p in zip(molecules, preds)]
    return float(np.mean(vals))


def per_degree_errors(molecules: Sequence[Molecule], pred,
                      mask: torch.Tensor | None = None) -> dict[int, dict[str, float]]:
    """Distance error grouped by the bond degree of atom ``i``: for each degree ``k``, the mean of
    ``|D_ij − D̂_ij|`` over all atoms ``i`` of degree ``k`` and all ``j ≠ i`` (pooled), and how many atoms."""
    preds = _as_list(pred, mask, "pred")
    if len(preds) != len(molecules):
        raise ValueError(f"got {len(preds)} predictions for {len(molecules)} molecules")
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    atoms: dict[int, int] = {}
    for m, p in zip(molecules, preds):
        t = m.coords.double().numpy()
        if p.shape != t.shape:
            raise ValueError(f"molecule {m.name!r}: pred has shape {list(p.shape)}, expected {list(t.shape)}")
        e = np.abs(_dist(p) - _dist(t))
        n = e.shape[0]
        for i, k in enumerate(m.degree.tolist()):
            sums[k] = sums.get(k, 0.0) + float(e[i].sum())
            counts[k] = counts.get(k, 0) + n - 1
            atoms[k] = atoms.get(k, 0) + 1
    return {k: {"d_mae": sums[k] / max(1, counts[k]), "atoms": atoms[k]} for k in sorted(sums)}
