"""``companion.viz``: the book's plotting style and its widget toolkit.

- :func:`use_style`, :func:`style`, :data:`COLORS` — one colour-blind-safe matplotlib style;
- :func:`interact` — "a function of a few controls → a figure" as a widget that recomputes in a live
  kernel and still responds to its controls in the static HTML book.
"""

from .style import COLORS, PALETTE, SEQUENTIAL_CMAP, style, use_style
from .widgets import Interactive, interact

__all__ = ["COLORS", "PALETTE", "SEQUENTIAL_CMAP", "Interactive", "interact", "style", "use_style"]
