"""Open every page of the built book from disk in headless Chromium, offline, as a reader would.

Per page (every file of ``_toc.yml``): no script error or console error, no failed request and no request that
leaves the machine, no raw TeX left in the text, no build noise (progress bars, "skipped", the build machine's
paths, a stray return value printed by a cell), no slider with a single position, and every control of every
widget changes its figure. The chapter-0 attention widget is also moved with the keyboard.

Needs the built book (``jupyter-book build .``) and Debian's ``chromium``. Skipped when either is missing,
unless ``COMPANION_REQUIRE_BROWSER=1`` (set by ``.ci/run`` after it builds the book), which turns the skip
into a failure.
"""

import os
import re
from pathlib import Path

import pytest
import yaml
from chromium import launch, missing, offline_page

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
REQUIRED = os.environ.get("COMPANION_REQUIRE_BROWSER") == "1"


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


PAGES = _toc_files()


def _missing() -> str | None:
    if not (HTML / "index.html").is_file():
        return f"{HTML} not built (run: jupyter-book build .)"
    return missing()


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        yield browser
        browser.close()


def _open(browser, doc: str):
    """A fresh offline page with ``doc`` loaded; records errors, failed and outside requests."""
    path = HTML / f"{doc}.html"
    if not path.is_file():
        pytest.fail(f"{path} is in _toc.yml but was not built")
    # pydata-sphinx-theme logs a console error on a reader's very first visit (no saved light/dark mode yet);
    # a saved mode is what every later visit has
    context, page = offline_page(browser, viewport={"width": 1280, "height": 1600}, init_script=(
        "try { localStorage.setItem('mode', 'auto'); localStorage.setItem('theme', 'auto') } catch (e) {}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    page.wait_for_timeout(200)
    return context, page


_VISIBLE_TEXT = """() => {
  const main = (document.querySelector('main') || document.body).cloneNode(true);
  main.querySelectorAll('pre, code, script, style, mjx-container, .MathJax, .cell_input').forEach(e => e.remove());
  return main.innerText;
}"""
_RAW_TEX = re.compile(r"\$[^$\s][^$\n]{0,60}\$|\\\(|\\\[|\\frac|\\mathrm|\\text\{|\$_\{?\w")
_NOISE = re.compile(r"\d+it/s\]|\bit/s\b|\d+/\d+ \[\d\d:\d\d|is not installed|skipped|/root/|/home/\w+/|/tmp/|\.cache/companion")


@pytest.mark.parametrize("doc", PAGES)
def test_page_reads_cleanly_offline(browser, doc):
    context, page = _open(browser, doc)
    try:
        assert not page.errors, page.errors
        assert not page.failed, f"requests that failed: {page.failed}"
        assert not page.blocked, f"requests that would leave the machine: {page.blocked}"
        text = page.evaluate(_VISIBLE_TEXT)
        assert not _RAW_TEX.findall(text), f"raw TeX in the text: {_RAW_TEX.findall(text)[:5]}"
        outputs = page.eval_on_selector_all(".cell_output", "els => els.map(e => e.innerText.trim())")
        noise = [o[:120] for o in outputs if _NOISE.search(o)]
        assert not noise, f"build noise in outputs: {noise}"
        stray = [o for o in outputs if re.fullmatch(r"-?\d+|None|\[\]|<Figure size [^>]*>", o)]
        assert not stray, f"outputs that are a stray return value: {stray}"
        widget_scripts = page.eval_on_selector_all(
            "script[src]", "els => els.map(e => e.src).filter(s => /require\\.js|embed-amd\\.js|html-manager/.test(s))")
        assert not widget_scripts, f"the ipywidgets manager is loaded but the static page has no live widget: {widget_scripts}"
    finally:
        context.close()


@pytest.mark.parametrize("doc", PAGES)
def test_every_widget_control_changes_the_figure(browser, doc):
    context, page = _open(browser, doc)
    try:
        single = page.eval_on_selector_all('input[type="range"]', "els => els.filter(e => e.max === e.min).length")
        assert single == 0, f"{single} slider(s) with a single position"
        widgets = page.locator(".companion-widget")
        for w in range(widgets.count()):
            widget = widgets.nth(w)
            image = widget.locator("img.cw-frame")
            for c in range(widget.locator("[data-k]").count()):
                control = widget.locator("[data-k]").nth(c)
                name = control.get_attribute("aria-label")
                before = image.get_attribute("src")
                if control.evaluate("e => e.tagName") == "SELECT":
                    options = control.locator("option")
                    current = control.input_value()
                    other = next(options.nth(i).get_attribute("value") for i in range(options.count())
                                 if options.nth(i).get_attribute("value") != current)
                    control.select_option(other)
                    restore = lambda: control.select_option(current)  # noqa: E731
                else:
                    current = control.input_value()
                    other = "1" if current == "0" else "0"
                    control.evaluate("(e, v) => { e.value = v; e.dispatchEvent(new Event('input')) }", other)
                    restore = lambda: control.evaluate(  # noqa: E731
                        "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')) }", current)
                after = image.get_attribute("src")
                assert after != before, f"widget {w}: moving {name!r} did not change the figure"
                assert image.evaluate("img => img.complete && img.naturalWidth > 0"), f"widget {w}: {name!r} frame does not decode"
                restore()
                assert image.get_attribute("src") == before
    finally:
        context.close()


def test_attention_slider_moves_with_the_keyboard(browser):
    context, page = _open(browser, "book/lab/attention")
    try:
        widget = page.locator(".companion-widget").first
        slider = widget.locator('input[type="range"]')
        image = widget.locator("img.cw-frame")
        readout = widget.locator("output")
        assert int(widget.get_attribute("data-frames")) == 30
        before_src = image.get_attribute("src")
        assert readout.inner_text() == "0"
        slider.focus()
        for _ in range(12):
            page.keyboard.press("ArrowRight")  # what a reader does: move the slider with the keyboard
        assert slider.input_value() == "12" and readout.inner_text() == "12"
        assert image.get_attribute("src").startswith("data:image/png;base64,") and image.get_attribute("src") != before_src
        page.keyboard.press("Home")
        assert image.get_attribute("src") == before_src
    finally:
        context.close()
