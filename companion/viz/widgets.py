"""Widgets that recompute in a live kernel and still respond to their controls in the static book.

A reader of the online book has no kernel, so ordinary ipywidgets callbacks are frozen there. :func:`interact`
turns "a function of a few controls → a matplotlib figure" into an object that shows

* in a live Jupyter kernel: ipywidgets controls over the *full* range of each control; every change calls the
  function again and redraws (MIME type ``application/vnd.jupyter.widget-view+json``);
* everywhere else (the built HTML book, nbviewer, a notebook opened without a kernel): a self-contained HTML
  player with the same controls over a *subset* of values, whose figures were rendered in advance and are
  switched by a few lines of JavaScript (MIME type ``text/html``; no kernel, no CDN, no widget manager).

Both travel in one output, and each front end picks the richest one it can show; the book's ``_config.yml``
asks the HTML builder to prefer ``text/html``. The static frames are rendered when the object is created, so a
function that fails for any pre-rendered control value fails the notebook (and the book build) at once.
Frame count and total size are bounded (``max_frames``, ``max_bytes``) so pages stay small. A control left with
one pre-rendered value is shown in the static player as a fixed label, not as a slider that cannot move. With the
environment variable ``COMPANION_LIVE_WIDGETS=0`` (the book's build sets it) only the static player is emitted.

Example::

    def draw(layer, head):
        fig, ax = plt.subplots()
        ax.imshow(attn[layer, head])
        return fig

    interact(draw, {"layer": range(30), "head": range(9)}, max_frames=30)
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..lab.checks import check_int, check_type, describe
from .style import style

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _render_png(fig, dpi: int) -> bytes:
    """The figure as a PNG with a 256-colour palette (about a third of the bytes of full colour)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)  # never leave the figure open: the inline backend would show it a second time
    small = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(colors=256).save(small, format="PNG", optimize=True)
    return small.getvalue()


def _subsample(values: Sequence, count: int) -> list:
    """``count`` values spread evenly over ``values``, always keeping the first and the last."""
    if count >= len(values):
        return list(values)
    if count == 1:
        return [values[0]]
    picks = sorted({round(i * (len(values) - 1) / (count - 1)) for i in range(count)})
    return [values[i] for i in picks]


