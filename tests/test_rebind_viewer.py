"""The offline 3-D conformer viewer (companion.rebind.viewer): alignment, the HTML it writes, and (with Debian's
chromium and playwright) that it renders in a browser with every outside request blocked."""

from __future__ import annotations

import functools
import io
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from chromium import launch, missing, offline_page

from companion import rebind as rb
from companion.rebind import viewer as vw



@functools.cache
def _acetone():
    return rb.molecule_from_smiles("CC(C)=O")


def _rotated(m, noise: float = 0.0):
    """The reference turned 90° about z and moved, with optional noise: what an alignment must undo."""
    rot = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    return m.coords @ rot + torch.tensor([1.0, -2.0, 3.0]) + noise * torch.randn(m.n_atoms, 3, generator=g)


def _edges(m):
    a, r = rb.force_edges(torch.cdist(m.coords, m.coords), m.z, m.adjacency, torch.ones(m.n_atoms, dtype=torch.bool))
    return {"attractive": a, "repulsive": r}


def test_alignment_undoes_a_rigid_motion():
    m = _acetone()
    back = vw.align_to_reference(m, _rotated(m))
    assert torch.allclose(back, m.coords.double(), atol=1e-5)
    noisy = vw.align_to_reference(m, _rotated(m, 0.1))
    before = (_rotated(m, 0.1).double() - m.coords.double()).norm(dim=1).pow(2).mean().sqrt()
    after = (noisy - m.coords.double()).norm(dim=1).pow(2).mean().sqrt()
    assert after < 0.2 < before
    # a rigid motion keeps every distance
    assert torch.allclose(torch.cdist(noisy, noisy), torch.cdist(*[_rotated(m, 0.1).double()] * 2), atol=1e-5)


def test_html_uses_the_vendored_script_and_embeds_the_aligned_coordinates():
    m = _acetone()
    pred, etkdg = _rotated(m, 0.1), rb.etkdg_predict([m], seed=1)[0]
    view = vw.conformer_view(m, {"ours": pred, "ETKDG": etkdg}, edges=_edges(m))
    html = vw.view_html(view, title="acetone")
    assert "cdn" not in html.lower() and "http://" not in html and "https://" not in html
    assert html.count(vw.BUILT_JS) >= 1 and vw.LIVE_JS in html
    models = vw.embedded_coordinates(html)
    assert len(models) == 3
    np.testing.assert_allclose(models[0], m.coords.numpy(), atol=1e-4)  # the reference as it is
    np.testing.assert_allclose(models[1], vw.align_to_reference(m, pred).numpy(), atol=1e-4)
    np.testing.assert_allclose(models[2], vw.align_to_reference(m, etkdg).numpy(), atol=1e-4)
    np.testing.assert_allclose(models[1], view.companion_coords["ours"].numpy(), atol=1e-4)
    # acetone's force edges on the reference: one dashed cylinder per unordered pair
    e = _edges(m)
    n = sum(int(((a != 0) | (a.T != 0)).triu(1).sum()) for a in e.values())
    assert html.count("addCylinder") == n > 0


def test_the_vendored_script_is_the_version_py3dmol_asks_for():
    import py3Dmol

    default = inspect.signature(py3Dmol.view.__init__).parameters["js"].default
    assert f"3dmol@{vw.JS_VERSION}/" in default
    assert vw.VENDORED_JS.is_file() and vw.VENDORED_JS.stat().st_size > 100_000
    assert (vw.VENDORED_JS.parent / "LICENSE.txt").is_file()
    assert "BSD" in (vw.VENDORED_JS.parent / "LICENSE.txt").read_text()


def test_selector_holds_one_precomputed_pane_per_molecule():
    ms = [_acetone(), rb.molecule_from_smiles("CCO")]
    views = {m.smiles: vw.conformer_view(m, {"ours": _rotated(m, 0.05)}) for m in ms}
    html = vw.selector_html(views)
    assert html.count("<option") == 2 and html.count('class="companion-3d-pane"') == 2
    assert html.count('style="display:block"') == 1
    ids = re.findall(r'data-viewer="(viewer_\w+)"', html)
    assert len(set(ids)) == 2 and all(f"var {i} = null" in html for i in ids)


