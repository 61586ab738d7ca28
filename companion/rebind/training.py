"""Training the conformation models, predicting with them, and the classical RDKit baseline.

:func:`train` runs AdamW with a linear warm-up over the first 10% of the steps, gradient clipping at 1.0, loss
``½(D-MAE enc + D-MAE dec)`` (:func:`~companion.rebind.model.distance_loss`), and keeps the epoch with the
lowest validation D-MAE of the final conformation (optionally stopping early). Given a seed the run is
deterministic on the CPU (seeded initialization and batch order).

Two recipes (:data:`RECIPES`), chosen by ``ConformerConfig.recipe``:

================== ================================== ==============================================================
setting            ``"companion"`` (ours, default)    ``"official"`` (``experiments/conformer_prediction/rebind.sh``)
================== ================================== ==============================================================
learning rate      1e-3                               9e-5
schedule           warm-up, cosine decay to lr/10     warm-up ratio 0.1, *linear* decay to 0 (Hugging Face
                                                      ``get_linear_schedule_with_warmup``: the first step has lr 0)
weight decay       0.01                               0
AdamW β₁, β₂, ε    0.9, 0.999, 1e-8                   0.9, 0.99, 1e-8
batch              32 (last batch kept)               100 (``--dataloader_drop_last``: the last partial batch dropped)
hydrogen feature   bonded H, explicit atoms counted   ``GetTotalNumHs()``: 0 for every atom (H are explicit atoms)
output gate        ``σ(W[h_dec; h_enc])``             softmax over a shared ``d → 1`` projection, ``/√d``
================== ================================== ==============================================================

Both clip gradients at 1.0 and warm up over 10% of the steps. What stays different from the official run in
both recipes: fp32 instead of fp16 mixed precision, PyTorch's default initialization instead of the official
Xavier-normal one, our own batch order, the model's size (official: d 512, 8 + 8 layers; set by
:class:`~companion.rebind.ConformerConfig`) and its length (official: 20 epochs on QM9's ~100k training
molecules, ``load_best_model_at_end`` on the validation D-MAE, no early stopping). The companion recipe exists so
that a few hundred molecules train in a minute at lr 1e-3.

:func:`etkdg_predict` is what a chemist would do without a learned model: RDKit's ETKDGv3 distance-geometry
embedding, optionally refined with the MMFF94 force field; :func:`evaluate_coordinates` scores any predicted
coordinates with the same metrics.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from companion.lab.checks import check_choice, check_float, check_int, check_type, describe
from companion.lab.runtime import get_device, progress, seed_everything

from .data import MAX_SEED, RDKIT_MAX_SEED, Molecule, check_molecules, collate, embed_conformer
from .metrics import _as_array, _distance_errors, c_rmsd, distance_errors, per_degree_errors
from .model import RECIPE_NAMES, ConformerConfig, ConformerModel, RelationsFn, _check_relations_fn, distance_loss


@dataclass(frozen=True)
class Recipe:
    """One recipe's optimiser settings (see the module docstring's table; the model-side settings, gate and
    hydrogen counts, live in :class:`~companion.rebind.ConformerModel`)."""

    name: str
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    schedule: Literal["cosine", "linear"]
    min_lr_fraction: float  # the schedule's end, a fraction of lr
    batch_size: int
    drop_last: bool
    source: str


#: the two recipes by name (``ConformerConfig.recipe`` selects one)
RECIPES: dict[str, Recipe] = {
    "companion": Recipe("companion", lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, schedule="cosine",
                        min_lr_fraction=0.1, batch_size=32, drop_last=False, source="ours (CPU scale)"),
    "official": Recipe("official", lr=9e-5, weight_decay=0.0, betas=(0.9, 0.99), eps=1e-8, schedule="linear",
                       min_lr_fraction=0.0, batch_size=100, drop_last=True,
                       source="holymollyhao/ReBIND@8d240c6 experiments/conformer_prediction/rebind.sh"),
}
assert tuple(RECIPES) == RECIPE_NAMES


def _check_fits(config: ConformerConfig, *groups: Sequence[Molecule]) -> None:
    """The Laplacian encoding of an ``N``-atom molecule needs ``d_model >= N``: say so before training starts,
    not at the first batch that holds such a molecule."""
    n_max = max(m.n_atoms for mols in groups for m in mols)
    if n_max > config.d_model:
        raise ValueError(f"config.d_model ({config.d_model}) must be >= the largest molecule's atom count "
                         f"({n_max}) for the Laplacian encoding")


def lr_at(step: int, *, lr: float, warmup_steps: int, steps: int, min_lr: float = 0.0,
          schedule: str = "cosine") -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``steps``.

    - ``schedule="cosine"`` (recipe ``"companion"``): linear warm-up ``lr·(step+1)/warmup_steps``, then cosine
      decay from ``lr`` to ``min_lr`` at ``steps``;
    - ``schedule="linear"`` (recipe ``"official"``): Hugging Face's ``get_linear_schedule_with_warmup`` (the
      official trainer's ``--lr_scheduler_type=linear``): ``lr·step/warmup_steps`` during the warm-up (step 0
      has lr 0), then ``min_lr + (lr − min_lr)·max(0, (steps − step)/(steps − warmup_steps))`` (0 at ``steps``).

    ``step >= 0``; ``0 <= warmup_steps <= steps``, ``steps >= 1``; ``0 <= min_lr <= lr``, ``lr > 0``; a
    ``ValueError``/``TypeError`` naming the argument otherwise."""
    step = check_int("step", step, low=0)
    lr = check_float("lr", lr, low=0.0, low_open=True)
    steps = check_int("steps", steps, low=1)
    warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
    if warmup_steps > steps:
        raise ValueError(f"warmup_steps must be <= steps, got warmup_steps={warmup_steps} and steps={steps}")
    min_lr = check_float("min_lr", min_lr, low=0.0, high=lr)
    schedule = check_choice("schedule", schedule, ("cosine", "linear"))
    return _lr_at(step, lr=lr, warmup_steps=warmup_steps, steps=steps, min_lr=min_lr, schedule=schedule)


