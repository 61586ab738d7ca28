"""Bad-input table of ``companion.viz`` (see tests/badinput.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from badinput import Custom, Int, NoArguments, Spec  # noqa: E402
from companion import viz  # noqa: E402


def _draw(k):
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, k])
    return fig


SPECS = {
    "COLORS": NoArguments("a constant (the book's colours by name)"),
    "PALETTE": NoArguments("a constant (the colour cycle)"),
    "SEQUENTIAL_CMAP": NoArguments("a constant (a colormap name)"),
    "Interactive": NoArguments("the object interact returns; its constructor is swept through interact"),
    "style": NoArguments("a context manager without arguments"),
    "use_style": NoArguments("a function without arguments"),
    "interact": Spec(
        lambda **kw: viz.interact(**kw),
        lambda: {"func": _draw, "controls": {"k": [1, 2]}, "max_frames": 4, "max_bytes": 2_000_000, "dpi": 20},
        {"func": Custom((3, None, "draw")),
         "controls": Custom(({}, None, {"k": []}, {"not an identifier": [1]}, {"k": "ab"})),
         "static": Custom(({"other": [1]}, {"k": [7]}, [1, 2])),
         "initial": Custom(({"k": 7}, {"other": 1}, [1])),
         "max_frames": Int(low=1), "max_bytes": Int(low=1), "dpi": Int(low=1),
         "title": Custom((3, ["a"]))}),
}
