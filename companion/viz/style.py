"""One plotting style for the whole book.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies); sequential
maps are ``viridis`` / ``cividis``. Use :func:`use_style` once per notebook, or ``with style():`` locally.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import matplotlib as mpl

#: Okabe & Ito (2008) colour-blind-safe palette, in the order the book uses it.
COLORS = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "sky": "#56B4E9",
    "purple": "#CC79A7",
    "yellow": "#F0E442",
    "black": "#000000",
}
PALETTE = list(COLORS.values())
SEQUENTIAL_CMAP = "viridis"

RC = {
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "figure.dpi": 100,
    "figure.figsize": (6.4, 3.6),
    "figure.constrained_layout.use": True,
    "savefig.bbox": "tight",
    "image.cmap": SEQUENTIAL_CMAP,
    "lines.linewidth": 1.8,
}


def use_style() -> None:
    """Apply the book's matplotlib style globally."""
    mpl.rcParams.update(RC)


@contextmanager
def style() -> Iterator[None]:
    """Apply the book's style inside a ``with`` block only."""
    with mpl.rc_context(RC):
        yield
