"""The book's plumbing: which pages are notebooks, a failing widget fails its page, the config is offline."""

import importlib.metadata
import importlib.util
import json
from pathlib import Path

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
    assert root_conftest.is_myst_notebook(ROOT / "book" / "lab" / "attention.md")
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


# ---------------------------------------------------------------- the execution cache follows the environment

_spec = importlib.util.spec_from_file_location("book_execution", ROOT / "book" / "_ext" / "book_execution.py")
book_execution = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_execution)


def _mini_project(root: Path) -> Path:
    (root / "companion").mkdir(parents=True)
    (root / "companion" / "a.py").write_text("x = 1\n")
    (root / "results").mkdir()
    (root / "results" / "r.json").write_text("{}")
    (root / "requirements.txt").write_text("# comment\n--extra-index-url https://x\n-r other.txt\npyyaml>=6\n-e .\n")
    return root


def test_environment_key_changes_with_companion_results_and_packages(tmp_path):
    root = _mini_project(tmp_path)
    key = book_execution.environment_key(root)
    assert key["packages"]["pyyaml"] == importlib.metadata.version("pyyaml")
    assert book_execution.environment_key(root) == key
    (root / "companion" / "a.py").write_text("x = 2\n")
    assert book_execution.environment_key(root)["companion"] != key["companion"]
    (root / "results" / "r.json").write_text('{"a": 1}')
    assert book_execution.environment_key(root)["results"] != key["results"]
    (root / "requirements.txt").write_text("pyyaml>=6\nnbformat\n")
    assert "nbformat" in book_execution.environment_key(root)["packages"]


def test_package_closure_follows_dependencies():
    closure = book_execution._distribution_closure(["nbmake"])
    assert {"nbmake", "nbclient", "nbformat", "ipykernel"} <= set(closure)
    assert closure["nbformat"] == importlib.metadata.version("nbformat")


class _App:
    def __init__(self, build: Path):
        self.outdir = str(build / "html")
        self.doctreedir = str(build / ".doctrees")


class _Config:
    nb_execution_cache_path = ""


def test_a_changed_environment_clears_the_execution_cache_and_saved_doctrees(tmp_path):
    build = tmp_path / "_build"
    cache, doctrees = build / ".jupyter_cache", build / ".doctrees"
    for d in (cache, doctrees):
        d.mkdir(parents=True)
        (d / "stale").write_text("x")
    (build / book_execution.KEY_FILE).write_text('{"python": "0.0"}')
    book_execution._on_config_inited(_App(build), _Config())
    assert not cache.exists() and not doctrees.exists()
    assert json.loads((build / book_execution.KEY_FILE).read_text()) == book_execution.environment_key()
    # the same environment again: the cache is kept
    cache.mkdir()
    (cache / "fresh").write_text("x")
    book_execution._on_config_inited(_App(build), _Config())
    assert (cache / "fresh").exists()


def test_a_page_passes_on_the_builds_execution_only_when_code_and_environment_match(tmp_path, monkeypatch):
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    page = tmp_path / "page.md"
    page.write_text(FAILING.replace("interact(draw, {\"k\": range(4)})", "print(1)"))
    build = tmp_path / "_build"
    monkeypatch.setattr(root_conftest, "BUILD", build)
    assert root_conftest.executed_by_build(page) is None  # no build at all
    nb = read_myst_markdown_notebook(page.read_text(), config=MdParserConfig(), add_source_map=True, path=str(page))
    cache = get_cache(str(build / ".jupyter_cache"))
    cache.cache_notebook_bundle(CacheBundleIn(nb, str(page), data={"execution_seconds": 3.0}), check_validity=False)
    assert root_conftest.executed_by_build(page) is None  # no environment key recorded
    (build / book_execution.KEY_FILE).write_text(json.dumps(book_execution.environment_key(ROOT)))
    assert "executed without error by the book build" in root_conftest.executed_by_build(page)
    monkeypatch.setenv("COMPANION_EXECUTE_ALL_PAGES", "1")
    assert root_conftest.executed_by_build(page) is None
    monkeypatch.delenv("COMPANION_EXECUTE_ALL_PAGES")
    page.write_text(page.read_text().replace("print(1)", "print(2)"))
    assert root_conftest.executed_by_build(page) is None  # the code changed
    page.write_text(page.read_text().replace("print(2)", "print(1)"))
    (build / book_execution.KEY_FILE).write_text(json.dumps({"python": "0.0"}))
    assert root_conftest.executed_by_build(page) is None  # another environment


def test_the_widget_index_lists_every_page_with_a_widget():
    """book/contributing.md's table of widgets names exactly the pages whose code calls viz.interact."""
    import re

    index = (ROOT / "book" / "contributing.md").read_text()
    listed = set(re.findall(r"^\| \{doc\}`([\w/]+)` \|", index, re.M))
    with_widgets = {str(p.relative_to(ROOT / "book").with_suffix("")) for p in (ROOT / "book").rglob("*.md")
                    if re.search(r"^\s*(\w+ = )?viz\.interact\(", p.read_text(), re.M) and p.name != "contributing.md"}
    assert listed == with_widgets, f"listed but without a widget: {listed - with_widgets}; missing: {with_widgets - listed}"


def test_every_glossary_term_is_linked_from_a_page():
    """Each term of book/glossary.md is linked ({term}) from at least one other page, where it is first used."""
    import re

    glossary = (ROOT / "book" / "glossary.md").read_text()
    terms = {line for block in re.findall(r"```\{glossary\}\n(.*?)```", glossary, re.S)
             for line in block.splitlines() if line and not line.startswith(" ")}
    assert len(terms) >= 20, terms
    linked = set()
    for page in (ROOT / "book").rglob("*.md"):
        if page.name != "glossary.md":
            for text in re.findall(r"\{term\}`([^`]*)`", page.read_text()):
                linked.add(re.sub(r"^.*<(.*)>$", r"\1", text).strip())
    assert not linked - terms, f"links to terms the glossary does not define: {linked - terms}"
    assert terms <= linked, f"glossary terms no page links to: {sorted(terms - linked)}"
