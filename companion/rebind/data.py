"""Molecules for ReBind: QM9 with DFT geometries, a small RDKit-generated set, featurization and padded batches.

Two sources:

- :func:`load_qm9` — the full QM9 (130,831 molecules, B3LYP/6-31G(2df,p) ground-state geometries) from the PyPI
  package ``qm9pack`` (an optional extra, offline once installed). Its CSV files are read directly (the package's
  own ``__init__`` imports ``pkg_resources``). QM9's SMILES list the atoms in a different order than its XYZ
  coordinates, so molecules are built from the XYZ block and their bonds perceived with RDKit's
  ``rdDetermineBonds.DetermineBonds`` (charge 0; extended-Hückel connectivity for the ~6% where the default
  van der Waals rule fails). The perceived graphs match QM9's own SMILES column for ~93% of molecules.
- :func:`load_nci` — a self-made stand-in that needs nothing but RDKit: the NCI SMILES shipped in RDKit's wheel
  (``RDConfig.RDDataDir/NCI/first_5K.smi``) filtered to QM9-like molecules (≤ 9 heavy atoms, only C, N, O, F,
  neutral, one fragment), with ETKDG + MMFF94 conformations as the "ground states". Good for tests and for
  readers without ``qm9pack``; the numbers are not comparable with the paper's.

Each molecule becomes a :class:`Molecule`: hydrogens explicit, the 9 categorical atom features of the official
code (atomic number, chirality, degree, formal charge, number of H, radical electrons, hybridization, aromatic,
in ring), the bond adjacency and the Laplacian eigenvector encoding. :func:`collate` pads a list into a
:class:`Batch`. Processed sets are cached (``companion.lab.cache_dir("rebind")``); a corrupt or stale cache
file is rebuilt with a warning.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Sequence as _SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from companion.lab.checks import check_choice, check_float, check_int, check_type, describe

from .forces import check_elements, check_square

#: bump when the processed format changes: older cache files are then rebuilt
CACHE_FORMAT = 1
#: elements a QM9-like molecule may contain (besides H)
QM9_HEAVY_ELEMENTS = ("C", "N", "O", "F")

_CHIRALITY = ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER")
_HYBRIDIZATION = ("S", "SP", "SP2", "SP3", "SP3D", "SP3D2")
#: the 9 categorical atom features and the number of classes of each (the last class of each = "other")
ATOM_FEATURES: tuple[tuple[str, int], ...] = (
    ("atomic_num", 120),
    ("chirality", len(_CHIRALITY) + 1),
    ("degree", 12),
    ("formal_charge", 12),  # -5..+5, other
    ("num_hs", 10),
    ("num_radical_electrons", 6),
    ("hybridization", len(_HYBRIDIZATION) + 1),
    ("is_aromatic", 2),
    ("is_in_ring", 2),
)


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:  # pragma: no cover - rdkit is a dependency of the chapter
        raise ImportError("companion.rebind needs RDKit: pip install rdkit") from err
    RDLogger.DisableLog("rdApp.*")
    return Chem


def _check_mol(name: str, mol) -> Any:
    """``mol`` if it is an RDKit ``Mol`` (``TypeError`` naming ``name`` otherwise)."""
    Chem = _rdkit()
    return check_type(name, mol, Chem.Mol, what="an rdkit.Chem.Mol")


#: the largest seed RDKit's embedding accepts (a C ``int``)
RDKIT_MAX_SEED = 2**31 - 1
#: the largest seed of the random splits (the range :func:`companion.lab.seed_everything` accepts)
MAX_SEED = 2**32 - 1


def _check_fractions(fractions) -> tuple[float, float, float]:
    """Three finite numbers in [0, 1] summing to 1 (train, validation, test), as floats."""
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, _SequenceABC):
        raise TypeError(f"fractions must be three numbers (train, valid, test), got {describe(fractions)}")
    if len(fractions) != 3:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    values = tuple(check_float(f"fractions[{i}]", f, low=0.0, high=1.0) for i, f in enumerate(fractions))
    if abs(sum(values) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    return values


def check_molecules(name: str, mols, *, allow_one: bool = False) -> list:
    """``mols`` if it is a non-empty list or tuple of :class:`Molecule` (``TypeError``/``ValueError`` naming
    ``name`` and, for a bad item, its index); with ``allow_one`` a single molecule becomes a list of one."""
    if allow_one and isinstance(mols, Molecule):
        return [mols]
    if not isinstance(mols, (list, tuple)):
        raise TypeError(f"{name} must be a non-empty list of Molecule, got {describe(mols)}")
    if not mols:
        raise ValueError(f"{name} must be a non-empty list of Molecule, got an empty {type(mols).__name__}")
    for i, m in enumerate(mols):
        if not isinstance(m, Molecule):
            raise TypeError(f"{name}[{i}] must be a Molecule, got {describe(m)}")
    return mols


def _index(value: int, size: int, offset: int = 0) -> int:
    i = int(value) + offset
    return i if 0 <= i < size - 1 else size - 1


#: how the ``num_hs`` feature counts hydrogens: ``"bonded"`` (ours: ``GetTotalNumHs(includeNeighbors=True)``, the
#: hydrogens bonded to the atom, explicit graph atoms included) or ``"official"`` (``GetTotalNumHs()``, as the
#: official ``data/utils.py``, ``atom_to_feature_vector``, line 58: implicit and explicit-count hydrogens only, so
#: 0 for every atom once hydrogens are graph atoms, as in every :class:`Molecule`)
NUM_HS_MODES = ("bonded", "official")


def atom_features(mol, *, num_hs: str = "bonded") -> torch.Tensor:
    """The 9 categorical features of every atom, ``[N, 9]`` (long), in the order of :data:`ATOM_FEATURES`.

    ``num_hs`` (column 4) is ``"bonded"`` (default: hydrogens bonded to the atom, explicit graph atoms included)
    or ``"official"`` (RDKit's ``GetTotalNumHs()`` without neighbours, as the official ReBind featurizer: 0 for
    every atom of a molecule whose hydrogens are explicit atoms), see :data:`NUM_HS_MODES`. ``TypeError`` for a
    ``mol`` that is not an RDKit ``Mol``, ``ValueError`` for another ``num_hs``.
    """
    _check_mol("mol", mol)
    check_choice("num_hs", num_hs, NUM_HS_MODES)
    include_neighbors = num_hs == "bonded"
    rows = []
    for a in mol.GetAtoms():
        rows.append([
            _index(a.GetAtomicNum(), 120),
            _CHIRALITY.index(str(a.GetChiralTag())) if str(a.GetChiralTag()) in _CHIRALITY else len(_CHIRALITY),
            _index(a.GetDegree(), 12),
            _index(a.GetFormalCharge(), 12, offset=5),
            _index(a.GetTotalNumHs(includeNeighbors=include_neighbors), 10),
            _index(a.GetNumRadicalElectrons(), 6),
            _HYBRIDIZATION.index(str(a.GetHybridization())) if str(a.GetHybridization()) in _HYBRIDIZATION
            else len(_HYBRIDIZATION),
            int(a.GetIsAromatic()),
            int(a.IsInRing()),
        ])
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 9)


def bond_adjacency(mol) -> torch.Tensor:
    """Symmetric 0/1 bond adjacency ``A_bond``, ``[N, N]`` (float32, zero diagonal)."""
    _check_mol("mol", mol)
    n = mol.GetNumAtoms()
    a = torch.zeros(n, n)
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        a[i, j] = a[j, i] = 1.0
    return a


def laplacian_pe(adj: torch.Tensor) -> torch.Tensor:
    """Laplacian eigenvector encoding, ``[N, N]``: row ``i`` is atom ``i``'s entry in every eigenvector of the
    symmetric normalized Laplacian ``L = I − D^{-1/2} A D^{-1/2}``, columns ordered by increasing eigenvalue.

    ``L U = U Λ`` with ``U`` orthonormal (``torch.linalg.eigh``, computed in float64). The signs of eigenvectors
    are arbitrary; they are fixed here by making each column's largest-magnitude entry positive, so the
    encoding is deterministic. The model adds row ``i`` into the first ``N`` channels of atom ``i``'s embedding.
    """
    check_square("adj", adj, ndim=(2,))
    a = (adj != 0).double()
    deg = a.sum(-1)
    if (deg == 0).any() and a.shape[0] > 1:
        raise ValueError(f"adj: atom {int((deg == 0).nonzero()[0])} has no bonds: the molecule is disconnected")
    inv_sqrt = deg.clamp_min(1).rsqrt()
    lap = torch.eye(a.shape[0], dtype=torch.float64) - inv_sqrt[:, None] * a * inv_sqrt[None, :]
    _, vecs = torch.linalg.eigh(lap)
    peak = vecs.abs().argmax(0)
    sign = torch.sign(vecs[peak, torch.arange(vecs.shape[1])])
    sign[sign == 0] = 1
    return (vecs * sign).float()


@dataclass
class Molecule:
    """One molecule with explicit hydrogens and its reference ("ground-state") conformation.

    Attributes:
        name: an identifier (QM9 index, or the NCI SMILES).
        mol: the RDKit molecule (hydrogens explicit, one conformer holding ``coords``).
        z: ``[N]`` atomic numbers.
        coords: ``[N, 3]`` reference coordinates (Å).
        features: ``[N, 9]`` categorical atom features (:func:`atom_features`).
        adjacency: ``[N, N]`` bond adjacency (:func:`bond_adjacency`).
        pe: ``[N, N]`` Laplacian eigenvector encoding (:func:`laplacian_pe`).
    """

    name: str
    mol: Any = field(repr=False)
    z: torch.Tensor = field(repr=False)
    coords: torch.Tensor = field(repr=False)
    features: torch.Tensor = field(repr=False)
    adjacency: torch.Tensor = field(repr=False)
    pe: torch.Tensor = field(repr=False)

    @property
    def n_atoms(self) -> int:
        return int(self.z.numel())

    @property
    def degree(self) -> torch.Tensor:
        """``[N]`` bond degree of each atom."""
        return self.adjacency.sum(-1).long()

    @property
    def smiles(self) -> str:
        Chem = _rdkit()
        return Chem.MolToSmiles(Chem.RemoveHs(self.mol))

    def to_record(self) -> dict[str, Any]:
        Chem = _rdkit()
        return {"name": self.name, "molblock": Chem.MolToMolBlock(self.mol), "z": self.z, "coords": self.coords,
                "features": self.features, "adjacency": self.adjacency, "pe": self.pe}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Molecule":
        Chem = _rdkit()
        mol = Chem.MolFromMolBlock(rec["molblock"], removeHs=False, sanitize=True)
        if mol is None:
            raise ValueError(f"cached molecule {rec.get('name')!r} has an unreadable mol block")
        return cls(name=rec["name"], mol=mol, z=rec["z"], coords=rec["coords"], features=rec["features"],
                   adjacency=rec["adjacency"], pe=rec["pe"])


def molecule_from_mol(mol, *, name: str = "") -> Molecule:
    """Featurize an RDKit molecule that has explicit hydrogens and a conformer (a copy is kept, its stereo tags
    assigned from the 3D coordinates).

    Raises:
        TypeError: ``mol`` is not an RDKit ``Mol``.
        ValueError: no conformer; fewer than 2 atoms; hydrogens missing (implicit only); more than one fragment;
            an element outside H, C, N, O, F (named in the message).
    """
    Chem = _rdkit()
    _check_mol("mol", mol)
    check_type("name", name, str)
    label = f" {name!r}" if name else ""
    n = mol.GetNumAtoms()
    if n < 2:
        raise ValueError(f"molecule{label} has {n} atom(s): a conformation needs at least 2 atoms")
    implicit = sum(a.GetNumImplicitHs() + a.GetNumExplicitHs() for a in mol.GetAtoms())
    if implicit:
        raise ValueError(f"molecule{label} has {implicit} implicit hydrogen(s): hydrogens must be explicit atoms "
                         "(use Chem.AddHs, or build from an XYZ block)")
    z = torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=torch.long)
    try:
        check_elements(z)
    except ValueError as err:
        raise ValueError(f"molecule{label}: {err}") from None
    frags = len(Chem.GetMolFrags(mol))
    if frags != 1:
        raise ValueError(f"molecule{label} has {frags} disconnected fragments: expected one connected molecule")
    if mol.GetNumConformers() == 0:
        raise ValueError(f"molecule{label} has no conformer: expected 3D coordinates")
    mol = Chem.Mol(mol)
    Chem.AssignStereochemistryFrom3D(mol)  # the graph's stereo tags follow the reference geometry
    coords = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float32)
    adj = bond_adjacency(mol)
    return Molecule(name=name, mol=mol, z=z, coords=coords, features=atom_features(mol), adjacency=adj,
                    pe=laplacian_pe(adj))


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level writes to file descriptor 2 (RDKit's bundled YAeHMO writes there directly)."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def molecule_from_xyz(xyz: str, *, name: str = "", charge: int = 0, hueckel_fallback: bool = True) -> Molecule:
    """A molecule from an XYZ block, bonds perceived by ``rdDetermineBonds.DetermineBonds`` (total ``charge``).

    The default connectivity (van der Waals radii) fails on ~6% of QM9, mostly strained cages where it adds a
    bond; ``hueckel_fallback`` then retries with extended-Hückel connectivity (``useHueckel=True``, ~8x slower),
    which perceives all of them. Raises ``ValueError`` for a block RDKit cannot read or whose bonds cannot be
    determined.
    """
    Chem = _rdkit()
    from rdkit.Chem import rdDetermineBonds

    check_type("xyz", xyz, str, what="a string (an XYZ block)")
    check_type("name", name, str)
    charge = check_int("charge", charge)
    check_type("hueckel_fallback", hueckel_fallback, bool)
    raw = Chem.MolFromXYZBlock(xyz)
    if raw is None or raw.GetNumAtoms() == 0:
        raise ValueError(f"could not parse the XYZ block{f' of {name!r}' if name else ''}: xyz must have a first "
                         "line with the atom count, a comment line, then 'Element x y z' lines")
    check_elements(torch.tensor([a.GetAtomicNum() for a in raw.GetAtoms()]))
    if raw.GetNumAtoms() < 2:
        raise ValueError(f"molecule {name!r} has 1 atom: a conformation needs at least 2 atoms")
    attempts = [{}, {"useHueckel": True}] if hueckel_fallback else [{}]
    for i, kwargs in enumerate(attempts):
        mol = Chem.Mol(raw)
        try:
            with _quiet_stderr():  # YAeHMO prints a warning for every O–H bond below 0.97 Å
                rdDetermineBonds.DetermineBonds(mol, charge=charge, **kwargs)
            break
        except Exception as err:  # RDKit raises ValueError or RuntimeError
            if i == len(attempts) - 1:
                raise ValueError(f"could not determine the bonds of {name or 'the XYZ molecule'}: {err}") from None
    return molecule_from_mol(mol, name=name)


def xyz_block(symbols: Sequence[str], coords: Sequence[Sequence[float]], comment: str = "") -> str:
    """An XYZ block from element symbols and ``[N, 3]`` coordinates (Å, finite numbers: a list of rows, an
    array or a tensor); ``comment`` is the block's one-line second line."""
    if isinstance(symbols, str) or not isinstance(symbols, _SequenceABC):
        raise TypeError(f"symbols must be a list of element symbols, got {describe(symbols)}")
    if not symbols:
        raise ValueError("symbols must not be empty: a molecule needs atoms")
    for i, sym in enumerate(symbols):
        if not isinstance(sym, str):
            raise TypeError(f"symbols[{i}] must be an element symbol (a str), got {describe(sym)}")
        if not sym or sym.split() != [sym]:
            raise ValueError(f"symbols[{i}] must be an element symbol without spaces, got {sym!r}")
    if isinstance(coords, (str, bytes)) or not isinstance(coords, (_SequenceABC, np.ndarray, torch.Tensor)):
        raise TypeError(f"coords must be [N, 3] coordinates (rows of numbers, an array or a tensor), got "
                        f"{describe(coords)}")
    try:
        array = np.asarray(coords.detach().cpu() if isinstance(coords, torch.Tensor) else coords)
    except (TypeError, ValueError):
        raise ValueError(f"coords must be [N, 3] coordinates, got rows of different lengths: {describe(coords)}") \
            from None
    if array.dtype.kind not in "iuf":
        raise TypeError(f"coords must hold real numbers, got dtype {array.dtype} in {describe(coords)}")
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"coords must be [N, 3] coordinates, got shape {list(array.shape)}")
    if len(symbols) != len(array):
        raise ValueError(f"coords must have one row per symbol: got {len(symbols)} symbols but {len(array)} "
                         "coordinate rows")
    if not np.isfinite(array).all():
        raise ValueError("coords must hold finite numbers, got NaN or inf")
    check_type("comment", comment, str)
    if "\n" in comment or "\r" in comment:
        raise ValueError(f"comment must be a single line (it is the XYZ block's second line), got {comment!r}")
    lines = [str(len(symbols)), comment]
    lines += [f"{s} {x:.10f} {y:.10f} {z:.10f}" for s, (x, y, z) in zip(symbols, coords)]
    return "\n".join(lines) + "\n"


