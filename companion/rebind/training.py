"""Training the conformation models, predicting with them, and the classical RDKit baseline.

:func:`train` is AdamW with a linear warm-up over the first 10% of the steps, then cosine decay to a tenth of the
learning rate, gradient clipping at 1.0, loss ``½(D-MAE enc + D-MAE dec)``
(:func:`~companion.rebind.model.distance_loss`), and early stopping on the validation D-MAE of the final
conformation (the best epoch's weights are kept). Given a seed the run is deterministic on the CPU (seeded
initialization and batch order).

This is *our* recipe at CPU scale, not the official one. The official training script
(holymollyhao/ReBIND, ``experiments/conformer_prediction/rebind.sh``, commit 8d240c6) runs the Hugging Face
trainer with lr 9e-5, batch 100, 20 epochs, warm-up ratio 0.1 then *linear* decay to zero, weight decay 0,
AdamW β₂ = 0.99, gradient clipping 1.0 and fp16 mixed precision; ours decays by a cosine to lr/10, uses weight
decay 0.01, β₂ = 0.999, fp32, and lr 1e-3 with batch 32 so that a few hundred molecules train in a minute. The
model differs too (:mod:`companion.rebind.model`: a plain atom-feature embedding instead of Mole-BERT tokens,
hydrogen counts that include explicit neighbours, and a sigmoid output gate).

:func:`etkdg_predict` is what a chemist would do without a learned model: RDKit's ETKDGv3 distance-geometry
embedding, optionally refined with the MMFF94 force field; :func:`evaluate_coordinates` scores any predicted
coordinates with the same metrics.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from companion.lab.checks import check_float, check_int, check_type, describe
from companion.lab.runtime import get_device, progress, seed_everything

from .data import MAX_SEED, RDKIT_MAX_SEED, Molecule, check_molecules, collate, embed_conformer
from .metrics import _as_array, _distance_errors, c_rmsd, distance_errors, per_degree_errors
from .model import ConformerConfig, ConformerModel, distance_loss


def _check_fits(config: ConformerConfig, *groups: Sequence[Molecule]) -> None:
    """The Laplacian encoding of an ``N``-atom molecule needs ``d_model >= N``: say so before training starts,
    not at the first batch that holds such a molecule."""
    n_max = max(m.n_atoms for mols in groups for m in mols)
    if n_max > config.d_model:
        raise ValueError(f"config.d_model ({config.d_model}) must be >= the largest molecule's atom count "
                         f"({n_max}) for the Laplacian encoding")


def lr_at(step: int, *, lr: float, warmup_steps: int, steps: int, min_lr: float) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``steps``.

    ``step >= 0``; ``0 <= warmup_steps <= steps``, ``steps >= 1``; ``0 <= min_lr <= lr``, ``lr > 0``."""
    step = check_int("step", step, low=0)
    lr = check_float("lr", lr, low=0.0, low_open=True)
    steps = check_int("steps", steps, low=1)
    warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
    if warmup_steps > steps:
        raise ValueError(f"warmup_steps must be <= steps, got warmup_steps={warmup_steps} and steps={steps}")
    min_lr = check_float("min_lr", min_lr, low=0.0, high=lr)
    return _lr_at(step, lr=lr, warmup_steps=warmup_steps, steps=steps, min_lr=min_lr)


def _lr_at(step: int, *, lr: float, warmup_steps: int, steps: int, min_lr: float) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def predict(model: ConformerModel, mols: Sequence[Molecule], *, batch_size: int = 64,
            intermediate: bool = False) -> list[torch.Tensor]:
    """Predicted coordinates, one ``[N_b, 3]`` CPU tensor per molecule (``intermediate``: the encoder's ``X_enc``)."""
    check_type("model", model, ConformerModel)
    check_molecules("mols", mols)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_type("intermediate", intermediate, bool)
    return _predict(model, mols, batch_size=batch_size, intermediate=intermediate)


