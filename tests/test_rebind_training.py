"""ReBind's metrics (pooling, symmetry-aware C-RMSD, per degree), training and the ETKDG baseline."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest
import torch

from companion.rebind import (
    ConformerConfig,
    c_rmsd,
    c_rmsd_one,
    d_mae,
    d_rmse,
    distance_errors,
    etkdg_predict,
    evaluate,
    evaluate_coordinates,
    load_nci,
    lr_at,
    molecule_from_smiles,
    per_degree_errors,
    predict,
    split_molecules,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nci(tmp_path_factory):
    """The first 40 QM9-like NCI molecules (ETKDG + MMFF94), split 80/10/10, in a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPANION_CACHE", str(tmp_path_factory.mktemp("rebind-cache")))
        mols = load_nci(40)
    return split_molecules(mols, seed=0)


# ------------------------------------------------------------------------------------------------- metrics

def test_metrics_pool_over_all_pairs_of_all_molecules():
    true = [torch.tensor([[0.0, 0, 0], [1, 0, 0]]), torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])]
    pred = [torch.tensor([[0.0, 0, 0], [2, 0, 0]]), 2 * true[1]]
    # molecule 1: |2 − 1| on 2 ordered pairs = 2 of N² = 4;  molecule 2: errors 1, 2, 1 twice = 8 of N² = 9
    assert d_mae(pred, true) == pytest.approx(10 / 13)  # not the per-molecule mean (2/4 + 8/9) / 2
    assert d_rmse(pred, true) == pytest.approx(math.sqrt((2 * 1 + 2 * (1 + 4 + 1)) / 13))
    res = distance_errors(pred, true)
    assert res["pairs"] == 13 and res["molecules"] == 2


def test_metrics_accept_padded_batches_with_masks():
    true = [torch.randn(3, 3), torch.randn(5, 3)]
    pred = [t + 0.1 * torch.randn_like(t) for t in true]
    pad = lambda xs: torch.stack([torch.cat([x, torch.zeros(5 - len(x), 3)]) for x in xs])  # noqa: E731
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert d_mae(pad(pred), pad(true), mask) == pytest.approx(d_mae(pred, true))


def test_best_rms_is_symmetry_aware():
    from rdkit.Chem import rdMolAlign

    mol = molecule_from_smiles("CC(C)C")  # isobutane: three equivalent methyl carbons (atoms 0, 2, 3)
    x = mol.coords.clone()
    swapped = x.clone()
    swapped[[0, 2]] = x[[2, 0]]  # swap two methyl carbons (their hydrogens stay put)
    assert c_rmsd_one(mol.mol, swapped) == pytest.approx(0.0, abs=1e-4)
    # a plain atom-by-atom alignment does see a difference
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    probe = Chem.Mol(mol.mol)
    for i, p in enumerate(swapped.tolist()):
        probe.GetConformer().SetAtomPosition(i, Point3D(*p))
    heavy = [a.GetIdx() for a in mol.mol.GetAtoms() if a.GetAtomicNum() > 1]
    plain = rdMolAlign.AlignMol(probe, mol.mol, atomMap=[(i, i) for i in heavy])
    assert plain > 0.2


def test_permuted_hydrogens_give_zero_rmsd_with_hydrogens_included():
    mol = molecule_from_smiles("CO")  # atoms: C, O, H, H, H (on C), H (on O)
    x = mol.coords.clone()
    perm = x.clone()
    perm[[2, 3, 4]] = x[[4, 2, 3]]
    assert c_rmsd_one(mol.mol, perm, heavy_only=False) == pytest.approx(0.0, abs=1e-4)
    rotated = x @ torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]).T + 3.0  # rigid motion
    assert c_rmsd_one(mol.mol, rotated, heavy_only=False) == pytest.approx(0.0, abs=1e-4)
    assert c_rmsd([mol], [perm]) == pytest.approx(0.0, abs=1e-4)


