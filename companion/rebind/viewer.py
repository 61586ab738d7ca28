"""Conformations in 3-D: py3Dmol views that work offline, in the built book and in a live Jupyter kernel.

py3Dmol (a thin Python wrapper that writes HTML + JavaScript for 3Dmol.js, Rego & Koes, Bioinformatics 2015)
loads 3Dmol.js from a CDN by default. Here the library is served from a copy vendored with the book
(``book/_vendor/_static/3dmol/3Dmol-min.js``, 3dmol 2.5.5 from the npm registry, BSD-3-Clause; the book's
``html_extra_path`` copies it to ``_static/3dmol/`` of the built site). Every view carries a small loader that
tries the Jupyter server's ``files/`` URL of the vendored copy when the page is a notebook opened in Jupyter
from a checkout (a live kernel; :data:`LIVE_JS`), then the built book's copy (:data:`BUILT_JS`, relative to a
page under ``book/<chapter>/``); it never asks a CDN.

- :func:`align_to_reference` — a predicted conformation rigidly superimposed on the reference (RDKit
  ``rdMolAlign.AlignMol``, all atoms in atom order, rotation and translation only);
- :func:`conformer_view` — one py3Dmol view of a molecule's reference geometry with other conformations
  superimposed after alignment, and optionally the force edges drawn as thin cylinders;
- :func:`view_html` — the view's HTML with the offline loader;
- :func:`selector_html` — several views behind a molecule selector (a ``<select>``; the views are precomputed,
  so it works in the static page).
"""

from __future__ import annotations

import html as _html
import json
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from companion.lab.checks import check_int, check_tensor, check_type, describe

from .data import Molecule
from .metrics import _as_array

#: the vendored 3Dmol.js (in the repository)
VENDORED_JS = Path(__file__).resolve().parents[2] / "book" / "_vendor" / "_static" / "3dmol" / "3Dmol-min.js"
#: its URL relative to a built page under ``book/<chapter>/`` (the site's ``_static/3dmol/3Dmol-min.js``)
BUILT_JS = "../../_static/3dmol/3Dmol-min.js"
#: its path relative to a notebook under ``book/<chapter>/`` in the checkout (for a Jupyter server's ``files/``)
LIVE_JS = "../_vendor/_static/3dmol/3Dmol-min.js"
#: 3Dmol.js version of the vendored copy (py3Dmol 2.5.5 asks for the same)
JS_VERSION = "2.5.5"

#: colours of the superimposed conformations (Okabe–Ito), in order; the reference keeps element colours
PALETTE = ("#d55e00", "#0072b2", "#cc79a7", "#56b4e9", "#000000")
#: colours of the force edges
EDGE_COLORS = {"attractive": "#009e73", "repulsive": "#e69f00"}

# tries each URL in turn; py3Dmol's own loader only runs when $3Dmolpromise is undefined, so defining it first
# replaces its CDN URL
_LOADER = """<script>
(function () {
  if (typeof window.$3Dmolpromise !== 'undefined') return;
  var urls = %(built)s;
  var m = location.pathname.match(/^(.*?)\\/(?:lab\\/tree|notebooks|doc\\/tree|tree)\\/(.*\\/)?[^\\/]*$/);
  if (m) urls.unshift(m[1] + '/files/' + (m[2] || '') + %(live)s);  // a live Jupyter server: its files/ URL first
  window.$3Dmolpromise = new Promise(function (resolve, reject) {
    var next = function (i) {
      if (typeof window.$3Dmol !== 'undefined') { resolve(); return; }
      if (i >= urls.length) { reject(new Error('3Dmol.js not found at ' + urls.join(', '))); return; }
      var tag = document.createElement('script');
      tag.src = urls[i];
      tag.onload = function () {  // (a server may answer a missing file with a page: check what loaded)
        if (typeof window.$3Dmol !== 'undefined') resolve(); else { tag.remove(); next(i + 1); }
      };
      tag.onerror = function () { tag.remove(); next(i + 1); };
      document.head.appendChild(tag);
    };
    next(0);
  });
})();
</script>
"""


def _coords(value, what: str, n: int) -> np.ndarray:
    arr = _as_array(value, what)
    if arr.shape != (n, 3):
        raise ValueError(f"{what} must be [{n}, 3] coordinates (one row per atom), got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds NaN or infinite coordinates: nothing to draw")
    return arr.astype(np.float64)


