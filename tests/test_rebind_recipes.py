"""The two training recipes (ours and the official ReBind one) and resumable training."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from companion import rebind as rb
from companion.rebind.model import _NUM_HS


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def _mols() -> tuple:
    return tuple(rb.molecule_from_smiles(s) for s in ("CO", "CCO", "CC(C)=O", "CCN", "OCC=O"))


def _tiny(recipe: str, variant: str = "rebind") -> rb.ConformerConfig:
    return rb.ConformerConfig(variant=variant, d_model=16, n_heads=2, d_ff=16, encoder_layers=1, decoder_layers=1,
                              recipe=recipe)


# ------------------------------------------------------------------------------------------------ features
def test_official_hydrogen_count_is_zero_once_hydrogens_are_atoms():
    mol = rb.molecule_from_smiles("CCO").mol  # C C O H H H H H H
    bonded = rb.atom_features(mol)[:, _NUM_HS]
    official = rb.atom_features(mol, num_hs="official")[:, _NUM_HS]
    assert bonded[:3].tolist() == [3, 2, 1]  # CH3, CH2, OH
    assert official.tolist() == [0] * mol.GetNumAtoms()  # GetTotalNumHs() without neighbours
    # every other column is the same
    keep = [i for i in range(9) if i != _NUM_HS]
    assert torch.equal(rb.atom_features(mol)[:, keep], rb.atom_features(mol, num_hs="official")[:, keep])


def test_official_model_sees_the_official_features():
    """The official model zeroes the stored num_hs column: the same as featurizing with num_hs="official"."""
    torch.manual_seed(0)
    model = rb.ConformerModel(_tiny("official")).eval()
    ms = list(_mols()[:3])
    batch = rb.collate(ms)
    official = rb.collate([rb.Molecule(m.name, m.mol, m.z, m.coords, rb.atom_features(m.mol, num_hs="official"),
                                       m.adjacency, m.pe) for m in ms])
    assert not torch.equal(batch.features, official.features)
    with torch.no_grad():
        assert torch.equal(model(batch).coords, model(official).coords)
    ours = rb.ConformerModel(_tiny("companion")).eval()
    with torch.no_grad():
        assert not torch.equal(ours(batch).coords, ours(official).coords)


# ----------------------------------------------------------------------------------------------- the gate
def test_official_gate_equals_a_hand_computation():
    torch.manual_seed(0)
    model = rb.ConformerModel(_tiny("official"))
    assert model.gate.weight.shape == (1, 16)  # one shared d -> 1 projection
    h_dec, h_enc = torch.randn(1, 2, 16), torch.randn(1, 2, 16)
    w, b = model.gate.weight[0], model.gate.bias[0]
    with torch.no_grad():
        g = model.output_gate(h_dec, h_enc)
        for i in range(2):
            a = (w @ h_dec[0, i] + b) / 4.0  # √16
            c = (w @ h_enc[0, i] + b) / 4.0
            expected = math.exp(a) / (math.exp(a) + math.exp(c))
            assert g[0, i, 0].item() == pytest.approx(expected, rel=1e-5)


def test_companion_gate_is_a_sigmoid_of_both_inputs():
    torch.manual_seed(0)
    model = rb.ConformerModel(_tiny("companion"))
    assert model.gate.weight.shape == (1, 32)
    h_dec, h_enc = torch.randn(1, 2, 16), torch.randn(1, 2, 16)
    with torch.no_grad():
        expected = torch.sigmoid(torch.cat([h_dec, h_enc], -1) @ model.gate.weight[0] + model.gate.bias[0])
        assert torch.allclose(model.output_gate(h_dec, h_enc)[..., 0], expected)


# ------------------------------------------------------------------------------------------- the schedule
def test_official_schedule_is_hugging_face_linear_with_warmup():
    from transformers import get_linear_schedule_with_warmup

    lr, steps = 9e-5, 40
    warmup = math.ceil(0.1 * steps)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = get_linear_schedule_with_warmup(opt, warmup, steps)
    for step in range(steps + 2):
        assert rb.lr_at(step, lr=lr, warmup_steps=warmup, steps=steps, schedule="linear") == pytest.approx(
            opt.param_groups[0]["lr"], abs=1e-15), step
        opt.step()
        sched.step()
    # the numbers themselves: 0 at the first step, the peak at the end of the warm-up, half way, then 0
    assert rb.lr_at(0, lr=lr, warmup_steps=4, steps=40, schedule="linear") == 0.0
    assert rb.lr_at(2, lr=lr, warmup_steps=4, steps=40, schedule="linear") == pytest.approx(4.5e-5)
    assert rb.lr_at(4, lr=lr, warmup_steps=4, steps=40, schedule="linear") == pytest.approx(9e-5)
    assert rb.lr_at(22, lr=lr, warmup_steps=4, steps=40, schedule="linear") == pytest.approx(4.5e-5)
    assert rb.lr_at(40, lr=lr, warmup_steps=4, steps=40, schedule="linear") == 0.0


def test_recipes_hold_the_official_settings():
    off, ours = rb.RECIPES["official"], rb.RECIPES["companion"]
    assert (off.lr, off.weight_decay, off.betas, off.eps, off.schedule, off.min_lr_fraction, off.batch_size,
            off.drop_last) == (9e-5, 0.0, (0.9, 0.99), 1e-8, "linear", 0.0, 100, True)
    assert (ours.lr, ours.weight_decay, ours.betas, ours.schedule, ours.min_lr_fraction, ours.batch_size,
            ours.drop_last) == (1e-3, 0.01, (0.9, 0.999), "cosine", 0.1, 32, False)


def test_train_uses_the_recipe():
    ms = list(_mols())
    off = rb.train(_tiny("official"), ms, ms[:2], epochs=2, batch_size=2, show_progress=False)
    # 5 molecules, batch 2, the last partial batch dropped: 2 steps per epoch; warm-up ceil(0.1 * 4) = 1 step
    assert off.settings["steps"] == 4 and off.settings["warmup_steps"] == 1
    assert off.settings["betas"] == [0.9, 0.99] and off.settings["weight_decay"] == 0.0
    assert off.records[0]["lr"] == pytest.approx(9e-5)  # last step of epoch 0 is step 1: the peak
    assert off.records[1]["lr"] == pytest.approx(9e-5 * 1 / 3)  # step 3 of 4: (4 - 3) / (4 - 1)
    ours = rb.train(_tiny("companion"), ms, ms[:2], epochs=2, batch_size=2, show_progress=False)
    assert ours.settings["steps"] == 6 and ours.settings["lr"] == 1e-3
    with pytest.raises(ValueError, match="no full batch"):
        rb.train(_tiny("official"), ms, ms[:2], epochs=1, batch_size=8, show_progress=False)


# ------------------------------------------------------------------------------------------------- resume
def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    ms = list(_mols())
    kw = dict(epochs=3, batch_size=2, patience=None, seed=3, show_progress=False)
    whole = rb.train(_tiny("official"), ms, ms[:2], **kw)
    ckpt = tmp_path / "run.pt"
    first = rb.train(_tiny("official"), ms, ms[:2], checkpoint=ckpt, stop_after=1, **kw)
    assert not first.complete and len(first.records) == 1 and ckpt.exists()
    rest = rb.train(_tiny("official"), ms, ms[:2], checkpoint=ckpt, **kw)
    assert rest.complete and whole.complete
    assert rest.epochs_run == 2 and whole.epochs_run == 3
    assert rest.records == whole.records and rest.best_epoch == whole.best_epoch
    for (k, a), b in zip(whole.model.state_dict().items(), rest.model.state_dict().values()):
        assert torch.equal(a, b), k
    # a finished checkpoint returns the same model without training again
    again = rb.train(_tiny("official"), ms, ms[:2], checkpoint=ckpt, **kw)
    assert again.records == whole.records and again.complete and again.epochs_run == 0
    # another configuration must not resume from it
    with pytest.raises(ValueError, match="another run"):
        rb.train(_tiny("official"), ms, ms[:2], checkpoint=ckpt, **{**kw, "seed": 4})
    with pytest.raises(ValueError, match="stop_after needs a checkpoint"):
        rb.train(_tiny("official"), ms, ms[:2], stop_after=1, **kw)


def test_converged_run_resumes_to_the_same_result(tmp_path):
    from companion.rebind import experiments as ex

    ms = list(_mols())
    data = {"source": "smiles", "train": ms, "valid": ms[:2], "test": ms[3:]}
    kw = dict(config=_tiny("official"), variants=("bond", "rebind"), seed=1, epochs=2, patience=3, batch_size=2)
    whole = ex.converged_run(data, checkpoint_dir=tmp_path / "a", **kw)
    assert whole["complete"] and all(r["complete"] for r in whole["runs"].values())
    seen = []
    part = ex.converged_run(data, checkpoint_dir=tmp_path / "b", stop_after=1, on_epoch=seen.append, **kw)
    assert not part["complete"] and not part["runs"]["bond"]["complete"] and "rebind" not in part["runs"]
    assert len(seen) == 1 and len(part["runs"]["bond"]["history"]["records"]) == 1
    rest = ex.converged_run(data, checkpoint_dir=tmp_path / "b", **kw)
    assert rest["complete"]
    for v in ("bond", "rebind"):
        a, b = whole["runs"][v], rest["runs"][v]
        assert a["history"]["records"] == b["history"]["records"]
        assert len(b["history"]["epoch_seconds"]) == len(b["history"]["records"])  # kept across the resume
        for key in ("d_mae", "d_rmse", "c_rmsd", "d_mae_intermediate"):
            assert a[key] == b[key], (v, key)
        assert a["per_degree"] == b["per_degree"]