def test_per_degree_errors_group_atoms_by_their_bond_degree():
    mol = molecule_from_smiles("O")  # O (degree 2), H, H (degree 1)
    pred = mol.coords.clone()
    pred[1] = pred[0] + 2 * (pred[1] - pred[0])  # stretch one O–H bond from r to 2r
    e = np.abs(torch.cdist(pred, pred).numpy() - torch.cdist(mol.coords, mol.coords).numpy())
    res = per_degree_errors([mol], [pred])
    assert res[2]["atoms"] == 1 and res[1]["atoms"] == 2
    assert res[2]["d_mae"] == pytest.approx(e[0].sum() / 2)
    assert res[1]["d_mae"] == pytest.approx((e[1].sum() + e[2].sum()) / 4)


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="pred has 1 molecules but true has 2"):
        d_mae([torch.zeros(2, 3)], [torch.zeros(2, 3), torch.zeros(2, 3)])
    with pytest.raises(ValueError, match=r"molecule 0: pred has shape \[2, 3\], true \[3, 3\]"):
        d_mae([torch.zeros(2, 3)], [torch.zeros(3, 3)])
    with pytest.raises(ValueError, match=r"must be \[N, 3\]"):
        d_mae([torch.zeros(2, 2)], [torch.zeros(2, 2)])
    with pytest.raises(TypeError, match="list of"):
        d_mae("xyz", "xyz")
    mol = molecule_from_smiles("CO")
    with pytest.raises(ValueError, match=r"pred must be \[6, 3\]"):
        c_rmsd_one(mol.mol, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        c_rmsd_one(mol.mol, torch.full((6, 3), float("nan")))


# ------------------------------------------------------------------------------------------------ training

def test_learning_rate_warms_up_then_decays():
    lrs = [lr_at(s, lr=1e-3, warmup_steps=10, steps=100, min_lr=1e-4) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4, rel=0.01)


def test_tiny_training_lowers_the_loss_and_is_deterministic(nci):
    tr, va, _ = nci
    cfg = ConformerConfig(variant="rebind", d_model=32, d_ff=64, encoder_layers=1, decoder_layers=1)
    h1 = train(cfg, tr, va, epochs=6, batch_size=8, lr=2e-3, seed=1, show_progress=False, patience=None)
    h2 = train(cfg, tr, va, epochs=6, batch_size=8, lr=2e-3, seed=1, show_progress=False, patience=None)
    assert h1.records == h2.records
    assert h1.records[-1]["loss"] < 0.8 * h1.records[0]["loss"]
    assert h1.best_val_d_mae == min(h1.column("val_d_mae"))
    best = evaluate(h1.model, va, with_rmsd=False)["d_mae"]
    assert best == pytest.approx(h1.best_val_d_mae, rel=1e-5)  # the best epoch's weights are kept
    assert [p.shape for p in predict(h1.model, va)] == [m.coords.shape for m in va]
    assert h1.to_dict()["config"]["variant"] == "rebind"


def test_early_stopping_stops_after_patience(nci):
    tr, va, _ = nci
    cfg = ConformerConfig(d_model=32, d_ff=64, encoder_layers=1, decoder_layers=1)
    # a step far below float32 resolution: the weights never change, so validation never improves
    h = train(cfg, tr, va, epochs=30, batch_size=16, lr=1e-15, seed=0, show_progress=False, patience=2,
              warmup_fraction=0.0)
    assert len(h.records) == 3 and h.best_epoch == 0


def test_etkdg_baseline_scored_with_the_same_metrics(nci):
    _, _, te = nci
    pred = etkdg_predict(te, seed=1)
    assert [p.shape for p in pred] == [m.coords.shape for m in te]
    res = evaluate_coordinates(te, pred, per_degree=True)
    assert 0 <= res["d_mae"] < 0.5 and 0 <= res["c_rmsd"] < 1.0 and res["per_degree"]
    same = evaluate_coordinates(te, etkdg_predict(te, seed=0), with_rmsd=False)  # the references' own recipe
    assert same["d_mae"] < 1e-3


def test_training_arguments_are_checked(nci):
    tr, va, _ = nci
    with pytest.raises(ValueError, match="variant must be one of"):
        train("transformer", tr, va)
    with pytest.raises(ValueError, match="train_mols must be a non-empty list"):
        train("rebind", [], va)
    with pytest.raises(TypeError, match=r"val_mols\[0\] must be a Molecule"):
        train("rebind", tr, ["CCO"])
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        train("rebind", tr, va, epochs=0)
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        train("rebind", tr, va, lr=0.0)


# --------------------------------------------------------------------------------------------- experiments

def test_compare_variants_and_edge_census_return_json_ready_dicts(nci):
    import json

    from companion.rebind.experiments import compare_variants, edge_census

    tr, va, te = nci
    data = {"source": "nci", "train": tr[:16], "valid": va, "test": te}
    cfg = ConformerConfig(d_model=32, d_ff=64, encoder_layers=1, decoder_layers=1)
    res = compare_variants(data, variants=("bond", "rebind"), released_code=True, config=cfg, epochs=1,
                           batch_size=8, show_progress=False)
    assert set(res["runs"]) == {"bond", "rebind", "rebind_released"}
    assert set(res["baselines"]) == {"etkdg", "etkdg_mmff"}
    assert all({"d_mae", "d_rmse", "c_rmsd", "per_degree"} <= set(r) for r in res["runs"].values())
    census = edge_census(tr)
    assert census["share_repulsive"] > 0.9 and census["edges"] == sum(k * c for k, c in census["k_histogram"].items())
    json.dumps(res), json.dumps(census)


def test_cli_registers_the_chapter():
    from companion.__main__ import build_parser

    args = build_parser().parse_args(["rebind", "compare", "--full", "--seed", "3"])
    assert args.experiment == "compare" and args.full and args.seed == 3


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 10_000))
def test_distance_metrics_ignore_rigid_motions(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))  # orthogonal (maybe a mirror)
    moved = x @ q.T + torch.randn(3, generator=g, dtype=torch.float64)
    assert d_mae([moved], [x]) < 1e-9 and d_rmse([moved], [x]) < 1e-9
    assert d_mae([x], [moved]) == pytest.approx(d_mae([moved], [x]), abs=1e-12)