def embed_conformer(mol, *, mmff: bool = True, seed: int = 0, max_iters: int = 2000) -> bool:
    """Give ``mol`` (hydrogens explicit) one ETKDGv3 conformer, then optimize it with MMFF94 if ``mmff``.

    When ETKDG fails (~7% of QM9, strained polycycles), it retries from random coordinates, then once more
    without enforcing the tetrahedral stereo tags (the conformer may then have a wrong stereocentre, which
    C-RMSD will show). Returns False when all three attempts fail.
    """
    from rdkit.Chem import AllChem

    _check_mol("mol", mol)
    check_type("mmff", mmff, bool)
    seed = check_int("seed", seed, low=0, high=RDKIT_MAX_SEED)
    max_iters = check_int("max_iters", max_iters, low=1, high=2**31 - 1)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    mol.RemoveAllConformers()
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            params.enforceChirality = False
            if AllChem.EmbedMolecule(mol, params) != 0:
                return False
    if mmff and AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=max_iters)
    return True


def molecule_from_smiles(smiles: str, *, mmff: bool = True, seed: int = 0, name: str | None = None) -> Molecule:
    """A molecule from SMILES, hydrogens added, with an ETKDG (+ MMFF94) conformation as its reference.

    Raises ``ValueError`` for SMILES RDKit cannot parse or a molecule it cannot embed.
    """
    Chem = _rdkit()
    check_type("smiles", smiles, str, what="a string")
    check_type("mmff", mmff, bool)
    seed = check_int("seed", seed, low=0, high=RDKIT_MAX_SEED)
    if name is not None:
        check_type("name", name, str, what="a str or None")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise ValueError(f"could not parse SMILES {smiles!r}: smiles must be a valid SMILES string")
    if len(Chem.GetMolFrags(mol)) != 1:
        raise ValueError(f"smiles {smiles!r} has {len(Chem.GetMolFrags(mol))} disconnected fragments: expected one "
                         "connected molecule")
    mol = Chem.AddHs(mol)
    if mol.GetNumAtoms() < 2:
        raise ValueError(f"smiles {smiles!r} has a single atom: a conformation needs at least 2 atoms")
    z = torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()])
    try:
        check_elements(z)
    except ValueError as err:
        raise ValueError(f"smiles {smiles!r}: {err}") from None
    if not embed_conformer(mol, mmff=mmff, seed=seed):
        raise ValueError(f"RDKit could not embed a conformation for {smiles!r}")
    return molecule_from_mol(mol, name=smiles if name is None else name)


