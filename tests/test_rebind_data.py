"""ReBind's data: featurization, the Laplacian encoding, padded batches, the cache, both sources, bad input."""

import ast
import math
import warnings

import pytest
import torch

from companion.rebind import (
    ATOM_FEATURES,
    Molecule,
    atom_features,
    collate,
    laplacian_pe,
    load_nci,
    load_qm9,
    molecule_from_mol,
    molecule_from_smiles,
    molecule_from_xyz,
    nci_smiles,
    qm9_available,
    split_molecules,
    xyz_block,
)
from companion.rebind.data import cached_molecules

pytestmark = pytest.mark.usefixtures("one_thread")

WATER_XYZ = """3
water
O 0.000000 0.000000 0.117300
H 0.000000 0.757200 -0.469200
H 0.000000 -0.757200 -0.469200
"""


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    return tmp_path


def test_atom_features_of_ethanol():
    mol = molecule_from_smiles("CCO")
    assert mol.n_atoms == 9 and mol.features.shape == (9, 9)
    assert [name for name, _ in ATOM_FEATURES][0] == "atomic_num" and len(ATOM_FEATURES) == 9
    f = mol.features
    assert f[:, 0].tolist()[:3] == [6, 6, 8]  # atomic numbers
    assert f[:3, 2].tolist() == [4, 4, 2]  # degree with explicit hydrogens
    assert f[:3, 4].tolist() == [3, 2, 1]  # hydrogens on each heavy atom
    assert f[:3, 6].tolist() == [3, 3, 3]  # SP3
    assert (f[:, 7] == 0).all() and (f[:, 8] == 0).all()  # not aromatic, not in a ring
    for col, (_, size) in enumerate(ATOM_FEATURES):
        assert (f[:, col] < size).all()


def test_aromatic_ring_flags():
    f = atom_features(molecule_from_smiles("c1ccccc1").mol)
    assert f[:6, 7].tolist() == [1] * 6 and f[:6, 8].tolist() == [1] * 6 and f[6:, 8].sum() == 0


def test_laplacian_encoding_holds_eigenvectors_of_the_normalized_laplacian():
    mol = molecule_from_smiles("CC(=O)N")
    a = mol.adjacency.double()
    deg = a.sum(-1)
    lap = torch.eye(len(a), dtype=torch.float64) - a / torch.sqrt(deg[:, None] * deg[None, :])
    u = mol.pe.double()
    assert torch.allclose(u.T @ u, torch.eye(len(a), dtype=torch.float64), atol=1e-5)  # orthonormal
    lam = torch.diagonal(u.T @ lap @ u)
    assert torch.allclose(lap @ u, u * lam, atol=1e-5)  # L U = U Λ
    assert (lam[1:] >= lam[:-1] - 1e-5).all() and lam[0].abs() < 1e-6  # ascending, smallest 0
    first = u[:, 0] * torch.sign(u[0, 0])
    assert torch.allclose(first, torch.sqrt(deg) / torch.sqrt(deg).norm(), atol=1e-5)  # ∝ D^{1/2} 1


def test_laplacian_encoding_is_deterministic():
    a = molecule_from_smiles("OC1CCOC1").adjacency
    assert torch.equal(laplacian_pe(a), laplacian_pe(a.clone()))


def test_xyz_molecule_keeps_the_xyz_atom_order_and_coordinates():
    mol = molecule_from_xyz(WATER_XYZ, name="water")
    assert mol.z.tolist() == [8, 1, 1]
    assert mol.adjacency.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert torch.allclose(mol.coords[1], torch.tensor([0.0, 0.7572, -0.4692]))
    assert xyz_block(["O", "H", "H"], mol.coords.tolist()).splitlines()[0] == "3"


def test_collate_pads_and_masks():
    mols = [molecule_from_smiles("O"), molecule_from_smiles("CCO")]  # 3 and 9 atoms
    b = collate(mols)
    assert b.z.shape == (2, 9) and b.features.shape == (2, 9, 9) and b.pe.shape == (2, 9, 9)
    assert b.mask.sum(-1).tolist() == [3, 9] and b.n_atoms.tolist() == [3, 9]
    assert (b.z[0, 3:] == 0).all() and (b.adjacency[0, 3:] == 0).all() and (b.pe[0, :, 3:] == 0).all()
    assert torch.equal(b.coords[1], mols[1].coords) and torch.equal(b.pe[0, :3, :3], mols[0].pe)
    assert len(b) == 2 and b.molecules == mols