def test_failed_embeddings_are_counted_not_scored(nci):
    _, _, te = nci
    pred = [m.coords.clone() for m in te]
    pred[0] = torch.full_like(pred[0], float("nan"))
    res = evaluate_coordinates(te, pred)
    assert res["failed"] == 1 and res["molecules"] == len(te) - 1 and res["d_mae"] < 1e-5
    with pytest.raises(ValueError, match="2 predictions for"):
        evaluate_coordinates(te, pred[:2])


def test_seed_summary_and_per_degree_summary_by_hand():
    from companion.rebind.experiments import paired_change, per_degree_change, per_degree_summary, seed_summary

    a = {"runs": {"bond": {"d_mae": 1.0, "per_degree": {"1": {"d_mae": 2.0, "atoms": 5}, "2": {"d_mae": 1.0, "atoms": 3}}}},
         "baselines": {"etkdg": {"d_mae": 0.5, "per_degree": {"1": {"d_mae": 0.7, "atoms": 5}}}}}
    b = {"runs": {"bond": {"d_mae": 3.0, "per_degree": {"1": {"d_mae": 4.0, "atoms": 5}}}}}
    s = seed_summary([a, b], ["bond", "etkdg", "near"], metrics=("d_mae",))
    assert s == {"bond": {"d_mae": (2.0, pytest.approx(2 ** 0.5), 2)}, "etkdg": {"d_mae": (0.5, 0.0, 1)}}
    d = per_degree_summary([a, b], ["bond", "etkdg"])
    assert d == {"bond": {1: (3.0, 5)}, "etkdg": {1: (0.7, 5)}}
    # ReBind 10% better on degree 1 in one seed, 30% better in the other; degree 2 only in the first
    a["runs"]["rebind"] = {"d_mae": 1.0, "per_degree": {"1": {"d_mae": 1.8, "atoms": 5}, "2": {"d_mae": 1.0, "atoms": 3}}}
    b["runs"]["rebind"] = {"d_mae": 3.0, "per_degree": {"1": {"d_mae": 2.8, "atoms": 5}}}
    c = per_degree_change([a, b, {"runs": {"bond": a["runs"]["bond"]}}], "rebind")
    assert (c[1].mean, c[1].sd, c[1].n) == (pytest.approx(-20.0), pytest.approx(200 ** 0.5), 2)
    assert (c[2].mean, c[2].sd, c[2].n) == (pytest.approx(0.0), 0.0, 1)
    p = paired_change([a, b], "rebind")                  # 1.0 vs 1.0 and 3.0 vs 3.0: no change in either seed
    assert (p.mean, p.sd, p.n) == (0.0, 0.0, 2) and not p.detectable


# ------------------------------------------------------------------------- bad input, one way everywhere

