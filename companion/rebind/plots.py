"""Figures of the ReBind pages that are layout, not method: the pages call these and keep the computation in view.

- :func:`principal_plane` — a molecule's coordinates on its first two principal axes (a 2-D shadow to draw);
- :func:`force_edge_figure` — one molecule with the force edges of :func:`~companion.rebind.force_edges` drawn
  as arrows, beside a count of the edges by bond-graph distance (the widget of ``book/rebind/forces.md``).

Colours are the book's Okabe–Ito palette (:data:`companion.viz.COLORS`). The functions return the figure and
never show it (the caller, or :func:`companion.viz.interact`, decides).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from companion.lab.checks import check_int, check_tensor, check_type, describe
from companion.viz import COLORS

from .data import Molecule
from .forces import element_symbol, force_edges, hop_distance

#: marker face colour and area (pt²) of each element in :func:`force_edge_figure`
ELEMENT_STYLE = {
    1: ("white", 60),
    6: (COLORS["black"], 150),
    7: (COLORS["blue"], 150),
    8: (COLORS["purple"], 150),
    9: (COLORS["green"], 150),
}


def principal_plane(coords: torch.Tensor) -> np.ndarray:
    """Coordinates ``[N, 3]`` (Å) projected on their first two principal axes: ``[N, 2]`` (Å, centred).

    The projection keeps the two directions of largest spread (an SVD of the centred coordinates), so a
    drawing of a molecule shows as much of it as any 2-D view can; bonds along the third axis look shorter.

    Raises:
        TypeError / ValueError: ``coords`` not a finite floating tensor ``[N, 3]`` with ``N >= 1``.
    """
    check_tensor("coords", coords, ndim=2, dtype="floating", finite=True)
    if coords.shape[1] != 3:
        raise ValueError(f"coords must be [N, 3], got {describe(coords)}")
    x = coords.detach().cpu().double()
    x = x - x.mean(0)
    vh = torch.linalg.svd(x, full_matrices=False).Vh
    p = (x @ vh[:2].T).numpy()
    if p.shape[1] < 2:  # a single atom: one singular vector only
        p = np.pad(p, ((0, 0), (0, 2 - p.shape[1])))
    return p


def force_edge_figure(molecule: Molecule, *, k: int | None = None, title: str | None = None) -> Figure:
    """The force edges of one molecule on its reference geometry, drawn, and counted by graph distance.

    Left: atoms on the first two principal axes (:func:`principal_plane`), bonds grey, the edges of
    :func:`~companion.rebind.force_edges` as arrows from the atom that picked to the atom picked (double-headed
    when both picked each other): repulsive dashed vermillion, attractive dash-dotted sky blue. Right: the
    edges split into 1-3 pairs (two bonds apart), 1-4 pairs (three) and farther (:func:`hop_distance`).

    Args:
        molecule: a :class:`~companion.rebind.Molecule` (its ``coords``, ``z`` and ``adjacency`` are used).
        k: the edge budget of every atom (``force_edges(..., k=k)``, for exploring); ``None`` (default):
            ReBind's rule ``K_i = max deg − deg(i)``.
        title: the figure's title; default: the SMILES, the budget and the edge counts.

    Returns:
        A new matplotlib ``Figure`` (9.5 × 4.6 in), not shown.

    Raises:
        TypeError / ValueError: ``molecule`` not a ``Molecule``, ``k`` not ``None`` or an int >= 0, ``title``
        not ``None`` or a string.
    """
    check_type("molecule", molecule, Molecule)
    if k is not None:
        k = check_int("k", k, low=0)
    if title is not None:
        check_type("title", title, str)
    m = molecule
    dist = torch.cdist(m.coords, m.coords)
    a_attr, a_rep = force_edges(dist, m.z, m.adjacency, k=k)
    hop = hop_distance(m.adjacency, max_hops=3)
    p = principal_plane(m.coords)

    fig = Figure(figsize=(9.5, 4.6), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=(2.2, 1))
    for i, j in (m.adjacency.triu() != 0).nonzero().tolist():
        ax.plot(*p[[i, j]].T, color="grey", lw=2.5, zorder=1)
    picked = (a_attr != 0) | (a_rep != 0)
    for i, j in picked.nonzero().tolist():
        if picked[j, i] and j < i:
            continue  # drawn once, double-headed
        rep = bool(a_rep[i, j] != 0)
        ax.annotate("", xy=p[j], xytext=p[i], zorder=2, arrowprops=dict(
            arrowstyle="<|-|>" if picked[j, i] else "-|>", color=COLORS["vermillion"] if rep else COLORS["sky"],
            ls="--" if rep else "-.", lw=1.3, shrinkA=5, shrinkB=5, mutation_scale=9))
    for z, (color, size) in ELEMENT_STYLE.items():
        sel = (m.z == z).numpy()
        if sel.any():
            ax.scatter(*p[sel].T, s=size, c=color, edgecolors="black", lw=0.8, zorder=3, label=element_symbol(z))
    ax.set_aspect("equal")
    ax.set(xticks=[], yticks=[], xlabel="first principal axis", ylabel="second principal axis")
    ax.grid(False)
    ax.legend(loc="best", fontsize=8, markerscale=0.6, frameon=True, framealpha=0.9)

    groups = {"1-3": hop == 2, "1-4": hop == 3, "farther": hop > 3}
    rep_n = [int(((a_rep != 0) & g).sum()) for g in groups.values()]
    att_n = [int(((a_attr != 0) & g).sum()) for g in groups.values()]
    bx.bar(list(groups), rep_n, color=COLORS["vermillion"], label="repulsive")
    bx.bar(list(groups), att_n, bottom=rep_n, color=COLORS["sky"], label="attractive")
    bx.set(xlabel="atoms joined are … apart", ylabel="force edges")
    bx.legend(fontsize=8)
    if title is None:
        budget = "K_i rule" if k is None else f"K = {k}"
        title = (f"{m.smiles} ({m.n_atoms} atoms), {budget}: {int(picked.sum())} edges, {sum(rep_n)} repulsive, "
                 f"{sum(att_n)} attractive")
    fig.suptitle(title, fontsize=10, fontweight="bold")
    return fig
