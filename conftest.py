"""Let pytest run the book's MyST Markdown notebooks through nbmake, once per environment.

nbmake 1.5.5 only collects ``*.ipynb``; the book's notebooks are ``.md`` files (jupytext/MyST). We collect
every ``book/**/*.md`` whose front matter declares a kernel, and let nbmake read it through ``jupytext``.
This relies on nbmake internals (``nbmake.nb_run.nbformat``), which is why requirements pin ``nbmake==1.5.5``.

A page that the last ``jupyter-book build`` executed without error, with the same code cells and under the same
environment key (``book/_ext/book_execution.py``: packages, ``companion/``, ``results/``), is not executed a
second time: its test passes on that execution's record, and says so in the report. Anything else (no build,
an edited page, another environment) is executed here. ``rm -r _build`` or ``COMPANION_EXECUTE_ALL_PAGES=1``
makes ``pytest`` execute every page.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import nbmake.nb_run
from nbmake.pytest_items import NotebookFile, NotebookItem

ROOT = Path(__file__).parent
BOOK = ROOT / "book"
BUILD = ROOT / "_build"


class _NbformatReadingMyst:
    """``nbformat`` as nbmake sees it, except that ``read`` also accepts MyST ``.md`` notebooks."""

    def __getattr__(self, name):
        return getattr(nbformat, name)

    @staticmethod
    def read(path, as_version, **kwargs):
        if str(path).endswith(".md"):
            return jupytext.read(path)
        return nbformat.read(path, as_version, **kwargs)


nbmake.nb_run.nbformat = _NbformatReadingMyst()


def is_myst_notebook(path: Path) -> bool:
    """A Markdown file under book/ whose front matter names a kernel (i.e. an executable page)."""
    if path.suffix != ".md" or BOOK not in path.resolve().parents:
        return False
    head = path.read_text(encoding="utf-8")[:2000]
    return head.startswith("---") and "kernelspec:" in head.split("\n---", 1)[0]


def executed_by_build(path: Path) -> str | None:
    """When the last book build executed ``path`` as it is now, under the current environment key: a line saying
    so (time, seconds); else ``None``."""
    import importlib.util
    import json
    import os

    if os.environ.get("COMPANION_EXECUTE_ALL_PAGES", "0") not in ("", "0"):
        return None
    key_file = BUILD / "environment-key.json"
    cache_dir = BUILD / ".jupyter_cache"
    if not key_file.is_file() or not cache_dir.is_dir():
        return None
    spec = importlib.util.spec_from_file_location("book_execution", BOOK / "_ext" / "book_execution.py")
    book_execution = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book_execution)
    try:
        if json.loads(key_file.read_text()) != book_execution.environment_key(ROOT):
            return None
    except ValueError:
        return None
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    nb = read_myst_markdown_notebook(path.read_text(encoding="utf-8"), config=MdParserConfig(),
                                     add_source_map=True, path=str(path))
    try:
        record = get_cache(str(cache_dir)).match_cache_notebook(nb)
    except KeyError:
        return None
    return (f"executed without error by the book build of {record.created:%Y-%m-%d %H:%M} UTC "
            f"({record.data.get('execution_seconds', float('nan')):.0f} s), same code and environment")


class BookPage(NotebookItem):
    """A book page: executed by nbmake unless the last book build already executed it as it is now."""

    def runtest(self):
        done = executed_by_build(Path(self.filename))
        if done is None:
            super().runtest()
        else:
            self.user_properties.append(("execution", done))


class BookPageFile(NotebookFile):
    def collect(self):
        yield BookPage.from_parent(self, filename=str(self.path))


def pytest_collect_file(file_path: Path, parent):
    if is_myst_notebook(file_path):
        return BookPageFile.from_parent(parent, path=file_path)
    return None


def pytest_terminal_summary(terminalreporter):
    reused = [r for r in terminalreporter.stats.get("passed", []) if dict(r.user_properties).get("execution")]
    if reused:
        terminalreporter.write_line(f"{len(reused)} book pages passed on the book build's execution "
                                    "(same code cells and environment; rm -r _build to execute them here):")
        for r in reused:
            terminalreporter.write_line(f"  {r.nodeid}: {dict(r.user_properties)['execution']}")
