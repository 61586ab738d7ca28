"""Headless Chromium for the tests that render pages (tests/test_browser.py, tests/test_rebind_viewer.py):
Debian's ``chromium`` driven by playwright, offline, every request that would leave the machine blocked."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]


def missing() -> str | None:
    """Why Chromium cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return "chromium not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python package) not installed"
    return None


def launch(playwright):
    """Debian's Chromium, headless."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def offline_page(browser, *, viewport: dict, serve: dict[str, tuple[str, bytes]] | None = None, init_script=None):
    """A new offline context and page: file: and data: requests load, a URL in ``serve`` (``{url: (content type,
    body)}``) is answered from it, every other request is aborted and recorded. Returns ``(context, page)``;
    ``page.blocked`` (outside requests), ``page.failed`` (failed requests) and ``page.errors`` (script and console
    errors) fill as the page runs."""
    context = browser.new_context(offline=True, viewport=viewport)
    if init_script:
        context.add_init_script(init_script)
    blocked, failed, errors = [], [], []

    def only_local(route):
        if serve and route.request.url in serve:
            kind, body = serve[route.request.url]
            route.fulfill(status=200, content_type=kind, body=body)
        elif route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("requestfailed", lambda req: failed.append(req.url))
    page.blocked, page.failed, page.errors = blocked, failed, errors
    return context, page