def test_cache_is_used_then_rebuilt_when_corrupt_or_stale(tmp_cache):
    calls = []

    def build():
        calls.append(1)
        return [molecule_from_smiles("CO")]

    key = {"source": "test", "n": 1}
    first = cached_molecules("unit", key, build)
    again = cached_molecules("unit", key, build)
    assert len(calls) == 1 and torch.equal(again[0].coords, first[0].coords) and again[0].mol.GetNumAtoms() == 6
    (path,) = (tmp_cache / "rebind").glob("unit-*.pt")
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = cached_molecules("unit", key, build)
    assert len(calls) == 2 and torch.equal(rebuilt[0].coords, first[0].coords)
    blob = torch.load(path, weights_only=True)
    blob["format"] = -1  # written by an older version
    torch.save(blob, path)
    with pytest.warns(UserWarning, match="stale"):
        cached_molecules("unit", key, build)
    assert len(calls) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_molecules("unit", key, build)  # healthy again: no warning, no rebuild
    assert len(calls) == 3


def test_nci_set_is_qm9_like_and_cached(tmp_cache):
    smiles = nci_smiles()
    assert len(smiles) == 419
    mols = load_nci(6)
    assert len(mols) == 6 and all(isinstance(m, Molecule) for m in mols)
    for m in mols:
        heavy = m.z[m.z > 1]
        assert 2 <= heavy.numel() <= 9 and set(heavy.tolist()) <= {6, 7, 8, 9}
    assert list((tmp_cache / "rebind").glob("nci-*.pt"))
    again = load_nci(6)
    assert [m.name for m in again] == [m.name for m in mols]
    assert all(torch.equal(a.coords, b.coords) for a, b in zip(again, mols))


def test_split_is_seeded_and_disjoint():
    mols = [molecule_from_smiles(s) for s in ["C", "CC", "CO", "CN", "CF", "CCC", "CCO", "OCO", "NCN", "FCF"]]
    a = split_molecules(mols, seed=3)
    b = split_molecules(mols, seed=3)
    assert [[m.name for m in part] for part in a] == [[m.name for m in part] for part in b]
    assert sorted(m.name for part in a for m in part) == sorted(m.name for m in mols)
    assert [len(p) for p in a] == [8, 1, 1]


def test_qm9_molecules_have_dft_geometries(tmp_cache):
    if not qm9_available():
        pytest.skip("qm9pack is not installed (optional extra)")
    mols = load_qm9("test", max_molecules=5)
    assert len(mols) == 5
    for m in mols:
        assert m.name.startswith("qm9_") and m.n_atoms <= 29
        assert (m.z > 0).all() and set(m.z.tolist()) <= {1, 6, 7, 8, 9}
        bonded = torch.cdist(m.coords, m.coords)[m.adjacency > 0]
        assert bonded.min() > 0.9 and bonded.max() < 1.8  # DFT bond lengths, Å
    assert [m.name for m in load_qm9("test", max_molecules=5)] == [m.name for m in mols]
    from companion.rebind.data import _split_of

    assert all(_split_of(int(m.name[4:]), 0, (0.8, 0.1, 0.1))[0] == "test" for m in mols)
    shares = [_split_of(i, 0, (0.8, 0.1, 0.1))[0] for i in range(1, 5001)]
    assert shares.count("train") / 5000 == pytest.approx(0.8, abs=0.03)


def test_qm9_without_the_package_says_how_to_install(monkeypatch):
    import companion.rebind.data as data

    monkeypatch.setattr(data, "qm9_folder", lambda: None)
    with pytest.raises(ModuleNotFoundError, match="pip install qm9pack"):
        data.load_qm9("test")


# ------------------------------------------------------------------------------------------------ bad input

def test_unparseable_smiles_and_xyz():
    with pytest.raises(ValueError, match="could not parse SMILES 'C1CC'"):
        molecule_from_smiles("C1CC")
    with pytest.raises(ValueError, match="could not parse the XYZ block"):
        molecule_from_xyz("two\nwater\nO 0 0 0\n")
    with pytest.raises(TypeError, match="smiles must be a string"):
        molecule_from_smiles(42)


def test_elements_outside_the_table_are_named():
    with pytest.raises(ValueError, match="element S has no Lennard-Jones parameters"):
        molecule_from_smiles("CCS")
    with pytest.raises(ValueError, match="element Cl"):
        molecule_from_xyz("2\n\nH 0 0 0\nCl 0 0 1.27\n")


def test_single_atom_and_disconnected_molecules():
    with pytest.raises(ValueError, match="single atom"):
        molecule_from_smiles("[C]")
    with pytest.raises(ValueError, match="disconnected"):
        molecule_from_smiles("C.O")
    with pytest.raises(ValueError, match="disconnected"):
        molecule_from_xyz("6\n\nO 0 0 0\nH 0 0.76 0.59\nH 0 -0.76 0.59\nO 5 0 0\nH 5 0.76 0.59\nH 5 -0.76 0.59\n")
    with pytest.raises(ValueError, match="at least 2 atoms"):
        molecule_from_xyz("1\n\nH 0 0 0\n")