# ----------------------------------------------------------------------------------------------- the NCI set

def nci_path() -> Path:
    """Path of ``first_5K.smi`` in RDKit's data folder."""
    from rdkit import RDConfig

    return Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def is_qm9_like(mol, *, max_heavy_atoms: int = 9) -> bool:
    """≤ ``max_heavy_atoms`` heavy atoms, all of them C/N/O/F, no formal charges, one fragment."""
    Chem = _rdkit()
    heavy = [a for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    return (0 < len(heavy) <= max_heavy_atoms and all(a.GetSymbol() in QM9_HEAVY_ELEMENTS for a in heavy)
            and all(a.GetFormalCharge() == 0 and a.GetNumRadicalElectrons() == 0 for a in mol.GetAtoms())
            and len(Chem.GetMolFrags(mol)) == 1 and len(heavy) >= 2)


def nci_smiles(*, max_heavy_atoms: int = 9) -> list[str]:
    """QM9-like SMILES from RDKit's NCI file, in file order (419 at the default 9 heavy atoms)."""
    Chem = _rdkit()
    max_heavy_atoms = check_int("max_heavy_atoms", max_heavy_atoms, low=2)
    out = []
    for line in nci_path().read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        mol = Chem.MolFromSmiles(parts[0])
        if mol is not None and is_qm9_like(mol, max_heavy_atoms=max_heavy_atoms):
            out.append(parts[0])
    return out


# ----------------------------------------------------------------------------------------------------- cache

def _cache_file(kind: str, key: dict[str, Any]) -> Path:
    from companion.lab.cache import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("rebind") / f"{kind}-{digest}.pt"


def cached_molecules(kind: str, key: dict[str, Any], build: Callable[[], list[Molecule]], *,
                     cache: bool = True) -> list[Molecule]:
    """``build()``'s molecules, stored as processed tensors under ``cache_dir("rebind")`` keyed by ``key``.

    A cache file that cannot be read, has another format version or another key (stale) is rebuilt with a
    warning, never fatal.
    """
    if not cache:
        return build()
    from companion.lab.cache import atomic_write

    path = _cache_file(kind, key)
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT or blob.get("key") != key:
                raise ValueError("stale cache (format or key differs)")
            return [Molecule.from_record(r) for r in blob["records"]]
        except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt
            warnings.warn(f"rebuilding the molecule cache {path.name}: {err}", stacklevel=2)
    mols = build()
    blob = {"format": CACHE_FORMAT, "key": key, "records": [m.to_record() for m in mols]}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))
    return mols