def _in_live_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    if os.environ.get("COMPANION_LIVE_WIDGETS", "1") == "0":  # set by the book's build: the page is static
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Interactive:
    """The object :func:`interact` returns; display it (last expression of a cell) to show it.

    Attributes:
        controls: the full domain of every control (what a live kernel offers).
        static: the subset of each control's values that is pre-rendered for the static page.
        frames: PNG bytes of every pre-rendered figure, keyed by the tuple of control values.
    """

    def __init__(self, func: Callable[..., Any], controls: Mapping[str, Sequence], *, static: Mapping[str, Sequence] | None,
                 initial: Mapping[str, Any] | None, max_frames: int, max_bytes: int, dpi: int, title: str | None):
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        if not isinstance(controls, Mapping) or not controls:
            raise ValueError(f"controls must be a non-empty mapping from a control's name to its values, got {describe(controls)}")
        self.func, self.dpi, self.title = func, dpi, title
        self.controls: dict[str, list] = {}
        for name, values in controls.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"controls: names must be identifiers (they are passed as keyword arguments), got {name!r}")
            if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, range)):
                raise TypeError(f"controls[{name!r}] must be a sequence of values (list, tuple or range), got {values!r}")
            values = list(values)
            if not values:
                raise ValueError(f"controls[{name!r}] has no values")
            self.controls[name] = values
        max_frames = check_int("max_frames", max_frames, low=1)
        max_bytes = check_int("max_bytes", max_bytes, low=1)
        dpi = check_int("dpi", dpi, low=1)
        self.dpi = dpi
        if title is not None:
            check_type("title", title, str)
        if static is not None and not isinstance(static, Mapping):
            raise TypeError(f"static must be None or a mapping from control names to values, got {describe(static)}")
        if initial is not None and not isinstance(initial, Mapping):
            raise TypeError(f"initial must be None or a mapping from control names to values, got {describe(initial)}")

        static = dict(static or {})
        unknown = set(static) - set(self.controls)
        if unknown:
            raise ValueError(f"static names unknown controls {sorted(unknown)}; controls are {list(self.controls)}")
        for name, values in static.items():
            missing = [v for v in values if v not in self.controls[name]]
            if missing or not values:
                raise ValueError(f"static values for {name!r} must be a non-empty subset of its control values; not in it: {missing}")
        counts = {n: len(static.get(n, v)) for n, v in self.controls.items()}
        while math.prod(counts.values()) > max_frames:
            shrinkable = [n for n in counts if n not in static and counts[n] > 1]
            if not shrinkable:
                raise ValueError(
                    f"the static values give {math.prod(counts.values())} frames, more than max_frames={max_frames}; "
                    "pass fewer static values or raise max_frames"
                )
            widest = max(shrinkable, key=counts.__getitem__)
            counts[widest] -= 1
        self.static = {n: list(static[n]) if n in static else _subsample(v, counts[n]) for n, v in self.controls.items()}

        initial = dict(initial or {})
        for name, value in initial.items():
            if name not in self.controls or value not in self.static[name]:
                raise ValueError(f"initial value {name}={value!r} must be one of the static values {self.static.get(name)}")
        self.initial = {n: initial.get(n, vals[0]) for n, vals in self.static.items()}

        self.frames: dict[tuple, bytes] = {}
        for combo in itertools.product(*self.static.values()):
            self.frames[combo] = self.render(**dict(zip(self.static, combo)))
        self.nbytes = sum(math.ceil(len(b) / 3) * 4 for b in self.frames.values())  # base64 size in the page
        if self.nbytes > max_bytes:
            raise ValueError(
                f"the {len(self.frames)} pre-rendered frames take {self.nbytes / 1e6:.2f} MB, over max_bytes="
                f"{max_bytes / 1e6:.2f} MB; lower dpi (now {dpi}), the figure size or max_frames"
            )
        self._widget = None

    # -- rendering ----------------------------------------------------------------------------------------
    def render(self, **values) -> bytes:
        """Call the function with these control values and return the figure as PNG bytes."""
        from matplotlib.axes import Axes
        from matplotlib.figure import Figure

        try:
            with style():
                fig = self.func(**values)
        except Exception as err:
            name = getattr(self.func, "__name__", "the widget function")
            raise RuntimeError(f"{name}({', '.join(f'{k}={v!r}' for k, v in values.items())}) raised {type(err).__name__}: {err}") from err
        if isinstance(fig, Axes):
            fig = fig.figure
        if not isinstance(fig, Figure):
            raise TypeError(f"the widget function must return a matplotlib Figure (or Axes), got {type(fig).__name__}")
        return _render_png(fig, self.dpi)

    # -- the static player --------------------------------------------------------------------------------
    def to_html(self) -> str:
        """A self-contained HTML fragment: controls, one <img>, and a script switching pre-rendered frames."""
        uid = f"cw-{uuid.uuid4().hex[:10]}"
        names = list(self.static)
        rows = []
        for k, name in enumerate(names):
            values = self.static[name]
            start = values.index(self.initial[name])
            label = html.escape(name)
            if len(values) == 1:  # nothing to move in the static page: a fixed label, not a one-position slider
                more = len(self.controls[name]) - 1
                hint = (f' <span style="font-size:0.85em;color:#777">({more} more value{"s" if more > 1 else ""} in a live '
                        'kernel)</span>') if more else ""
                control = f'<span class="cw-fixed" style="font-family:monospace">{html.escape(str(values[0]))}</span>{hint}'
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                control = (f'<input type="range" min="0" max="{len(values) - 1}" step="1" value="{start}" '
                           f'data-k="{k}" aria-label="{label}" style="width:16em;vertical-align:middle">'
                           f' <output style="font-family:monospace">{html.escape(str(values[start]))}</output>')
            else:
                options = "".join(f'<option value="{i}"{" selected" if i == start else ""}>{html.escape(str(v))}</option>'
                                  for i, v in enumerate(values))
                control = f'<select data-k="{k}" aria-label="{label}">{options}</select>'
            tag = "div" if len(values) == 1 else "label"
            rows.append(f'<{tag} style="display:block;margin:0.2em 0"><b>{label}</b> {control}</{tag}>')
        order = list(itertools.product(*(range(len(v)) for v in self.static.values())))
        frames = [base64.b64encode(self.frames[tuple(self.static[n][i] for n, i in zip(names, idx))]).decode() for idx in order]
        sizes = [len(self.static[n]) for n in names]
        labels = [[str(v) for v in self.static[n]] for n in names]
        first = order.index(tuple(self.static[n].index(self.initial[n]) for n in names))
        caption = f'<div style="font-size:0.85em;color:#555">{html.escape(self.title)}</div>' if self.title else ""
        note = ("Static page: pre-rendered values shown; run the notebook for every value."
                if any(len(self.static[n]) < len(self.controls[n]) for n in names) else "")
        return f"""<div class="companion-widget" id="{uid}" data-frames="{len(frames)}">{caption}
<div class="cw-controls">{''.join(rows)}</div>
<img class="cw-frame" alt="figure for the selected controls" style="max-width:100%" src="data:image/png;base64,{frames[first]}">
<div style="font-size:0.75em;color:#777">{note}</div>
<script>(function () {{
  var root = document.getElementById("{uid}");
  var frames = {json.dumps(frames)}, sizes = {json.dumps(sizes)}, labels = {json.dumps(labels)};
  var inputs = root.querySelectorAll("[data-k]"), img = root.querySelector("img.cw-frame");
  function update() {{
    var idx = 0;
    inputs.forEach(function (el) {{
      var k = +el.dataset.k, i = +el.value;
      idx = idx * sizes[k] + i;
      var out = el.parentNode.querySelector("output");
      if (out) out.textContent = labels[k][i];
    }});
    img.src = "data:image/png;base64," + frames[idx];
  }}
  inputs.forEach(function (el) {{ el.addEventListener("input", update); el.addEventListener("change", update); }});
}})();</script></div>"""

    # -- the live widget ----------------------------------------------------------------------------------
    def widget(self):
        """The ipywidgets version: controls over the full domains, recomputing on every change."""
        if self._widget is not None:
            return self._widget
        import ipywidgets as W

        image = W.Image(value=self.frames[tuple(self.initial.values())], format="png")
        image.layout.max_width = "100%"
        status = W.HTML()
        inputs = {}
        for name, values in self.controls.items():
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                inputs[name] = W.SelectionSlider(options=values, value=self.initial[name], description=name,
                                                 continuous_update=False)
            else:
                inputs[name] = W.Dropdown(options=values, value=self.initial[name], description=name)

        def redraw(_change=None):
            values = {n: w.value for n, w in inputs.items()}
            key = tuple(values.values())
            status.value = "<i>computing…</i>"
            try:
                image.value = self.frames[key] if key in self.frames else self.render(**values)
                status.value = ""
            except Exception as err:  # shown to the reader, who can move the control elsewhere
                status.value = f"<span style='color:#D55E00'>{html.escape(str(err))}</span>"

        for w in inputs.values():
            w.observe(redraw, names="value")
        children = ([W.HTML(f"<b>{html.escape(self.title)}</b>")] if self.title else []) + [*inputs.values(), status, image]
        self._widget = W.VBox(children)
        return self._widget

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": repr(self), "text/html": self.to_html()}
        if _in_live_kernel():
            widget_bundle = self.widget()._repr_mimebundle_()
            if WIDGET_MIME in widget_bundle:
                bundle[WIDGET_MIME] = widget_bundle[WIDGET_MIME]
        return bundle

    def __repr__(self) -> str:
        dims = ", ".join(f"{n}: {len(self.static[n])}/{len(v)}" for n, v in self.controls.items())
        return f"<Interactive {getattr(self.func, '__name__', 'figure')} ({dims} values pre-rendered; {self.nbytes / 1e3:.0f} kB)>"


