"""Bad-input table of ``companion.rebind`` (see tests/badinput.py)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from rdkit import Chem

from badinput import Choice, Custom, Float, Int, NoArguments, Obj, Spec, Tensor, cli_spec
from companion import rebind as rb

RDKIT_SEED = Int(low=0, high=2**31 - 1)  # RDKit's embedding takes a C int
SEED = Int(low=0, high=2**32 - 1)  # the range of companion.lab.seed_everything
FLAG = Custom((1, "yes", None))
NAN = math.nan

WATER_XYZ = "3\nwater\nO 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"


@functools.cache
def _mols() -> tuple:
    """Methanol (6 atoms) and ethanol (9 atoms) with MMFF94 conformations (tens of milliseconds, once)."""
    return rb.molecule_from_smiles("CO"), rb.molecule_from_smiles("CCO")


def mols() -> list:
    return list(_mols())


def near(ms) -> list[torch.Tensor]:
    """Predictions a little off the references."""
    return [m.coords + 0.01 * torch.arange(m.n_atoms * 3).reshape(-1, 3) / m.n_atoms for m in ms]


@functools.cache
def tiny_config() -> rb.ConformerConfig:
    return rb.ConformerConfig(variant="rebind", d_model=16, n_heads=2, d_ff=16, encoder_layers=1, decoder_layers=1)


@functools.cache
def tiny_model() -> rb.ConformerModel:
    torch.manual_seed(0)
    return rb.ConformerModel(tiny_config()).eval()


def bonds_everywhere(model, batch, dist):
    """A valid decoder_relations hook: the bond matrix in every relation slot of the decoder."""
    return batch.adjacency[:, None].repeat(1, len(model.config.relations), 1, 1)


_NOT_CALLABLE = Custom(("force_edges", 3, object(), [bonds_everywhere]))


def methanol():
    """Methanol's distances, atomic numbers and bond adjacency, unbatched (fresh tensors)."""
    m = _mols()[0]
    return torch.cdist(m.coords, m.coords), m.z.clone(), m.adjacency.clone()


def _output_and_batch():
    batch = rb.collate(mols())
    with torch.no_grad():
        return {"out": tiny_model()(batch), "batch": batch}


def _load_qm9(**kw):
    if not rb.qm9_available():
        pytest.skip("qm9pack is not installed (an optional extra)")
    return rb.load_qm9(**kw)


def _edge_stats():
    d, z, adj = methanol()
    a_attr, a_rep = rb.force_edges(d, z, adj)
    return {"a_attr": a_attr, "a_rep": a_rep, "adj": adj, "mask": None}


_NOT_MOLECULES = Custom(([], None, "CO", ["CO"], (1, 2), [None]))
_BAD_SHAPED_PRED = (None, "pred", [], [torch.zeros(2, 3)], torch.zeros(6, 3), [torch.zeros(6, 2), torch.zeros(9, 2)],
                    [["a", "b", "c"]], [torch.zeros(6, 3), torch.zeros(8, 3)])
_BAD_PRED = Custom((*_BAD_SHAPED_PRED, [torch.full((6, 3), NAN), torch.zeros(9, 3)]))
_BAD_MASK = Custom((torch.ones(6), torch.ones(5, dtype=torch.bool), "mask", [True] * 6))
_BAD_SQUARE = Custom((None, "adj", torch.zeros(6), torch.zeros(6, 5), torch.zeros(0, 0), [[0.0, 1.0], [1.0, 0.0]]))
_BAD_DIST = Custom((None, "dist", torch.zeros(5, 5), torch.full((6, 6), NAN), -torch.ones(6, 6),
                    torch.ones(6, 6, dtype=torch.bool)))
_BAD_Z = Custom((None, "z", torch.ones(6), torch.ones(5, dtype=torch.long), [6, 8, 1, 1, 1, 1]))
_BAD_FRACTIONS = Custom(((0.8, 0.1), (0.5, 0.5, 0.5), (NAN, 0.5, 0.5), (1.2, -0.1, -0.1), "abc", None,
                         (True, False, False), 0.8))
_BAD_DEVICE = Custom(("gpu", 3.5, object(), "cuda:x"))