def load_nci(n: int | None = None, *, mmff: bool = True, seed: int = 0, max_heavy_atoms: int = 9,
             cache: bool = True) -> list[Molecule]:
    """The QM9-like NCI molecules with ETKDG (+ MMFF94) reference conformations (the first ``n`` that embed, in
    file order; all 419 by default). Takes ~2 s per 100 molecules the first time, then loads from the cache."""
    if n is not None:
        n = check_int("n", n, low=1)
    check_type("mmff", mmff, bool)
    seed = check_int("seed", seed, low=0, high=RDKIT_MAX_SEED)
    max_heavy_atoms = check_int("max_heavy_atoms", max_heavy_atoms, low=2)
    check_type("cache", cache, bool)

    def build() -> list[Molecule]:
        out = []
        for smi in nci_smiles(max_heavy_atoms=max_heavy_atoms):
            if n is not None and len(out) >= n:
                break
            try:
                out.append(molecule_from_smiles(smi, mmff=mmff, seed=seed))
            except ValueError:
                continue
        return out

    key = {"source": "nci", "n": n, "mmff": mmff, "seed": seed, "max_heavy_atoms": max_heavy_atoms}
    return cached_molecules("nci", key, build, cache=cache)


# ------------------------------------------------------------------------------------------------------- QM9

