"""The book's plumbing: which pages are notebooks, a failing widget fails its page, the config is offline."""

from pathlib import Path

import importlib.util

import yaml
from nbmake.nb_run import NotebookRun

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("book_conftest", ROOT / "conftest.py")
root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(root_conftest)

FAILING = '''---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {name: python3, display_name: Python 3, language: python}
---

```{code-cell} ipython3
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from companion.viz import interact

def draw(k):
    if k == 2:
        raise ValueError("no figure for k=2")
    fig, ax = plt.subplots()
    ax.plot([0, k])
    return fig

interact(draw, {"k": range(4)})
```
'''


def test_notebook_pages_are_collected_and_plain_pages_are_not():
    assert root_conftest.is_myst_notebook(ROOT / "book" / "lab" / "model.md")
    assert root_conftest.is_myst_notebook(ROOT / "book" / "lab" / "widgets.md")
    assert not root_conftest.is_myst_notebook(ROOT / "book" / "lab" / "index.md")
    assert not root_conftest.is_myst_notebook(ROOT / "README.md")


def test_a_widget_that_fails_for_one_value_fails_its_notebook(tmp_path):
    page = tmp_path / "failing.md"
    page.write_text(FAILING)
    result = NotebookRun(page, 120).execute()
    assert result.error is not None
    assert "draw(k=2) raised ValueError: no figure for k=2" in result.error.trace


def test_every_page_in_the_toc_exists_and_every_book_page_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            files.append(chapter["file"])
            files += [s["file"] for s in chapter.get("sections", [])]
    assert all((ROOT / f"{f}.md").is_file() for f in files), files
    pages = {str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "book").rglob("*.md") if "_vendor" not in p.parts}
    assert pages == set(files)


def test_build_config_executes_strictly_and_serves_scripts_locally():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["raise_on_error"] is True and cfg["execute"]["execute_notebooks"] == "cache"
    sphinx = cfg["sphinx"]["config"]
    assert all("://" not in url for url in sphinx["nb_ipywidgets_js"]) and "://" not in sphinx["mathjax_path"]
    vendor = ROOT / sphinx["html_extra_path"][0] / "_static"
    for url in [*sphinx["nb_ipywidgets_js"], sphinx["mathjax_path"]]:
        assert (vendor / url).is_file(), url