def _lj_args():
    return {"r": torch.linspace(2.0, 5.0, 4, dtype=torch.float64), "sigma": 3.2, "eps": 0.07}


_LJ_KINDS = {"r": Tensor(lambda: torch.linspace(2.0, 5.0, 4), dtype="floating", empty_ok=True, finite=True),
             "sigma": Float(low=0.0), "eps": Float(low=0.0)}

SPECS = {
    "ATOM_FEATURES": NoArguments("a constant (the 9 atom features and their class counts)"),
    "LJ_PARAMETERS": NoArguments("a constant (the Lennard-Jones table)"),
    "VARIANTS": NoArguments("a constant (the decoder relations of each variant)"),
    "RelationsFn": NoArguments("a type alias (the decoder_relations hook of ConformerModel and train, whose checks "
                               "are the entries of those two)"),
    "NUM_HS_MODES": NoArguments("a constant (how the num_hs feature counts hydrogens)"),
    "RECIPE_NAMES": NoArguments("a constant (the recipe names)"),
    "RECIPES": NoArguments("a constant (the two recipes' optimiser settings)"),
    "Recipe": NoArguments("a record of constants (RECIPES; ConformerConfig.recipe, swept, selects one)"),
    "Batch": NoArguments("a record made by collate (swept there); ConformerModel and distance_loss check it"),
    "Molecule": NoArguments("a record made by molecule_from_mol/_smiles/_xyz (swept there); collate checks the "
                            "shapes of its tensors"),
    "ConformerOutput": NoArguments("a record returned by ConformerModel (distance_loss checks it)"),
    "History": NoArguments("a record returned by train"),
    "qm9_available": NoArguments("a function without arguments"),
    # ----------------------------------------------------------------------------------------------- data
    "atom_features": Spec(lambda **kw: rb.atom_features(**kw), lambda: {"mol": _mols()[0].mol, "num_hs": "official"},
                          {"mol": Obj(Chem.Mol), "num_hs": Choice(rb.NUM_HS_MODES)}),
    "bond_adjacency": Spec(lambda **kw: rb.bond_adjacency(**kw), lambda: {"mol": _mols()[0].mol},
                           {"mol": Obj(Chem.Mol)}),
    "laplacian_pe": Spec(lambda **kw: rb.laplacian_pe(**kw), lambda: {"adj": _mols()[1].adjacency.clone()},
                         {"adj": Tensor(lambda: _mols()[1].adjacency.clone(), ndim=2)}),
    "molecule_from_mol": Spec(lambda **kw: rb.molecule_from_mol(**kw), lambda: {"mol": _mols()[0].mol, "name": "x"},
                              {"mol": Obj(Chem.Mol), "name": Custom((3, None, b"x"))}),
    "molecule_from_smiles": Spec(
        lambda **kw: rb.molecule_from_smiles(**kw), lambda: {"smiles": "CO", "mmff": True, "seed": 0, "name": None},
        {"smiles": Custom((3, None, b"CO", "", "C1CC", "C.O", "[C]")), "mmff": FLAG, "seed": RDKIT_SEED,
         "name": Custom((3, b"x", ["x"]))}),
    "molecule_from_xyz": Spec(
        lambda **kw: rb.molecule_from_xyz(**kw),
        lambda: {"xyz": WATER_XYZ, "name": "water", "charge": 0, "hueckel_fallback": True},
        {"xyz": Custom((3, None, b"3", "", "two\nwater\nO 0 0 0\n")), "name": Custom((3, None)), "charge": Int(),
         "hueckel_fallback": FLAG}),
    "xyz_block": Spec(
        lambda **kw: rb.xyz_block(**kw),
        lambda: {"symbols": ["O", "H", "H"], "coords": [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]],
                 "comment": "water"},
        {"symbols": Custom((None, "OHH", [], ["O", "H"], [8, 1, 1], ["O", "H H", "H"], ["O", "", "H"])),
         "coords": Custom((None, "abc", 3.0, [[0, 0]] * 3, [[0, 0, 0]] * 2, [[NAN, 0, 0]] * 3, [["a", "b", "c"]] * 3,
                           [[0, 0, 0], [0, 0], [0, 0, 0]], np.zeros((3, 3, 1)), np.array(1.0))),
         "comment": Custom((3, None, "two\nlines"))}),
    "embed_conformer": Spec(
        lambda **kw: rb.embed_conformer(**kw),
        lambda: {"mol": Chem.AddHs(Chem.MolFromSmiles("CO")), "mmff": True, "seed": 0, "max_iters": 200},
        {"mol": Obj(Chem.Mol), "mmff": FLAG, "seed": RDKIT_SEED, "max_iters": Int(low=1, high=2**31 - 1)}),
    "nci_smiles": Spec(lambda **kw: rb.nci_smiles(**kw), lambda: {"max_heavy_atoms": 3},
                       {"max_heavy_atoms": Int(low=2)}),
    "load_nci": Spec(
        lambda **kw: rb.load_nci(**kw),
        lambda: {"n": 2, "mmff": True, "seed": 0, "max_heavy_atoms": 9, "cache": True},
        {"n": Int(low=1, optional=True), "mmff": FLAG, "seed": RDKIT_SEED, "max_heavy_atoms": Int(low=2),
         "cache": FLAG}),
    "load_qm9": Spec(
        _load_qm9,  # 2 molecules: ~2 s the first time on a machine, then from the cache
        lambda: {"split": "test", "max_molecules": 2, "seed": 0, "fractions": (0.8, 0.1, 0.1), "cache": True},
        {"split": Choice(("train", "valid", "test")), "max_molecules": Int(low=1, optional=True), "seed": SEED,
         "fractions": _BAD_FRACTIONS, "cache": FLAG}),
    "split_molecules": Spec(
        lambda **kw: rb.split_molecules(**kw), lambda: {"mols": mols(), "fractions": (0.5, 0.25, 0.25), "seed": 0},
        {"mols": _NOT_MOLECULES, "fractions": _BAD_FRACTIONS, "seed": SEED}),
    "collate": Spec(lambda **kw: rb.collate(**kw), lambda: {"mols": mols(), "device": None},
                    {"mols": _NOT_MOLECULES, "device": _BAD_DEVICE}),
    # --------------------------------------------------------------------------------------------- forces
    "lj_parameters": Spec(
        lambda **kw: rb.lj_parameters(**kw),
        lambda: {"z": torch.tensor([6, 1, 8]), "mask": None, "dtype": torch.float64},
        {"z": Tensor(lambda: torch.tensor([6, 1, 8]), dtype="integer"),
         "mask": Custom((torch.ones(3), torch.ones(2, dtype=torch.bool), "mask")),
         "dtype": Custom((torch.int64, "float32", None, torch.bool))}),
    "lj_potential": Spec(lambda **kw: rb.lj_potential(**kw), _lj_args, _LJ_KINDS),
    "lj_force": Spec(lambda **kw: rb.lj_force(**kw), _lj_args, _LJ_KINDS),
    "pair_forces": Spec(
        lambda **kw: rb.pair_forces(**kw), lambda: dict(zip(("dist", "z", "adj"), methanol()), mask=None),
        {"dist": _BAD_DIST, "z": _BAD_Z, "adj": _BAD_SQUARE, "mask": _BAD_MASK}),
    "force_edges": Spec(
        lambda **kw: rb.force_edges(**kw),
        lambda: dict(zip(("dist", "z", "adj"), methanol()), mask=None, released_code=False, k=None),
        {"dist": _BAD_DIST, "z": _BAD_Z, "adj": _BAD_SQUARE, "mask": _BAD_MASK, "released_code": FLAG,
         "k": Int(low=0, optional=True)}),
    "nearest_edges": Spec(
        lambda **kw: rb.nearest_edges(**kw),
        lambda: {"dist": methanol()[0], "adj": methanol()[2], "mask": None, "k": None},
        {"dist": _BAD_DIST, "adj": _BAD_SQUARE, "mask": _BAD_MASK, "k": Int(low=0, optional=True)}),
    "degrees": Spec(lambda **kw: rb.degrees(**kw), lambda: {"adj": methanol()[2], "mask": None},
                    {"adj": _BAD_SQUARE, "mask": _BAD_MASK}),
    "extra_edge_counts": Spec(lambda **kw: rb.extra_edge_counts(**kw), lambda: {"adj": methanol()[2], "mask": None},
                              {"adj": _BAD_SQUARE, "mask": _BAD_MASK}),
    "hop_distance": Spec(lambda **kw: rb.hop_distance(**kw),
                         lambda: {"adj": methanol()[2], "mask": None, "max_hops": 3},
                         {"adj": _BAD_SQUARE, "mask": _BAD_MASK, "max_hops": Int(low=0)}),
    "edge_statistics": Spec(
        lambda **kw: rb.edge_statistics(**kw), _edge_stats,
        {"a_attr": Custom((None, "a", torch.zeros(5, 5), torch.zeros(6))),
         "a_rep": Custom((None, "a", torch.zeros(5, 5), torch.zeros(6))), "adj": _BAD_SQUARE, "mask": _BAD_MASK}),
    # ---------------------------------------------------------------------------------------------- model
    "ConformerConfig": Spec(
        lambda **kw: rb.ConformerConfig(**kw),
        lambda: {"variant": "bond", "d_model": 16, "n_heads": 2, "d_ff": 16, "encoder_layers": 1, "decoder_layers": 1,
                 "released_code": False, "beta_init": None, "recipe": "official"},
        {"variant": Choice(tuple(rb.VARIANTS)), "d_model": Int(low=1), "n_heads": Int(low=1), "d_ff": Int(low=1),
         "encoder_layers": Int(low=1), "decoder_layers": Int(low=1), "released_code": FLAG,
         "beta_init": Float(optional=True), "recipe": Choice(rb.RECIPE_NAMES)}),
    "ConformerModel": Spec(
        lambda **kw: rb.ConformerModel(**kw)(rb.collate(mols())),
        lambda: {"config": tiny_config(), "d_ff": 8, "decoder_relations": bonds_everywhere},
        {"config": Obj(rb.ConformerConfig), "d_ff": Int(low=1), "decoder_relations": _NOT_CALLABLE}),
    "RelationAttention": Spec(
        lambda **kw: rb.RelationAttention(**kw),
        lambda: {"d_model": 8, "n_heads": 2, "n_relations": 2, "beta_init": None},
        {"d_model": Int(low=1), "n_heads": Int(low=1), "n_relations": Int(low=1), "beta_init": Float(optional=True)}),
    "modulated_scores": Spec(
        lambda **kw: rb.modulated_scores(**kw),
        lambda: {"scores": torch.randn(1, 2, 3, 3), "relations": torch.randn(1, 2, 3, 3), "beta": torch.randn(2, 2)},
        {"scores": Tensor(lambda: torch.randn(1, 2, 3, 3), ndim=4, dtype="floating"),
         "relations": Tensor(lambda: torch.randn(1, 2, 3, 3), ndim=4, dtype="floating"),
         "beta": Tensor(lambda: torch.randn(2, 2), ndim=2, dtype="floating")}),
    "pairwise_distances": Spec(
        lambda **kw: rb.pairwise_distances(**kw), lambda: {"coords": torch.randn(2, 4, 3), "eps": 1e-12},
        {"coords": Tensor(lambda: torch.randn(2, 4, 3), dtype="floating"), "eps": Float(low=0.0, low_open=True)}),
    "row_subtracted_distances": Spec(
        lambda **kw: rb.row_subtracted_distances(**kw),
        lambda: {"dist": torch.rand(2, 3, 3), "mask": torch.ones(2, 3, dtype=torch.bool)},
        {"dist": Tensor(lambda: torch.rand(2, 3, 3), ndim=3, dtype="floating"),
         "mask": Tensor(lambda: torch.ones(2, 3, dtype=torch.bool), ndim=2, dtype="bool")}),
    "distance_loss": Spec(
        lambda **kw: rb.distance_loss(**kw), _output_and_batch,
        {"out": Custom((None, "out", 3)), "batch": Custom((None, "batch", 3))}),
    # -------------------------------------------------------------------------------------------- metrics
    "distance_errors": Spec(lambda **kw: rb.distance_errors(**kw),
                            lambda: {"pred": near(mols()), "true": [m.coords for m in mols()], "mask": None},
                            {"pred": _BAD_PRED, "true": _BAD_PRED, "mask": _BAD_MASK}),
    "d_mae": Spec(lambda **kw: rb.d_mae(**kw),
                  lambda: {"pred": near(mols()), "true": [m.coords for m in mols()], "mask": None},
                  {"pred": _BAD_PRED, "true": _BAD_PRED, "mask": _BAD_MASK}),
    "d_rmse": Spec(lambda **kw: rb.d_rmse(**kw),
                   lambda: {"pred": near(mols()), "true": [m.coords for m in mols()], "mask": None},
                   {"pred": _BAD_PRED, "true": _BAD_PRED, "mask": _BAD_MASK}),
    "c_rmsd_one": Spec(
        lambda **kw: rb.c_rmsd_one(**kw),
        lambda: {"mol": _mols()[0].mol, "pred": near(mols())[0], "heavy_only": True, "ref": None},
        {"mol": Obj(Chem.Mol), "pred": Custom(("pred", None, torch.zeros(2, 3), [[1, 2]], torch.full((6, 3), NAN))),
         "heavy_only": FLAG, "ref": Custom(("ref", torch.zeros(2, 3), np.full((6, 3), NAN)))}),
    "c_rmsd": Spec(lambda **kw: rb.c_rmsd(**kw),
                   lambda: {"molecules": mols(), "pred": near(mols()), "mask": None, "heavy_only": True},
                   {"molecules": _NOT_MOLECULES, "pred": _BAD_PRED, "mask": _BAD_MASK, "heavy_only": FLAG}),
    "per_degree_errors": Spec(lambda **kw: rb.per_degree_errors(**kw),
                              lambda: {"molecules": mols(), "pred": near(mols()), "mask": None},
                              {"molecules": _NOT_MOLECULES, "pred": _BAD_PRED, "mask": _BAD_MASK}),
    # ------------------------------------------------------------------------------------------- training
    "lr_at": Spec(
        lambda **kw: rb.lr_at(**kw),
        lambda: {"step": 5, "lr": 1e-3, "warmup_steps": 2, "steps": 10, "min_lr": 1e-4, "schedule": "linear"},
        {"step": Int(low=0), "lr": Float(low=0.0, low_open=True), "warmup_steps": Int(low=0, high=10),
         "steps": Int(low=2), "min_lr": Float(low=0.0, high=1e-3), "schedule": Choice(("cosine", "linear"))}),
    "predict": Spec(
        lambda **kw: rb.predict(**kw),
        lambda: {"model": tiny_model(), "mols": mols(), "batch_size": 2, "intermediate": False},
        {"model": Obj(rb.ConformerModel), "mols": _NOT_MOLECULES, "batch_size": Int(low=1), "intermediate": FLAG}),
    "evaluate": Spec(
        lambda **kw: rb.evaluate(**kw),
        lambda: {"model": tiny_model(), "mols": mols(), "batch_size": 2, "with_rmsd": False, "per_degree": False},
        {"model": Obj(rb.ConformerModel), "mols": _NOT_MOLECULES, "batch_size": Int(low=1), "with_rmsd": FLAG,
         "per_degree": FLAG}),
    # a NaN prediction is valid here: evaluate_coordinates counts it as failed (only all-NaN is an error)
    "evaluate_coordinates": Spec(
        lambda **kw: rb.evaluate_coordinates(**kw),
        lambda: {"mols": mols(), "pred": near(mols()), "with_rmsd": False, "per_degree": False},
        {"mols": _NOT_MOLECULES,
         "pred": Custom((*_BAD_SHAPED_PRED, [torch.full((6, 3), NAN), torch.full((9, 3), NAN)])),
         "with_rmsd": FLAG, "per_degree": FLAG}),
    "etkdg_predict": Spec(lambda **kw: rb.etkdg_predict(**kw), lambda: {"mols": mols()[:1], "mmff": False, "seed": 1},
                          {"mols": _NOT_MOLECULES, "mmff": FLAG, "seed": RDKIT_SEED}),
    # --------------------------------------------------------------------------------------------- viewer
    "align_to_reference": Spec(
        lambda **kw: rb.align_to_reference(**kw), lambda: {"mol": _mols()[0], "coords": near(mols())[0]},
        {"mol": Custom((3, None, "CO")), "coords": Custom((None, "abc", torch.zeros(2, 3), torch.full((6, 3), NAN)))}),
    "conformer_view": Spec(
        lambda **kw: rb.conformer_view(**kw),
        lambda: {"mol": _mols()[0], "conformers": {"near": near(mols())[0]},
                 "edges": {"repulsive": torch.ones(6, 6)}, "align": True, "width": 200, "height": 200},
        {"mol": Custom((3, None, "CO")),
         "conformers": Custom((3, "x", [torch.zeros(6, 3)], {"a": torch.zeros(2, 3)}, {3: torch.zeros(6, 3)},
                               {"a": torch.full((6, 3), NAN)}, {str(i): torch.zeros(6, 3) for i in range(6)})),
         "edges": Custom((3, "x", {"bonds": torch.ones(6, 6)}, {"repulsive": torch.zeros(3, 3)},
                          {"repulsive": "x"})),
         "align": FLAG, "width": Int(low=50), "height": Int(low=50)}),
    "view_html": Spec(
        lambda **kw: rb.view_html(**kw),
        lambda: {"view": rb.conformer_view(_mols()[0], width=200, height=200), "title": "methanol"},
        {"view": Custom((3, None, "<div>")), "title": Custom((3, b"x"))}),
    "selector_html": Spec(
        lambda **kw: rb.selector_html(**kw),
        lambda: {"views": {"methanol": rb.conformer_view(_mols()[0], width=200, height=200)}, "label": "molecule"},
        {"views": Custom((3, None, {}, [1], {"a": "<div>"}, {3: "<div>"})), "label": Custom((3, None, b"x"))}),
    "train": Spec(
        lambda **kw: rb.train(**kw),
        lambda: {"config": tiny_config(), "train_mols": mols(), "val_mols": mols()[:1], "epochs": 1, "batch_size": 2,
                 "lr": 1e-3, "weight_decay": 0.01, "warmup_fraction": 0.1, "grad_clip": 1.0, "patience": None,
                 "seed": 0, "device": "cpu", "show_progress": False, "checkpoint": None, "stop_after": None,
                 "decoder_relations": bonds_everywhere},
        {"config": Custom((3, None, "transformer", object(), rb.ConformerConfig(d_model=8, n_heads=2))),
         "train_mols": _NOT_MOLECULES, "val_mols": _NOT_MOLECULES, "epochs": Int(low=1),
         "batch_size": Int(low=1, optional=True), "lr": Float(low=0.0, low_open=True, optional=True),
         "weight_decay": Float(low=0.0, optional=True),
         "warmup_fraction": Float(low=0.0, high=1.0, high_open=True), "grad_clip": Float(low=0.0, low_open=True),
         "patience": Int(low=1, optional=True), "seed": SEED, "device": _BAD_DEVICE, "show_progress": FLAG,
         "checkpoint": Custom((3, b"run.pt", ["run.pt"])), "stop_after": Custom((0, -1, 1.5, "1", True)),
         "decoder_relations": _NOT_CALLABLE}),
}

CLI_SPECS = {
    f"rebind {name}": cli_spec(["rebind", name], {"seed": "0", "threads": "1", "recipe": "official"},
                               {"seed": Int(low=0, high=2**32 - 1), "threads": Int(low=0),
                                "recipe": Choice(rb.RECIPE_NAMES)})
    for name in ("edges", "compare")
}
CLI_SPECS["rebind converged"] = cli_spec(
    ["rebind", "converged"], {"seed": "0", "threads": "1", "recipe": "official", "budget_minutes": "30"},
    {"seed": Int(low=0, high=2**32 - 1), "threads": Int(low=0), "recipe": Choice(rb.RECIPE_NAMES),
     "budget_minutes": Float(low=0.0, low_open=True)})


def _one_thread(fn):
    """``fn`` on one torch thread: these tensors are tiny, and two threads on a busy machine are ten times slower."""
    @functools.wraps(fn)
    def run(**kw):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(**kw)
        finally:
            torch.set_num_threads(before)

    return run


for _spec in SPECS.values():
    if isinstance(_spec, Spec):
        _spec.call, _spec.valid = _one_thread(_spec.call), _one_thread(_spec.valid)