def test_lr_at_rejects_a_negative_step():
    with pytest.raises(ValueError, match="step must be an int >= 0"):  # was: a negative learning rate
        lr_at(-3, lr=1e-3, warmup_steps=5, steps=20, min_lr=1e-4)
    with pytest.raises(ValueError, match="warmup_steps must be <= steps"):
        lr_at(0, lr=1e-3, warmup_steps=30, steps=20, min_lr=1e-4)
    with pytest.raises(TypeError, match="step must be an int"):
        lr_at(True, lr=1e-3, warmup_steps=5, steps=20, min_lr=1e-4)


def test_train_rejects_nan_hyperparameters(nci):
    tr, va, _ = nci
    with pytest.raises(ValueError, match="grad_clip must be a finite number"):  # was: NaN weights, silently
        train("bond", tr, va, grad_clip=math.nan)
    with pytest.raises(ValueError, match="weight_decay must be a finite number"):
        train("bond", tr, va, weight_decay=math.inf)
    with pytest.raises(TypeError, match="lr must be a real number"):  # was: lr=True trained at lr 1
        train("bond", tr, va, lr=True)


def test_per_degree_errors_rejects_empty_input():
    with pytest.raises(ValueError, match="molecules must be a non-empty list"):  # was: {} silently
        per_degree_errors([], [])


def test_metrics_reject_a_mask_with_lists_and_nan_coordinates():
    true = [torch.randn(3, 3)]
    with pytest.raises(ValueError, match="mask is only for a padded"):  # was: the mask silently ignored
        d_mae([t + 0.1 for t in true], true, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"pred\[0\] holds NaN"):  # was: nan returned
        d_rmse([torch.full((3, 3), math.nan)], true)


def test_predict_rejects_a_non_model(nci):
    tr, _, _ = nci
    with pytest.raises(TypeError, match="model must be ConformerModel"):  # was: AttributeError
        predict("model", tr)


def test_numpy_ints_work_like_ints(nci):
    tr, _, _ = nci
    hist = train("bond", tr[:4], tr[4:6], epochs=np.int64(1), batch_size=np.int64(2), show_progress=False)
    assert len(predict(hist.model, tr[:3], batch_size=np.int64(2))) == 3


def test_train_rejects_molecules_too_large_for_d_model_before_training():
    """Was: the small training molecules trained for an epoch, then the larger validation one failed."""
    small, large = molecule_from_smiles("CO"), molecule_from_smiles("CCO")  # 6 and 9 atoms
    with pytest.raises(ValueError, match=r"config.d_model \(8\) must be >= the largest molecule's atom count \(9\)"):
        train(ConformerConfig(d_model=8, n_heads=2), [small], [large], show_progress=False)


def test_cli_numeric_options_are_checked_when_parsed(capsys):
    from companion.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["rebind", "edges", "--seed", "-1"])
    assert "argument --seed: must be an int >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rebind", "compare", "--threads", "1.5"])
    assert "argument --threads: expected an int" in capsys.readouterr().err


def test_train_with_decoder_relations_equals_patching_the_method(nci):
    """The hook does what replacing ConformerModel.decoder_relations for the whole run did, and the model it
    returns keeps using it (evaluation included)."""
    from unittest import mock

    from companion.rebind import ConformerModel, force_edges

    def one_edge_each(model, batch, dist):
        a_attr, a_rep = force_edges(dist.detach(), batch.z, batch.adjacency, batch.mask, k=1)
        return torch.stack([batch.adjacency, a_attr, a_rep], 1)

    tr, va, te = nci
    cfg = ConformerConfig(variant="rebind", d_model=32, d_ff=64, encoder_layers=1, decoder_layers=1)
    kw = dict(epochs=2, batch_size=8, seed=3, show_progress=False, patience=None)
    with mock.patch.object(ConformerModel, "decoder_relations", one_edge_each):
        patched = train(cfg, tr, va, **kw)
        patched_test = evaluate(patched.model, te, with_rmsd=False)
    hooked = train(cfg, tr, va, decoder_relations=one_edge_each, **kw)
    assert hooked.records == patched.records
    assert evaluate(hooked.model, te, with_rmsd=False) == patched_test
    assert hooked.model.relations_fn is one_edge_each
    assert hooked.settings["decoder_relations"].endswith("one_edge_each")
    plain = train(cfg, tr, va, **kw)
    assert "decoder_relations" not in plain.settings and plain.records != hooked.records
    with pytest.raises(TypeError, match="decoder_relations must be None or a callable"):
        train(cfg, tr, va, decoder_relations=3, **kw)
