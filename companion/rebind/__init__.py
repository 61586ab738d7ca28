"""``companion.rebind``: ReBind, force-based graph rewiring for molecular ground-state conformations (Kim, Seo,
Ahn & Yang, ICLR 2025, arXiv 2410.14696; official code: github.com/holymollyhao/ReBIND, built on GTMGC by Xu et
al., ICLR 2024).

- :func:`load_qm9`, :func:`load_nci`, :func:`molecule_from_smiles`, :func:`molecule_from_xyz`, :class:`Molecule`,
  :func:`collate`, :class:`Batch`, :func:`atom_features`, :func:`laplacian_pe` — QM9 with DFT geometries (optional
  ``qm9pack``), a small RDKit-generated set, featurization and padded batches, cached;
- :data:`LJ_PARAMETERS`, :func:`lj_parameters`, :func:`lj_potential`, :func:`lj_force`, :func:`force_edges`,
  :func:`extra_edge_counts`, :func:`nearest_edges`, :func:`edge_statistics` — Lennard-Jones forces and the
  rewiring (top-``K_i`` non-bonded pairs by ``|F|``) with its statistics;
- :class:`ConformerConfig`, :class:`ConformerModel`, :func:`modulated_scores`, :func:`distance_loss` — the
  relation-modulated encoder-decoder transformer and its variants (``rebind``, ``gtmgc``, ``bond``, ``near``);
- :func:`d_mae`, :func:`d_rmse`, :func:`distance_errors`, :func:`c_rmsd`, :func:`per_degree_errors` — the metrics;
- :func:`train`, :data:`RECIPES`, :func:`predict`, :func:`evaluate`, :func:`etkdg_predict`,
  :func:`evaluate_coordinates` — training (our recipe or the official one; early stopping; resumable from a
  checkpoint) and the RDKit ETKDG (+ MMFF) baseline;
- ``companion.rebind.experiments`` — the chapter's experiments (force-edge census, decoder variants compared
  with the ETKDG baseline, the resumable converged comparison), each returning JSON-ready dicts;
  ``python -m companion rebind ...`` runs them;
- :func:`conformer_view`, :func:`align_to_reference`, :func:`view_html`, :func:`selector_html` (from
  ``companion.rebind.viewer``) — offline 3-D views of conformations (py3Dmol with a vendored 3Dmol.js);
- ``companion.rebind.plots`` — figures the pages draw (``plots.force_edge_figure``: a molecule's force edges),
  imported from the submodule.

RDKit is required; QM9 needs the optional ``qm9pack`` (``pip install qm9pack``), everything else works on the
RDKit NCI set without it.
"""

from .data import (
    ATOM_FEATURES,
    NUM_HS_MODES,
    Batch,
    Molecule,
    atom_features,
    bond_adjacency,
    collate,
    embed_conformer,
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
from .forces import (
    LJ_PARAMETERS,
    degrees,
    edge_statistics,
    extra_edge_counts,
    force_edges,
    hop_distance,
    lj_force,
    lj_parameters,
    lj_potential,
    nearest_edges,
    pair_forces,
)
from .metrics import c_rmsd, c_rmsd_one, d_mae, d_rmse, distance_errors, per_degree_errors
from .model import (
    RECIPE_NAMES,
    VARIANTS,
    ConformerConfig,
    ConformerModel,
    ConformerOutput,
    RelationAttention,
    RelationsFn,
    distance_loss,
    modulated_scores,
    pairwise_distances,
    row_subtracted_distances,
)
from .training import (
    RECIPES,
    History,
    Recipe,
    etkdg_predict,
    evaluate,
    evaluate_coordinates,
    lr_at,
    predict,
    train,
)
from .viewer import align_to_reference, conformer_view, selector_html, view_html

__all__ = [
    "ATOM_FEATURES", "Batch", "ConformerConfig", "ConformerModel", "ConformerOutput", "History", "LJ_PARAMETERS",
    "Molecule", "NUM_HS_MODES", "RECIPES", "RECIPE_NAMES", "Recipe", "RelationAttention", "RelationsFn",
    "VARIANTS",
    "atom_features", "bond_adjacency", "c_rmsd", "c_rmsd_one",
    "collate", "d_mae", "d_rmse", "degrees", "distance_errors", "distance_loss", "edge_statistics",
    "embed_conformer", "etkdg_predict", "evaluate", "evaluate_coordinates", "extra_edge_counts", "force_edges",
    "hop_distance", "laplacian_pe", "lj_force", "lj_parameters", "lj_potential", "load_nci", "load_qm9", "lr_at",
    "modulated_scores", "molecule_from_mol", "molecule_from_smiles", "molecule_from_xyz", "nci_smiles",
    "nearest_edges", "pair_forces", "pairwise_distances", "per_degree_errors", "predict", "qm9_available",
    "row_subtracted_distances", "split_molecules", "train", "xyz_block",
    "align_to_reference", "conformer_view", "selector_html", "view_html",
]
