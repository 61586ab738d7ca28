"""The ReBind pages' figures (companion.rebind.plots): the drawing shows exactly the edges force_edges picks."""

from __future__ import annotations

import functools

import matplotlib
import pytest
import torch
from matplotlib.patches import Rectangle
from matplotlib.text import Annotation

from companion import rebind as rb
from companion.rebind import plots

matplotlib.use("Agg")


@functools.cache
def _mol(smiles: str):
    return rb.molecule_from_smiles(smiles)


def _picked(m, k=None):
    a_attr, a_rep = rb.force_edges(torch.cdist(m.coords, m.coords), m.z, m.adjacency, k=k)
    return (a_attr != 0) | (a_rep != 0), a_attr, a_rep


def test_principal_plane_keeps_the_distances_of_a_planar_molecule():
    benzene = _mol("c1ccccc1")  # MMFF94 keeps all 12 atoms in one plane
    p = torch.from_numpy(plots.principal_plane(benzene.coords))
    assert p.shape == (12, 2)
    assert torch.allclose(p.mean(0), torch.zeros(2, dtype=p.dtype), atol=1e-9)
    assert torch.allclose(torch.cdist(p, p).float(), torch.cdist(benzene.coords, benzene.coords), atol=1e-3)


def test_principal_plane_of_one_atom_is_the_origin():
    assert plots.principal_plane(torch.tensor([[1.0, 2.0, 3.0]])).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("smiles", ["CCO", "CC(C)=O", "C#CCF"])
@pytest.mark.parametrize("k", [None, 1, 3])
def test_the_figure_draws_one_arrow_per_pair_and_counts_every_pick(smiles, k):
    m = _mol(smiles)
    picked, a_attr, a_rep = _picked(m, k)
    fig = plots.force_edge_figure(m, k=k)
    ax, bx = fig.axes
    arrows = [c for c in ax.get_children() if isinstance(c, Annotation)]
    pairs = {frozenset((i, j)) for i, j in picked.nonzero().tolist()}
    assert len(arrows) == len(pairs)  # a pair picked both ways is one double-headed arrow
    two_way = sum(bool(picked[i, j] and picked[j, i]) for i, j in (tuple(p) for p in pairs))
    assert sum("<" in str(a.arrowprops["arrowstyle"]) for a in arrows) == two_way
    bars = [r for r in bx.patches if isinstance(r, Rectangle)]
    assert sum(r.get_height() for r in bars) == int(picked.sum())
    title = fig._suptitle.get_text()
    assert f"{int(picked.sum())} edges, {int((a_rep != 0).sum())} repulsive, {int((a_attr != 0).sum())} attractive" \
        in title
    assert ("K_i rule" if k is None else f"K = {k}") in title


def test_a_fixed_budget_draws_at_most_that_many_picks_per_atom():
    m = _mol("CC(C)=O")
    picked, _, _ = _picked(m, 1)
    assert int(picked.sum(-1).max()) == 1
    assert int(picked.sum()) == m.n_atoms  # every atom of acetone has a non-bonded atom to pick


def test_the_title_can_be_given():
    assert plots.force_edge_figure(_mol("CO"), title="methanol")._suptitle.get_text() == "methanol"


@pytest.mark.parametrize(("call", "error", "name"), [
    (lambda: plots.principal_plane(torch.zeros(4, 2)), ValueError, "coords"),
    (lambda: plots.principal_plane(torch.zeros(4, 3, dtype=torch.long)), TypeError, "coords"),
    (lambda: plots.principal_plane(torch.full((4, 3), float("nan"))), ValueError, "coords"),
    (lambda: plots.principal_plane([[0.0, 0.0, 0.0]]), TypeError, "coords"),
    (lambda: plots.force_edge_figure("CCO"), TypeError, "molecule"),
    (lambda: plots.force_edge_figure(_mol("CO"), k=-1), ValueError, "k"),
    (lambda: plots.force_edge_figure(_mol("CO"), k=1.5), TypeError, "k"),
    (lambda: plots.force_edge_figure(_mol("CO"), title=3), TypeError, "title"),
])
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        call()