def test_missing_hydrogens():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles("CCO")
    AllChem.Compute2DCoords(mol)
    with pytest.raises(ValueError, match="implicit hydrogen.*explicit"):
        molecule_from_mol(mol)
    with pytest.raises(TypeError, match="rdkit.Chem.Mol"):
        molecule_from_mol("CCO")


def test_collate_rejects_bad_batches():
    good = molecule_from_smiles("CO")
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(TypeError, match=r"mols\[1\] must be a Molecule"):
        collate([good, "CO"])
    broken = Molecule(name="broken", mol=good.mol, z=good.z, coords=good.coords[:-1], features=good.features,
                      adjacency=good.adjacency, pe=good.pe)
    with pytest.raises(ValueError, match=r"coords of shape \[5, 3\], expected \[6, 3\]"):
        collate([good, broken])


def test_loader_arguments_are_checked():
    with pytest.raises(ValueError, match="split must be"):
        load_qm9("validation")
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        load_nci(0)


def test_strained_qm9_cage_needs_the_hueckel_fallback():
    from companion.rebind.data import qm9_molecule, qm9_rows

    if not qm9_available():
        pytest.skip("qm9pack is not installed (optional extra)")
    row = next(iter(qm9_rows(keep=lambda index: index == 700)))  # O1C2C3OC2C13: the vdW rule adds a bond
    with pytest.raises(ValueError, match="could not determine the bonds"):
        molecule_from_xyz(xyz_block(ast.literal_eval(row["Elements"]), ast.literal_eval(row["XYZ_Ang"])),
                          hueckel_fallback=False)
    mol = qm9_molecule(row)
    from rdkit import Chem

    flat = lambda smi: Chem.MolToSmiles(Chem.MolFromSmiles(smi), isomericSmiles=False)  # noqa: E731
    assert flat(mol.smiles) == flat(row["SMILES"])  # the same graph as QM9's SMILES (stereo aside)


# ------------------------------------------------------------------------- bad input, one way everywhere

def test_molecule_from_xyz_rejects_a_float_charge():
    with pytest.raises(TypeError, match="charge must be an int"):  # was: an RDKit argument error as "bonds"
        molecule_from_xyz(WATER_XYZ, charge=0.5)


def test_embed_conformer_rejects_float_and_negative_seeds():
    from rdkit import Chem

    from companion.rebind import embed_conformer

    mol = Chem.AddHs(Chem.MolFromSmiles("CO"))
    with pytest.raises(TypeError, match="seed must be an int"):  # was: seed 1.5 used as 1
        embed_conformer(mol, seed=1.5)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):  # was: an RDKit invariant violation
        embed_conformer(mol, seed=-5)
    with pytest.raises(ValueError, match="seed must be an int >= 0 and <= 2147483647"):  # was: OverflowError
        embed_conformer(mol, seed=2**31)
    assert mol.GetNumConformers() == 0  # nothing changed


def test_split_molecules_rejects_empty_and_non_molecules():
    with pytest.raises(ValueError, match="mols must be a non-empty list"):  # was: three empty lists
        split_molecules([])
    with pytest.raises(TypeError, match=r"mols\[0\] must be a Molecule"):
        split_molecules(["CO"])
    with pytest.raises(ValueError, match=r"fractions\[0\] must be a finite number"):
        split_molecules([molecule_from_smiles("CO")], (math.nan, 0.5, 0.5))


def test_seeds_have_one_range_in_the_chapter():
    """load_qm9 took seed=-1 while train (through seed_everything) refused it; now both refuse it."""
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        load_qm9("test", max_molecules=2, seed=-1)
    with pytest.raises(TypeError, match="max_molecules must be an int"):
        load_qm9("test", max_molecules=True)


def test_rdkit_functions_reject_non_molecules():
    from companion.rebind import bond_adjacency

    with pytest.raises(TypeError, match="mol must be an rdkit.Chem.Mol"):  # was: AttributeError
        atom_features("CCO")
    with pytest.raises(TypeError, match="mol must be an rdkit.Chem.Mol"):
        bond_adjacency(None)


def test_xyz_block_checks_symbols_coordinates_and_comment():
    with pytest.raises(ValueError, match="coords must hold finite numbers"):
        xyz_block(["H", "H"], [[0, 0, 0], [0, 0, math.nan]])
    with pytest.raises(TypeError, match="coords must hold real numbers"):  # was: a format-string ValueError
        xyz_block(["H", "H"], [["0", "0", "0"], ["0", "0", "1"]])
    with pytest.raises(ValueError, match="comment must be a single line"):  # was: a broken XYZ block
        xyz_block(["H", "H"], [[0, 0, 0], [0, 0, 0.74]], "two\nlines")
    with pytest.raises(TypeError, match=r"symbols\[1\] must be an element symbol"):
        xyz_block(["H", 1], [[0, 0, 0], [0, 0, 0.74]])