def interact(func: Callable[..., Any], controls: Mapping[str, Sequence], *, static: Mapping[str, Sequence] | None = None,
             initial: Mapping[str, Any] | None = None, max_frames: int = 32, max_bytes: int = 2_000_000, dpi: int = 80,
             title: str | None = None) -> Interactive:
    """Turn ``func(**control_values) -> Figure`` into a widget alive both in a kernel and in the static book.

    Args:
        func: called with one keyword argument per control; returns a matplotlib ``Figure`` (or ``Axes``).
            It must not show the figure itself; it is closed after rendering.
        controls: ``{name: values}`` — the full domain of each control (a list, tuple or range). Numbers
            become sliders, anything else a drop-down.
        static: optional ``{name: values}`` subsets to pre-render; by default each control is thinned
            evenly (keeping its ends) until at most ``max_frames`` combinations remain.
        initial: the control values shown first (must be among the static values; default: the first).
        max_frames: upper bound on pre-rendered figures.
        max_bytes: upper bound on the page weight of all frames (base64); exceeding it raises.
        dpi: resolution of the pre-rendered PNGs (saved with a 256-colour palette).
        title: an optional caption above the controls.

    Raises:
        RuntimeError: when ``func`` raises for a pre-rendered combination (naming the values).
        ValueError / TypeError: malformed controls or bounds.
    """
    return Interactive(func, controls, static=static, initial=initial, max_frames=max_frames, max_bytes=max_bytes,
                       dpi=dpi, title=title)

