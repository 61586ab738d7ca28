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

from companion.lab.checks import check_tensor, check_type, describe

from .data import Molecule, _check_mol, check_molecules
from .forces import MASK_DTYPES


def _as_array(value, what: str) -> np.ndarray:
    """One molecule's coordinates as a float64 ``[N, 3]`` array (``what`` names it in errors)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{what} must hold real coordinates, got {describe(value)}")
        a = value.detach().cpu().double().numpy()
    else:
        try:
            a = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be [N, 3] real coordinates (an array or a tensor), got "
                            f"{describe(value)}") from None
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{what} must be [N, 3], got shape {list(a.shape)}")
    return a


def _as_list(coords, mask: torch.Tensor | None, what: str, *, finite: bool = False) -> list[np.ndarray]:
    if isinstance(coords, torch.Tensor):
        if coords.dim() != 3 or coords.shape[-1] != 3:
            raise ValueError(f"{what} must be a list of [N, 3] arrays or a padded [B, N, 3] tensor, got "
                             f"{describe(coords)}")
        if coords.dtype == torch.bool or coords.is_complex():
            raise TypeError(f"{what} must hold real coordinates, got {describe(coords)}")
        if mask is None:
            out = [c.detach().cpu().double().numpy() for c in coords]
        else:
            check_tensor("mask", mask, dtype=MASK_DTYPES)
            if mask.shape != coords.shape[:2]:
                raise ValueError(f"mask must be [B, N] = {list(coords.shape[:2])}, got {list(mask.shape)}")
            out = [c[m].detach().cpu().double().numpy() for c, m in zip(coords, mask.bool().to(coords.device))]
    elif isinstance(coords, (list, tuple)):
        if mask is not None:
            raise ValueError(f"mask is only for a padded [B, N, 3] {what} tensor; {what} is a list of molecules "
                             "(leave mask out)")
        out = [_as_array(c, f"{what}[{i}]") for i, c in enumerate(coords)]
    else:
        raise TypeError(f"{what} must be a list of [N, 3] arrays or a padded [B, N, 3] tensor, got "
                        f"{describe(coords)}")
    if finite:
        for i, a in enumerate(out):
            if not np.isfinite(a).all():
                raise ValueError(f"{what}[{i}] holds NaN or infinite coordinates")
    return out


def _pairs(pred, true, mask, *, finite: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    p, t = _as_list(pred, mask, "pred", finite=finite), _as_list(true, mask, "true", finite=finite)
    if len(p) != len(t):
        raise ValueError(f"pred has {len(p)} molecules but true has {len(t)}")
    for i, (a, b) in enumerate(zip(p, t)):
        if a.shape != b.shape:
            raise ValueError(f"molecule {i}: pred has shape {list(a.shape)}, true {list(b.shape)}")
    return list(zip(p, t))


def _dist(x: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


def _distance_errors(pred, true, mask: torch.Tensor | None = None, *, finite: bool = True) -> dict[str, float]:
    """:func:`distance_errors`; ``finite=False`` (training's validation) lets NaN coordinates through."""
    abs_sum = sq_sum = 0.0
    pairs = 0
    for p, t in _pairs(pred, true, mask, finite=finite):
        e = _dist(p) - _dist(t)
        abs_sum += float(np.abs(e).sum())
        sq_sum += float((e * e).sum())
        pairs += e.size
    if pairs == 0:
        raise ValueError("no molecules to evaluate: pred and true are empty")
    return {"d_mae": abs_sum / pairs, "d_rmse": math.sqrt(sq_sum / pairs), "pairs": pairs,
            "molecules": len(_pairs(pred, true, mask))}


def distance_errors(pred, true, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Pooled ``d_mae``, ``d_rmse``, plus ``pairs`` (``Σ N²``) and ``molecules``.

    Args:
        pred, true: predicted and reference coordinates (lists of ``[N_b, 3]`` or padded ``[B, N, 3]``; finite).
        mask: ``[B, N]`` real atoms for padded inputs (only for them).
    """
    return _distance_errors(pred, true, mask, finite=True)


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

    _check_mol("mol", mol)
    check_type("heavy_only", heavy_only, bool)
    n = mol.GetNumAtoms()
    if isinstance(pred, (list, tuple, np.ndarray, torch.Tensor)):
        try:
            pred = pred.detach().cpu().double().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred, float)
        except (TypeError, ValueError):
            raise TypeError(f"pred must be [{n}, 3] real coordinates, got {describe(pred)}") from None
    else:
        raise TypeError(f"pred must be [{n}, 3] coordinates (an array or a tensor), got {describe(pred)}")
    if pred.shape != (n, 3):
        raise ValueError(f"pred must be [{n}, 3] for a molecule of {n} atoms, got {list(pred.shape)}")
    if not np.isfinite(pred).all():
        raise ValueError("pred holds NaN or infinite coordinates")
    if ref is None:
        if mol.GetNumConformers() == 0:
            raise ValueError("mol has no conformer to compare with: give ref, the reference coordinates")
    else:
        ref = _as_array(ref, "ref")
        if ref.shape != (n, 3):
            raise ValueError(f"ref must be [{n}, 3] for a molecule of {n} atoms, got {list(ref.shape)}")
        if not np.isfinite(ref).all():
            raise ValueError("ref holds NaN or infinite coordinates")

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
    check_molecules("molecules", molecules)
    check_type("heavy_only", heavy_only, bool)
    preds = _as_list(pred, mask, "pred", finite=True)
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
    check_molecules("molecules", molecules)
    preds = _as_list(pred, mask, "pred", finite=True)
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