def test_bad_input_is_named():
    m = _acetone()
    with pytest.raises(TypeError, match="mol"):
        vw.conformer_view("CC(C)=O")
    with pytest.raises(ValueError, match=r"coords must be \[10, 3\]"):
        vw.align_to_reference(m, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        vw.align_to_reference(m, torch.full((10, 3), float("nan")))
    with pytest.raises(ValueError, match="edges keys"):
        vw.conformer_view(m, edges={"bonds": m.adjacency})
    with pytest.raises(ValueError, match=r"edges\['repulsive'\]"):
        vw.conformer_view(m, edges={"repulsive": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="at most"):
        vw.conformer_view(m, {str(i): m.coords for i in range(len(vw.PALETTE) + 1)})
    with pytest.raises(ValueError, match="views must hold"):
        vw.selector_html({})
    with pytest.raises(TypeError, match="views"):
        vw.selector_html({"a": "<div>"})
    with pytest.raises(TypeError, match="width"):
        vw.conformer_view(m, width="400")


def _render(html_path: Path | str, panes: int, serve: dict[str, tuple[str, bytes]] | None = None) -> dict:
    """Open ``html_path`` (a file, or a URL answered from ``serve``: ``{url: (content type, body)}``) offline in
    headless Chromium, every other request but file: and data: aborted and recorded, switch through the
    selector, and return per pane the share of canvas pixels that are not background."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    shares = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            context, page = offline_page(browser, viewport={"width": 900, "height": 900}, serve=serve)
            page.goto(html_path if isinstance(html_path, str) else html_path.as_uri())
            page.wait_for_load_state("load")
            for k in range(panes):
                if k:
                    page.select_option("select", str(k))
                canvas = page.locator(f".companion-3d-pane[data-k='{k}'] canvas").first
                canvas.wait_for(state="visible", timeout=20_000)
                page.wait_for_timeout(500)
                rgb = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
                shares.append(float((np.abs(rgb - 255).sum(-1) > 30).mean()))
            scripts = page.eval_on_selector_all("script[src]", "els => els.map(e => e.src)")
        finally:
            browser.close()
    return {"blocked": page.blocked, "errors": page.errors, "shares": shares, "scripts": scripts}


def test_views_render_offline_in_a_browser(tmp_path):
    reason = missing()
    if reason:
        pytest.skip(reason)
    ms = [_acetone(), rb.molecule_from_smiles("CCO")]
    views = {m.smiles: vw.conformer_view(m, {"ours": _rotated(m, 0.05)}, edges=_edges(m)) for m in ms}
    # the page's relative URL points at the built book's copy; here the vendored file itself
    page = vw.write_page(tmp_path / "views.html", vw.selector_html(views), js=vw.VENDORED_JS.as_uri())
    got = _render(page, panes=2)
    assert not got["blocked"], f"requests that would leave the machine: {got['blocked']}"
    assert not got["errors"], got["errors"]
    assert got["scripts"] == [vw.VENDORED_JS.as_uri()]
    # a molecule covers a few percent of the canvas; a blank (unrendered) canvas is all background
    assert all(s > 0.005 for s in got["shares"]), got["shares"]


def test_views_load_the_vendored_script_through_a_jupyter_server(tmp_path):
    """A live kernel: the notebook's page is /lab/tree/book/rebind/<page> on a Jupyter server, which serves the
    checkout's files under /files/. Simulated offline: the two URLs are answered by the test, nothing else is."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    m = _acetone()
    html = vw.selector_html({m.smiles: vw.conformer_view(m, {"ours": _rotated(m, 0.05)}, edges=_edges(m))})
    page = vw.write_page(tmp_path / "live.html", html)  # as the kernel outputs it: the built-book URL untouched
    base = "http://127.0.0.1:8888"
    script = f"{base}/files/book/_vendor/_static/3dmol/3Dmol-min.js"
    serve = {f"{base}/lab/tree/book/rebind/conformers.md": ("text/html", page.read_bytes()),
             script: ("application/javascript", vw.VENDORED_JS.read_bytes())}
    got = _render(f"{base}/lab/tree/book/rebind/conformers.md", panes=1, serve=serve)
    assert not got["blocked"], f"requests not answered by the simulated server: {got['blocked']}"
    assert not got["errors"], got["errors"]
    assert got["scripts"] == [script]
    assert got["shares"][0] > 0.005, got["shares"]


BUILT_PAGE = Path(__file__).resolve().parents[1] / "_build" / "html" / "book" / "rebind" / "conformers.html"


def test_built_page_renders_the_views_offline():
    """The built book's page (``jupyter-book build .`` first): every view of the selector renders offline from the
    site's own _static/3dmol/3Dmol-min.js. Skipped without a build that has the views."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    if not BUILT_PAGE.is_file() or "companion-3d-selector" not in BUILT_PAGE.read_text(errors="replace"):
        pytest.skip(f"{BUILT_PAGE} not built with the 3-D views (run: jupyter-book build .)")
    panes = BUILT_PAGE.read_text(errors="replace").count('class="companion-3d-pane"')
    got = _render(BUILT_PAGE, panes=panes)
    assert not got["blocked"], f"requests that would leave the machine: {got['blocked']}"
    assert not [e for e in got["errors"] if "3Dmol" in e or "viewer" in e], got["errors"]
    assert any(s.endswith("/_static/3dmol/3Dmol-min.js") for s in got["scripts"]), got["scripts"]
    assert panes >= 1 and all(s > 0.005 for s in got["shares"]), got["shares"]
