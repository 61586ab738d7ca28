"""Open the built chapter-0 widget page from disk in headless Chromium, offline, and move its control.

Needs the built book (``jupyter-book build .``) and Debian's ``chromium``. Skipped when either is missing,
unless ``COMPANION_REQUIRE_BROWSER=1`` (set by ``.ci/run`` after it builds the book), which turns the skip
into a failure.
"""

import os
import shutil
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "_build" / "html" / "book" / "lab" / "widgets.html"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REQUIRED = os.environ.get("COMPANION_REQUIRE_BROWSER") == "1"


def _missing() -> str | None:
    if not PAGE.is_file():
        return f"{PAGE} not built (run: jupyter-book build .)"
    if not Path(CHROMIUM).exists():
        return "chromium not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python package) not installed"
    return None


@pytest.fixture(scope="module")
def page():
    reason = _missing()
    if reason:
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-quic"],
        )
        context = browser.new_context(offline=True, viewport={"width": 1280, "height": 1600})
        blocked = []

        def only_local(route):
            if route.request.url.startswith(("file:", "data:")):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", only_local)
        pg = context.new_page()
        errors = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(PAGE.as_uri())
        pg.wait_for_load_state("load")
        pg.blocked, pg.errors = blocked, errors
        yield pg
        browser.close()


def test_layer_slider_changes_the_figure_offline(page):
    widget = page.locator(".companion-widget").first
    slider = widget.locator('input[type="range"]')
    image = widget.locator("img.cw-frame")
    readout = widget.locator("output")
    assert int(widget.get_attribute("data-frames")) == 30
    before_src, before_label = image.get_attribute("src"), readout.inner_text()
    assert before_label == "0"

    slider.focus()
    for _ in range(12):
        page.keyboard.press("ArrowRight")  # what a reader does: move the slider with the keyboard
    assert slider.input_value() == "12" and readout.inner_text() == "12"
    after_src = image.get_attribute("src")
    assert after_src.startswith("data:image/png;base64,") and after_src != before_src
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")  # the new frame decodes

    page.keyboard.press("Home")
    assert image.get_attribute("src") == before_src
    # sphinx-book-theme's thebe snippet is declared twice on every page (a theme bug, not ours)
    assert not [e for e in page.errors if "THEBE_JS_URL" not in e], page.errors


def test_widget_scripts_are_served_from_the_build(page):
    scripts = page.eval_on_selector_all("script[src]", "els => els.map(e => e.src)")
    widget_scripts = [s for s in scripts if s.split("?")[0].endswith(("/require.js", "/embed-amd.js"))]
    assert len(widget_scripts) == 2 and all(s.startswith("file:") for s in widget_scripts)
    assert not [u for u in page.blocked if "require" in u or "html-manager" in u or "embed-amd" in u]
