"""Let pytest run the book's MyST Markdown notebooks through nbmake.

nbmake 1.5.5 only collects ``*.ipynb``; the book's notebooks are ``.md`` files (jupytext/MyST). We collect
every ``book/**/*.md`` whose front matter declares a kernel, and let nbmake read it through ``jupytext``.
This relies on nbmake internals (``nbmake.nb_run.nbformat``), which is why requirements pin ``nbmake==1.5.5``.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import nbmake.nb_run
from nbmake.pytest_items import NotebookFile

BOOK = Path(__file__).parent / "book"


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


def pytest_collect_file(file_path: Path, parent):
    if is_myst_notebook(file_path):
        return NotebookFile.from_parent(parent, path=file_path)
    return None