def _lr_at(step: int, *, lr: float, warmup_steps: int, steps: int, min_lr: float, schedule: str = "cosine") -> float:
    if schedule == "linear":
        if step < warmup_steps:
            return lr * step / max(1, warmup_steps)
        return min_lr + (lr - min_lr) * max(0.0, (steps - step) / max(1, steps - warmup_steps))
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
    ``val_d_mae``), the ``best_epoch`` whose weights the ``model`` holds, its ``best_val_d_mae``, ``seconds``
    (summed over resumed calls), the ``settings`` the run used (recipe values filled in), ``complete``
    (False when ``stop_after`` ended the call before the run finished: resume it with the same checkpoint) and
    ``epochs_run`` (epochs trained in this call); ``epoch_seconds``: each epoch's wall-clock time (kept apart
    from the records, which are deterministic)."""

    config: ConformerConfig
    records: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_d_mae: float = math.inf
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    epochs_run: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    model: ConformerModel | None = field(default=None, repr=False)

    def column(self, key: str) -> list[float]:
        return [r[key] for r in self.records]

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "records": self.records, "best_epoch": self.best_epoch,
                "best_val_d_mae": self.best_val_d_mae, "seconds": self.seconds, "settings": self.settings,
                "complete": self.complete, "epoch_seconds": self.epoch_seconds}


def train(config: ConformerConfig | str, train_mols: Sequence[Molecule], val_mols: Sequence[Molecule], *,
          epochs: int = 20, batch_size: int | None = None, lr: float | None = None,
          weight_decay: float | None = None, warmup_fraction: float = 0.1, grad_clip: float = 1.0,
          patience: int | None = 5, seed: int = 0, device: str | torch.device | None = None,
          show_progress: bool = True, checkpoint: str | os.PathLike | None = None,
          stop_after: int | None = None, decoder_relations: RelationsFn | None = None) -> History:
    """Train a :class:`ConformerModel` and keep the epoch with the lowest validation D-MAE.

    Args:
        config: a :class:`ConformerConfig` (its ``recipe`` picks the optimiser settings, :data:`RECIPES`), or a
            variant name (``"rebind"``, ``"gtmgc"``, ``"bond"``, ``"near"``) for the tiny default.
        train_mols, val_mols: lists of :class:`Molecule` with reference coordinates.
        epochs: length of the schedule (official: 20).
        batch_size, lr, weight_decay: ``None`` (default): the recipe's (companion 32, 1e-3, 0.01; official 100,
            9e-5, 0); a value overrides it.
        warmup_fraction: share of the steps spent warming up linearly (both recipes: 0.1).
        grad_clip: max gradient norm (both recipes: 1.0).
        patience: stop after this many epochs without a better validation D-MAE (None: never).
        seed: initialization and batch order.
        checkpoint: a file; after every epoch the whole state (weights, optimiser, best weights, records, batch
            order generator) is written there atomically, and a call that finds the file resumes from it. A
            resumed run equals an uninterrupted one (tested); the file must come from the same config, data
            sizes and settings (``ValueError`` otherwise). Delete it to start afresh.
        stop_after: train at most this many epochs in this call (``None``: to the end); ``History.complete``
            says whether the run finished. Needs ``checkpoint``.
        decoder_relations: ``None`` (default): the variant's decoder relations. A callable ``(model, batch,
            dist) -> [B, R, N, N]`` relations replaces them in the model it trains and returns (see
            :class:`~companion.rebind.ConformerModel`; ``R = len(config.relations)``), e.g. ReBind's force edges
            with another budget. Its ``__qualname__`` is recorded in ``settings["decoder_relations"]`` (so a
            checkpoint of a run without it, or with another function, is refused); its code is not.

    Raises:
        TypeError/ValueError: an argument of the wrong type or outside its range (named in the message), e.g. a
            ``decoder_relations`` that is not callable; a recipe that drops the last partial batch (official)
            with fewer training molecules than a batch.
    """
    if isinstance(config, str):
        try:
            config = ConformerConfig(variant=config)
        except ValueError as err:
            raise ValueError(f"config: {err}") from None
    if not isinstance(config, ConformerConfig):
        raise TypeError(f"config must be a ConformerConfig or a variant name, got {describe(config)}")
    recipe = RECIPES[config.recipe]
    check_molecules("train_mols", train_mols)
    check_molecules("val_mols", val_mols)
    epochs = check_int("epochs", epochs, low=1)
    batch_size = recipe.batch_size if batch_size is None else check_int("batch_size", batch_size, low=1)
    if patience is not None:
        patience = check_int("patience", patience, low=1)
    lr = recipe.lr if lr is None else check_float("lr", lr, low=0.0, low_open=True)
    weight_decay = (recipe.weight_decay if weight_decay is None
                    else check_float("weight_decay", weight_decay, low=0.0))
    warmup_fraction = check_float("warmup_fraction", warmup_fraction, low=0.0, high=1.0, high_open=True)
    grad_clip = check_float("grad_clip", grad_clip, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0, high=MAX_SEED)
    check_type("show_progress", show_progress, bool)
    if checkpoint is not None:
        checkpoint = Path(check_type("checkpoint", checkpoint, (str, os.PathLike), what="a file path"))
    if stop_after is not None:
        stop_after = check_int("stop_after", stop_after, low=1)
        if checkpoint is None:
            raise ValueError("stop_after needs a checkpoint file to resume from (checkpoint=None was given)")
    _check_relations_fn(decoder_relations)
    _check_fits(config, train_mols, val_mols)
    per_epoch = len(train_mols) // batch_size if recipe.drop_last else math.ceil(len(train_mols) / batch_size)
    if per_epoch == 0:
        raise ValueError(f"train_mols: recipe {recipe.name!r} drops the last partial batch, and {len(train_mols)} "
                         f"molecules make no full batch of batch_size={batch_size}")
    steps = epochs * per_epoch
    if recipe.schedule == "linear":  # Hugging Face: warm-up steps = ceil(ratio * steps)
        warmup = math.ceil(warmup_fraction * steps)
    else:
        warmup = max(1, int(warmup_fraction * steps))
    min_lr = recipe.min_lr_fraction * lr
    settings = {"recipe": recipe.name, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "betas": list(recipe.betas), "eps": recipe.eps,
                "schedule": recipe.schedule, "min_lr": min_lr, "warmup_steps": warmup, "steps": steps,
                "drop_last": recipe.drop_last, "grad_clip": grad_clip, "patience": patience, "seed": seed,
                "n_train": len(train_mols), "n_val": len(val_mols)}
    if decoder_relations is not None:
        settings["decoder_relations"] = getattr(decoder_relations, "__qualname__", repr(decoder_relations))
    device = get_device(device)
    seed_everything(seed)
    model = ConformerModel(config, decoder_relations=decoder_relations).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=recipe.betas,
                            eps=recipe.eps)
    gen = torch.Generator().manual_seed(seed)
    hist = History(config=config, settings=settings)
    best_state = None
    stale, step, start = 0, 0, 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["config"] != asdict(config) or state["settings"] != settings:
            raise ValueError(f"checkpoint {checkpoint} was written by another run (config or settings differ: "
                             f"saved {state['config']} {state['settings']}, now {asdict(config)} {settings}); "
                             "delete it to start afresh")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        best_state, stale, step = state["best_state"], state["stale"], state["step"]
        hist.records, hist.best_epoch, hist.best_val_d_mae = state["records"], state["best_epoch"], state["best_val"]
        hist.seconds, start = state["seconds"], len(state["records"])
        hist.epoch_seconds = state["epoch_seconds"]
        if state["finished"]:
            start = epochs
    t0 = time.perf_counter()
    finished = start >= epochs
    todo = range(start, epochs if stop_after is None else min(epochs, start + stop_after))
    bar = progress(todo, desc=f"train {config.variant}") if show_progress else todo
    for epoch in bar:
        t_epoch = time.perf_counter()
        model.train()
        perm = torch.randperm(len(train_mols), generator=gen).tolist()
        losses = []
        for i in range(0, per_epoch * batch_size, batch_size):
            batch = collate([train_mols[j] for j in perm[i:i + batch_size]], device=device)
            cur = _lr_at(step, lr=lr, warmup_steps=warmup, steps=steps, min_lr=min_lr, schedule=recipe.schedule)
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
        hist.epoch_seconds.append(time.perf_counter() - t_epoch)
        hist.epochs_run += 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{val:.3f}")
        if val < hist.best_val_d_mae:
            hist.best_val_d_mae, hist.best_epoch, stale = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        finished = epoch == epochs - 1 or (patience is not None and stale >= patience)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "config": asdict(config), "settings": settings, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "generator": gen.get_state(), "best_state": best_state,
                "stale": stale, "step": step, "records": hist.records, "best_epoch": hist.best_epoch,
                "best_val": hist.best_val_d_mae, "seconds": hist.seconds + time.perf_counter() - t0,
                "epoch_seconds": hist.epoch_seconds,
                "finished": finished})
        if finished:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist.model = model
    hist.complete = finished
    hist.seconds += time.perf_counter() - t0
    return hist


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    from companion.lab.cache import atomic_write

    atomic_write(path, lambda tmp: torch.save(state, tmp))


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