@torch.no_grad()
def _predict(model: ConformerModel, mols: Sequence[Molecule], *, batch_size: int = 64,
             intermediate: bool = False) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out: list[torch.Tensor] = []
    for i in range(0, len(mols), batch_size):
        batch = collate(mols[i:i + batch_size], device=device)
        res = model(batch)
        coords = res.enc_coords if intermediate else res.coords
        out += [c[m].cpu() for c, m in zip(coords, batch.mask)]
    model.train(was)
    return out


def evaluate_coordinates(mols: Sequence[Molecule], pred: Sequence[torch.Tensor | np.ndarray], *,
                         with_rmsd: bool = True, per_degree: bool = False) -> dict[str, Any]:
    """D-MAE, D-RMSE (pooled) and C-RMSD (heavy atoms, symmetry-aware) of ``pred`` against the references.

    Predictions with NaN rows (a baseline that could not embed the molecule) are left out and counted in
    ``failed``; the metrics cover the rest.
    """
    check_molecules("mols", mols)
    if not isinstance(pred, (list, tuple)):
        raise TypeError(f"pred must be a list of [N, 3] coordinates, one per molecule, got {describe(pred)}")
    if len(pred) != len(mols):
        raise ValueError(f"pred: got {len(pred)} predictions for {len(mols)} molecules")
    for i, (p, m) in enumerate(zip(pred, mols)):
        shape = _as_array(p, f"pred[{i}]").shape
        if shape != (m.n_atoms, 3):
            raise ValueError(f"pred[{i}] must be [{m.n_atoms}, 3] for molecule {m.name!r}, got shape {list(shape)}")
    check_type("with_rmsd", with_rmsd, bool)
    check_type("per_degree", per_degree, bool)
    pred = [torch.as_tensor(p) for p in pred]
    ok = [i for i, p in enumerate(pred) if torch.isfinite(p).all()]
    if not ok:
        raise ValueError("every prediction in pred holds NaN coordinates: nothing to evaluate")
    failed = len(pred) - len(ok)
    mols, pred = [mols[i] for i in ok], [pred[i] for i in ok]
    res: dict[str, Any] = distance_errors(pred, [m.coords for m in mols])
    res["failed"] = failed
    if with_rmsd:
        res["c_rmsd"] = c_rmsd(mols, pred)
    if per_degree:
        res["per_degree"] = per_degree_errors(mols, pred)
    return res


def evaluate(model: ConformerModel, mols: Sequence[Molecule], *, batch_size: int = 64, with_rmsd: bool = True,
             per_degree: bool = False) -> dict[str, Any]:
    """:func:`evaluate_coordinates` of the model's final conformations, plus ``d_mae_intermediate``."""
    check_type("model", model, ConformerModel)
    check_molecules("mols", mols)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_type("with_rmsd", with_rmsd, bool)
    check_type("per_degree", per_degree, bool)
    res = evaluate_coordinates(mols, _predict(model, mols, batch_size=batch_size), with_rmsd=with_rmsd,
                               per_degree=per_degree)
    res["d_mae_intermediate"] = _distance_errors(_predict(model, mols, batch_size=batch_size, intermediate=True),
                                                 [m.coords for m in mols], finite=False)["d_mae"]
    return res


@dataclass
class History:
    """What :func:`train` measured: ``records`` (one dict per epoch: ``epoch``, ``loss`` (train mean), ``lr``,
    ``val_d_mae``), the ``best_epoch`` whose weights the ``model`` holds, its ``best_val_d_mae``, and
    ``seconds``."""

    config: ConformerConfig
    records: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_d_mae: float = math.inf
    seconds: float = 0.0
    model: ConformerModel | None = field(default=None, repr=False)

    def column(self, key: str) -> list[float]:
        return [r[key] for r in self.records]

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "records": self.records, "best_epoch": self.best_epoch,
                "best_val_d_mae": self.best_val_d_mae, "seconds": self.seconds}