def qm9_folder() -> Path | None:
    """The ``qm9pack/data`` folder, or ``None`` when ``qm9pack`` is not installed (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if (folder / "qm9_part1.csv").is_file() else None


def qm9_available() -> bool:
    """Whether the QM9 CSV files of ``qm9pack`` are installed."""
    return qm9_folder() is not None


def _split_of(index: int, seed: int, fractions: tuple[float, float, float]) -> tuple[str, float]:
    h = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "little") / 2**64
    if u < fractions[0]:
        return "train", u
    if u < fractions[0] + fractions[1]:
        return "valid", u
    return "test", u


def qm9_rows(folder: Path | None = None, *, keep: Callable[[int], bool] | None = None) -> Iterable[dict[str, str]]:
    """Rows of the QM9 CSV files (``Index``, ``SMILES``, ``Elements``, ``XYZ_Ang``, properties ...) as dicts.

    ``keep(index)`` selects rows by their QM9 index before the row is parsed (every row is one line starting
    with ``"dsgdb9nsd_NNNNNN.xyz",index,``), so scanning all 130,831 rows for a subset takes about a second.
    """
    folder = folder or qm9_folder()
    if folder is None:
        raise ModuleNotFoundError("QM9 needs the optional package qm9pack (104 MB, offline once installed): "
                                  "pip install qm9pack")
    csv.field_size_limit(1 << 24)
    for part in (1, 2, 3):
        with open(folder / f"qm9_part{part}.csv", newline="") as f:
            header = next(csv.reader([f.readline()]))
            for line in f:
                if keep is not None:
                    try:
                        index = int(line.split(",", 2)[1])
                    except (IndexError, ValueError):
                        continue
                    if not keep(index):
                        continue
                yield dict(zip(header, next(csv.reader([line]))))


def _qm9_indices(folder: Path) -> list[int]:
    out = []
    for part in (1, 2, 3):
        with open(folder / f"qm9_part{part}.csv") as f:
            f.readline()
            for line in f:
                try:
                    out.append(int(line.split(",", 2)[1]))
                except (IndexError, ValueError):
                    continue
    return out


def qm9_molecule(row: dict[str, str]) -> Molecule:
    """A :class:`Molecule` from one row of the QM9 CSV (DFT coordinates; bonds from the XYZ block)."""
    symbols = json.loads(row["Elements"].replace("'", '"'))
    coords = json.loads(row["XYZ_Ang"])
    return molecule_from_xyz(xyz_block(symbols, coords), name=f"qm9_{int(row['Index']):06d}")


def load_qm9(split: str = "test", *, max_molecules: int | None = 1000, seed: int = 0,
             fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), cache: bool = True) -> list[Molecule]:
    """QM9 molecules of one split with their DFT ground-state coordinates.

    The split is a deterministic hash of each molecule's QM9 index and ``seed`` (80/10/10 by default; the
    paper used GTMGC's random split of the same proportions). ``max_molecules`` takes that many of the split, in
    hash order (a uniform random subset). Molecules whose bonds RDKit cannot determine from the XYZ block
    (zwitterions and the like) are skipped.

    Raises:
        ModuleNotFoundError: ``qm9pack`` is not installed (``pip install qm9pack``).
    """
    check_choice("split", split, ("train", "valid", "test"))
    if max_molecules is not None:
        max_molecules = check_int("max_molecules", max_molecules, low=1)
    seed = check_int("seed", seed, low=0, high=MAX_SEED)
    fractions = _check_fractions(fractions)
    check_type("cache", cache, bool)
    folder = qm9_folder()
    if folder is None:
        raise ModuleNotFoundError("QM9 needs the optional package qm9pack (104 MB, offline once installed): "
                                  "pip install qm9pack")

    def build() -> list[Molecule]:
        # pass 1: the indices of this split, in hash order; pass 2: parse only the rows chosen
        ranked = []
        for index in _qm9_indices(folder):
            which, u = _split_of(index, seed, tuple(fractions))
            if which == split:
                ranked.append((u, index))
        ranked.sort()
        limit = None if max_molecules is None else max_molecules + max(20, max_molecules // 20)  # slack for failures
        wanted = {index: rank for rank, (_, index) in enumerate(ranked[:limit])}
        rows = sorted(({k: r[k] for k in ("Index", "Elements", "XYZ_Ang")}
                       for r in qm9_rows(folder, keep=wanted.__contains__)), key=lambda r: wanted[int(r["Index"])])
        out = []
        for row in rows:
            if max_molecules is not None and len(out) >= max_molecules:
                break
            try:
                out.append(qm9_molecule(row))
            except ValueError:
                continue
        return out

    key = {"source": "qm9", "split": split, "max_molecules": max_molecules, "seed": seed,
           "fractions": list(fractions), "version": os.path.getsize(folder / "qm9_part1.csv")}
    return cached_molecules(f"qm9-{split}", key, build, cache=cache)


def split_molecules(mols: Sequence[Molecule], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), *,
                    seed: int = 0) -> tuple[list[Molecule], list[Molecule], list[Molecule]]:
    """A seeded random train/validation/test split of a list of molecules."""
    check_molecules("mols", mols)
    fractions = _check_fractions(fractions)
    seed = check_int("seed", seed, low=0, high=MAX_SEED)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(mols), generator=g).tolist()
    n_train = int(round(fractions[0] * len(mols)))
    n_val = int(round(fractions[1] * len(mols)))
    pick = lambda idx: [mols[i] for i in idx]  # noqa: E731
    return pick(perm[:n_train]), pick(perm[n_train:n_train + n_val]), pick(perm[n_train + n_val:])


# --------------------------------------------------------------------------------------------------- batches

@dataclass
class Batch:
    """Molecules padded to the largest one, ``B`` molecules of at most ``N`` atoms.

    Attributes:
        features: ``[B, N, 9]`` atom features (0 on padding).
        z: ``[B, N]`` atomic numbers (0 on padding).
        adjacency: ``[B, N, N]`` bond adjacency.
        pe: ``[B, N, N]`` Laplacian encoding, molecule ``b``'s ``[n_b, n_b]`` block in the top-left corner.
        coords: ``[B, N, 3]`` reference coordinates (zeros on padding).
        mask: ``[B, N]`` True for real atoms.
        molecules: the :class:`Molecule` objects, in order.
    """

    features: torch.Tensor
    z: torch.Tensor
    adjacency: torch.Tensor
    pe: torch.Tensor
    coords: torch.Tensor
    mask: torch.Tensor
    molecules: list[Molecule] = field(default_factory=list, repr=False)

    @property
    def n_atoms(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def to(self, device: str | torch.device) -> "Batch":
        move = lambda t: t.to(device)  # noqa: E731
        return Batch(move(self.features), move(self.z), move(self.adjacency), move(self.pe), move(self.coords),
                     move(self.mask), self.molecules)

    def __len__(self) -> int:
        return int(self.mask.shape[0])


def collate(mols: Sequence[Molecule], *, device: str | torch.device | None = None) -> Batch:
    """Pad a list of :class:`Molecule` into a :class:`Batch`.

    Raises ``TypeError`` for items that are not molecules and ``ValueError`` for an empty list or a molecule
    whose tensors disagree in size.
    """
    mols = check_molecules("mols", mols, allow_one=True)
    if device is not None:
        from companion.lab.runtime import get_device

        device = get_device(device)
    for i, m in enumerate(mols):
        n = m.z.numel()
        shapes = {"coords": (n, 3), "features": (n, 9), "adjacency": (n, n), "pe": (n, n)}
        for attr, shape in shapes.items():
            if tuple(getattr(m, attr).shape) != shape:
                raise ValueError(f"molecule {i} ({m.name!r}) has {attr} of shape {list(getattr(m, attr).shape)}, "
                                 f"expected {list(shape)} for its {n} atoms")
    B, N = len(mols), max(m.n_atoms for m in mols)
    features = torch.zeros(B, N, 9, dtype=torch.long)
    z = torch.zeros(B, N, dtype=torch.long)
    adjacency = torch.zeros(B, N, N)
    pe = torch.zeros(B, N, N)
    coords = torch.zeros(B, N, 3)
    mask = torch.zeros(B, N, dtype=torch.bool)
    for b, m in enumerate(mols):
        n = m.n_atoms
        features[b, :n] = m.features
        z[b, :n] = m.z
        adjacency[b, :n, :n] = m.adjacency
        pe[b, :n, :n] = m.pe
        coords[b, :n] = m.coords
        mask[b, :n] = True
    batch = Batch(features, z, adjacency, pe, coords, mask, list(mols))
    return batch.to(device) if device is not None else batch