def align_to_reference(mol: Molecule, coords) -> torch.Tensor:
    """``coords`` ``[N, 3]`` (Å) rigidly moved onto ``mol.coords``: the rotation and translation that minimize the
    RMSD over all atoms, matched by atom index (RDKit ``rdMolAlign.AlignMol``; no reflection, no symmetry
    permutation, so every atom stays itself). Returns a float64 ``[N, 3]`` tensor.

    Raises ``TypeError`` for a ``mol`` that is not a :class:`Molecule` and ``ValueError`` for coordinates of
    another shape or with NaN/inf entries."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign
    from rdkit.Geometry import Point3D

    check_type("mol", mol, Molecule)
    arr = _coords(coords, "coords", mol.n_atoms)
    probe = Chem.Mol(mol.mol)
    conf = probe.GetConformer()
    for i, (x, y, z) in enumerate(arr):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    ref = Chem.Mol(mol.mol)
    ref_conf = ref.GetConformer()
    for i, (x, y, z) in enumerate(mol.coords.double().numpy()):
        ref_conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    rdMolAlign.AlignMol(probe, ref, atomMap=[(i, i) for i in range(mol.n_atoms)])
    return torch.tensor(probe.GetConformer().GetPositions(), dtype=torch.float64)


def _molblock(mol: Molecule, coords: np.ndarray) -> str:
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    m = Chem.Mol(mol.mol)
    conf = m.GetConformer()
    for i, (x, y, z) in enumerate(coords):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    return Chem.MolToMolBlock(m)


def conformer_view(mol: Molecule, conformers: Mapping[str, Any] | None = None, *,
                   edges: Mapping[str, torch.Tensor] | None = None, align: bool = True, width: int = 440,
                   height: int = 340):
    """A py3Dmol view: ``mol``'s reference geometry (sticks in element colours) with each of ``conformers``
    (``{label: [N, 3] coordinates}``, Å) superimposed as thinner sticks in one colour each (:data:`PALETTE`),
    bonds from the molecular graph, after :func:`align_to_reference` (``align=False``: drawn as given).

    Args:
        mol: the molecule and its reference conformation.
        conformers: the other conformations, at most ``len(PALETTE)`` of them.
        edges: ``{"attractive": A, "repulsive": A}``, ``[N, N]`` matrices (non-zero = an edge, e.g. from
            :func:`~companion.rebind.force_edges` on one molecule), drawn between reference atoms as thin
            dashed cylinders (:data:`EDGE_COLORS`).
        width, height: the view's size in pixels.

    The aligned coordinates are kept on the view as ``view.companion_coords`` (``{label: [N, 3]}``) and the
    legend as ``view.companion_legend``. ``TypeError``/``ValueError`` name the argument that is wrong.
    """
    import py3Dmol

    check_type("mol", mol, Molecule)
    conformers = {} if conformers is None else conformers
    check_type("conformers", conformers, Mapping, what="a mapping {label: [N, 3] coordinates}")
    if len(conformers) > len(PALETTE):
        raise ValueError(f"conformers: at most {len(PALETTE)} conformations fit the palette, got {len(conformers)}")
    for label in conformers:
        check_type("conformers label", label, str)
    check_type("align", align, bool)
    width = check_int("width", width, low=50)
    height = check_int("height", height, low=50)
    if edges is not None:
        check_type("edges", edges, Mapping, what="a mapping {'attractive': [N, N], 'repulsive': [N, N]}")
        for kind, a in edges.items():
            if kind not in EDGE_COLORS:
                raise ValueError(f"edges keys must be among {sorted(EDGE_COLORS)}, got {kind!r}")
            check_tensor(f"edges[{kind!r}]", a, ndim=2)
            if tuple(a.shape) != (mol.n_atoms, mol.n_atoms):
                raise ValueError(f"edges[{kind!r}] must be [{mol.n_atoms}, {mol.n_atoms}], got {describe(a)}")
    ref = mol.coords.double().numpy()
    placed = {label: _coords(c, f"conformers[{label!r}]", mol.n_atoms) for label, c in conformers.items()}
    if align:
        placed = {label: align_to_reference(mol, xyz).numpy() for label, xyz in placed.items()}
    view = py3Dmol.view(width=width, height=height, js=BUILT_JS)
    view.addModel(_molblock(mol, ref), "sdf")
    view.setStyle({"model": 0}, {"stick": {"radius": 0.16}, "sphere": {"scale": 0.22}})
    for k, (label, xyz) in enumerate(placed.items()):
        view.addModel(_molblock(mol, xyz), "sdf")
        view.setStyle({"model": k + 1}, {"stick": {"radius": 0.08, "color": PALETTE[k]},
                                         "sphere": {"scale": 0.12, "color": PALETTE[k]}})
    n_edges = {}
    for kind, a in (edges or {}).items():
        pairs = [(i, j) for i, j in (a != 0).nonzero().tolist() if i < j or a[j, i] == 0]
        n_edges[kind] = len(pairs)
        for i, j in pairs:
            start, end = (dict(zip("xyz", map(float, ref[k]))) for k in (i, j))
            view.addCylinder({"start": start, "end": end, "radius": 0.035, "color": EDGE_COLORS[kind],
                              "dashed": True, "fromCap": 1, "toCap": 1})
    view.zoomTo()
    view.companion_coords = {label: torch.from_numpy(xyz) for label, xyz in placed.items()}
    view.companion_legend = ([("reference (DFT)", "element colours")]
                             + [(label, PALETTE[k]) for k, label in enumerate(placed)]
                             + [(f"{kind} force edges ({n_edges[kind]})", EDGE_COLORS[kind]) for kind in n_edges])
    return view


def view_html(view, *, title: str | None = None) -> str:
    """The HTML of a :func:`conformer_view` (or any ``py3Dmol.view``): the offline loader, the view and its
    legend under an optional ``title``. It references the vendored 3Dmol.js only (:data:`BUILT_JS`, then the
    Jupyter ``files/`` URL of :data:`LIVE_JS`), never a CDN."""
    import py3Dmol

    check_type("view", view, py3Dmol.view, what="a py3Dmol.view")
    if title is not None:
        check_type("title", title, str)
    view.uniqueid = uuid.uuid4().hex  # py3Dmol's own id is the clock, which two quick views can share
    body = (view.startjs + view.endjs).replace("UNIQUEID", view.uniqueid)
    if "cdn.jsdelivr" in body or "https://" in body:
        raise ValueError("view: its HTML refers to an outside URL; build it with conformer_view (local 3Dmol.js)")
    loader = _LOADER % {"built": json.dumps([BUILT_JS]), "live": json.dumps(LIVE_JS)}
    legend = "".join(
        f'<span style="margin-right:1em"><span style="display:inline-block;width:0.8em;height:0.8em;'
        f'background:{c if c.startswith("#") else "#888"};margin-right:0.3em"></span>{_html.escape(label)}</span>'
        for label, c in getattr(view, "companion_legend", []))
    head = f"<div><strong>{_html.escape(title)}</strong></div>" if title else ""
    return f'<div class="companion-3d">{loader}{head}{body}<div style="font-size:0.85em">{legend}</div></div>'


def selector_html(views: Mapping[str, Any], *, label: str = "molecule") -> str:
    """Several :func:`conformer_view` views behind one ``<select>``: all are in the page (precomputed), one is
    shown at a time, and switching resizes and redraws the one shown (a view built while hidden has no size).
    ``views``: ``{option label: py3Dmol.view}`` (at least one)."""
    import py3Dmol

    check_type("views", views, Mapping, what="a mapping {label: py3Dmol.view}")
    if not views:
        raise ValueError("views must hold at least one view, got an empty mapping")
    for key, v in views.items():
        check_type("views label", key, str)
        check_type(f"views[{key!r}]", v, py3Dmol.view, what="a py3Dmol.view")
    check_type("label", label, str)
    uid = uuid.uuid4().hex[:10]
    options, panes = [], []
    for k, (key, v) in enumerate(views.items()):
        options.append(f'<option value="{k}">{_html.escape(key)}</option>')
        html = view_html(v)
        viewer = f"viewer_{v.uniqueid}"  # py3Dmol's global name for this view (its id set by view_html)
        panes.append(f'<div class="companion-3d-pane" data-k="{k}" data-viewer="{viewer}" '
                     f'style="display:{"block" if k == 0 else "none"}">{html}</div>')
    script = f"""<script>