def train(config: ConformerConfig | str, train_mols: Sequence[Molecule], val_mols: Sequence[Molecule], *,
          epochs: int = 20, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.01,
          warmup_fraction: float = 0.1, grad_clip: float = 1.0, patience: int | None = 5, seed: int = 0,
          device: str | torch.device | None = None, show_progress: bool = True) -> History:
    """Train a :class:`ConformerModel` and keep the epoch with the lowest validation D-MAE.

    Args:
        config: a :class:`ConformerConfig`, or a variant name (``"rebind"``, ``"gtmgc"``, ``"bond"``, ``"near"``)
            for the tiny default.
        train_mols, val_mols: lists of :class:`Molecule` with reference coordinates.
        epochs, batch_size, lr, weight_decay: AdamW run (paper: 20 epochs, batch 100, lr 9e-5).
        warmup_fraction: share of the steps spent warming up linearly (paper: 0.1).
        grad_clip: max gradient norm (paper: 1.0).
        patience: stop after this many epochs without a better validation D-MAE (None: never).
        seed: initialization and batch order.
    """
    if isinstance(config, str):
        try:
            config = ConformerConfig(variant=config)
        except ValueError as err:
            raise ValueError(f"config: {err}") from None
    if not isinstance(config, ConformerConfig):
        raise TypeError(f"config must be a ConformerConfig or a variant name, got {describe(config)}")
    check_molecules("train_mols", train_mols)
    check_molecules("val_mols", val_mols)
    epochs = check_int("epochs", epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    if patience is not None:
        patience = check_int("patience", patience, low=1)
    lr = check_float("lr", lr, low=0.0, low_open=True)
    weight_decay = check_float("weight_decay", weight_decay, low=0.0)
    warmup_fraction = check_float("warmup_fraction", warmup_fraction, low=0.0, high=1.0, high_open=True)
    grad_clip = check_float("grad_clip", grad_clip, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0, high=MAX_SEED)
    check_type("show_progress", show_progress, bool)
    _check_fits(config, train_mols, val_mols)
    device = get_device(device)
    seed_everything(seed)
    model = ConformerModel(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(train_mols) / batch_size)
    steps = epochs * per_epoch
    warmup = max(1, int(warmup_fraction * steps))
    gen = torch.Generator().manual_seed(seed)
    hist = History(config=config)
    best_state = None
    stale, step = 0, 0
    t0 = time.perf_counter()
    bar = progress(range(epochs), desc=f"train {config.variant}") if show_progress else range(epochs)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(train_mols), generator=gen).tolist()
        losses = []
        for i in range(0, len(perm), batch_size):
            batch = collate([train_mols[j] for j in perm[i:i + batch_size]], device=device)
            cur = _lr_at(step, lr=lr, warmup_steps=warmup, steps=steps, min_lr=lr / 10)
            for g in opt.param_groups:
                g["lr"] = cur
            loss = distance_loss(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            losses.append(loss.item())
            step += 1
        val = _distance_errors(_predict(model, val_mols), [m.coords for m in val_mols], finite=False)["d_mae"]
        hist.records.append({"epoch": epoch, "loss": float(np.mean(losses)), "lr": cur, "val_d_mae": val})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{val:.3f}")
        if val < hist.best_val_d_mae:
            hist.best_val_d_mae, hist.best_epoch, stale = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if patience is not None and stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist.model = model
    hist.seconds = time.perf_counter() - t0
    return hist


def etkdg_predict(mols: Sequence[Molecule], *, mmff: bool = True, seed: int = 1) -> list[torch.Tensor]:
    """The classical baseline: an ETKDGv3 conformation (+ MMFF94 if ``mmff``) for each molecule's graph, ``[N, 3]``
    in the molecule's atom order (NaN rows when RDKit cannot embed it).

    On the NCI set, whose references are themselves ETKDG + MMFF (seed 0), use another ``seed``: the baseline
    then measures how much the force field's local minima differ, not an error against DFT.
    """
    from rdkit import Chem

    check_molecules("mols", mols)
    check_type("mmff", mmff, bool)
    seed = check_int("seed", seed, low=0, high=RDKIT_MAX_SEED)
    out = []
    for m in mols:
        probe = Chem.Mol(m.mol)
        ok = embed_conformer(probe, mmff=mmff, seed=seed)
        out.append(torch.tensor(probe.GetConformer().GetPositions(), dtype=torch.float32) if ok
                   else torch.full((m.n_atoms, 3), float("nan")))
    return out