(function () {{
  var root = document.getElementById('companion-3d-{uid}');
  var select = root.querySelector('select');
  select.addEventListener('change', function () {{
    root.querySelectorAll('.companion-3d-pane').forEach(function (pane) {{
      var on = pane.getAttribute('data-k') === select.value;
      pane.style.display = on ? 'block' : 'none';
      var v = window[pane.getAttribute('data-viewer')];
      if (on && v) {{ v.resize(); v.zoomTo(); v.render(); }}
    }});
  }});
}})();
</script>"""
    return (f'<div id="companion-3d-{uid}" class="companion-3d-selector"><label>{_html.escape(label)}: '
            f'<select aria-label="{_html.escape(label)}">{"".join(options)}</select></label>'
            f'{"".join(panes)}{script}</div>')


def write_page(path: str | Path, html: str, *, js: str | None = None) -> Path:
    """A stand-alone HTML file holding ``html`` (e.g. :func:`selector_html`), for a browser check outside the
    book: ``js`` replaces the built book's relative script URL (e.g. the vendored file's ``file://`` URI)."""
    check_type("html", html, str)
    path = Path(check_type("path", path, (str, Path), what="a file path"))
    if js is not None:
        check_type("js", js, str)
        html = html.replace(json.dumps([BUILT_JS]), json.dumps([js])).replace(BUILT_JS, js)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{html}</body></html>")
    return path


def embedded_coordinates(html: str) -> list[np.ndarray]:
    """The coordinates of every model a view's HTML adds (``addModel`` mol blocks, in order), ``[N, 3]`` each:
    what the browser will draw (for tests)."""
    import re

    from rdkit import Chem

    check_type("html", html, str)
    out = []
    for text in re.findall(r'addModel\(("(?:[^"\\]|\\.)*"),"sdf"', html):
        m = Chem.MolFromMolBlock(json.loads(text), removeHs=False, sanitize=False)
        out.append(m.GetConformer().GetPositions())
    return out


__all__: Sequence[str] = ("BUILT_JS", "EDGE_COLORS", "JS_VERSION", "LIVE_JS", "PALETTE", "VENDORED_JS",
                          "align_to_reference", "conformer_view", "embedded_coordinates", "selector_html",
                          "view_html", "write_page")
