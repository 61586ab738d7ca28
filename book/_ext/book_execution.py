"""Sphinx extension for the book's build: an execution cache keyed to the environment, and a per-page report.

1. **The cache follows the environment.** jupyter-cache re-executes a notebook only when its code cells change,
   so a page executed with other data, other packages or an edited ``companion`` would be served stale. At
   start-up this extension computes an environment key (:func:`environment_key`: the Python version, the
   version of every package that ``requirements.txt`` installs, and hashes of ``companion/`` and ``results/``);
   when it differs from the key the cache was built under, the notebook cache and Sphinx's saved environment
   are cleared, so every page is executed again.
2. **Each executed page is measured.** While a page is being executed (every page gets a fresh kernel), a
   background thread samples the resident memory of the build's child processes (the kernel and anything it
   starts, e.g. DeMo's workers) every 0.1 s. ``_build/execution-report.json`` records, per page, the seconds and
   the peak of the summed resident memory; ``.ci/exec_times.py`` prints it. Pages served from the cache keep the
   numbers of the run that executed them.
3. **The shared caches are prepared before any page runs.** The first load of the book's model converts its
   GGUF file into a float32 copy in the user cache (about 20 s and nearly 2 GB of memory), and the first use of
   the corpus tokenizes its validation split (tens of seconds); both happen once per machine. The build does
   them in a separate process at start-up, so that no page's time or memory includes them — as on Binder,
   where ``binder/postBuild`` does the same.
4. **Pages are executed for a static page.** The build sets ``COMPANION_PROGRESS=0`` (no progress bars: in a
   static page they are frozen widgets or wrapped text) and ``COMPANION_LIVE_WIDGETS=0`` (``companion.viz``
   widgets emit only their static player, not ipywidgets state that a static page cannot run) for the kernels it
   starts; a reader's own kernel has neither. Script tags that a theme extension registers twice (sphinx-thebe's
   configuration, which would redeclare a ``const``) are written once.

The same key is used by ``conftest.py``, which lets ``pytest`` accept a page that this build executed without
error under the same key instead of executing it a second time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY_FILE = "environment-key.json"
REPORT_FILE = "execution-report.json"


def _distribution_closure(names: list[str]) -> dict[str, str]:
    """``{name: version}`` of the installed distributions ``names`` and everything they require (markers
    evaluated for this interpreter, extras ignored)."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            seen[name] = "not installed"
            continue
        seen[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return dict(sorted(seen.items()))


def _requirement_names(path: Path) -> list[str]:
    """Distribution names listed in a requirements file (``-e .`` is the companion itself)."""
    from packaging.requirements import Requirement

    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or (line.startswith("-") and not line.startswith("-e")):
            continue  # pip options (--extra-index-url, -r, -c): not package names
        if line.startswith("-e") or line.startswith("."):
            names.append("companion")
            continue
        names.append(Requirement(line).name)
    return names


def _tree_hash(folder: Path, patterns: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for pattern in patterns:
        for f in sorted(folder.glob(pattern)):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(folder)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def environment_key(root: Path = ROOT) -> dict:
    """What a page's executed output depends on besides its own code cells.

    ``{"python", "machine", "packages": {name: version}, "companion": hash, "results": hash}``; the packages
    are those named in ``requirements.txt`` and their dependencies, so that optional peer libraries installed
    later (as CI does) do not count.
    """
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "packages": _distribution_closure(_requirement_names(root / "requirements.txt")),
        "companion": _tree_hash(root / "companion", ("**/*.py",)),
        "results": _tree_hash(root / "results", ("**/*.json", "**/*.csv")),
    }


def _sum_rss(children) -> int:
    total = 0
    for p in children:
        try:
            total += p.memory_info().rss
        except Exception:  # the process ended between listing and reading
            pass
    return total


class _PeakSampler:
    """Peak of the summed resident memory of this process's descendants, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self._me = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = time.perf_counter()
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _sum_rss(self._me.children(recursive=True)))
            self._stop.wait(self.interval)

    def stop(self) -> tuple[float, int]:
        self._stop.set()
        self._thread.join()
        return time.perf_counter() - self.start, self.peak


def _on_config_inited(app, config):
    build = Path(app.outdir).parent  # _build/html -> _build
    cache = Path(config.nb_execution_cache_path or build / ".jupyter_cache")
    key = environment_key()
    key_path = build / KEY_FILE
    old = None
    if key_path.is_file():
        try:
            old = json.loads(key_path.read_text())
        except ValueError:
            old = None
    if old != key:
        if old is not None:
            changed = sorted(k for k in key if old.get(k) != key[k])
            print(f"book_execution: the environment changed ({', '.join(changed)}): executing every page again")
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(app.doctreedir, ignore_errors=True)
        (build / REPORT_FILE).unlink(missing_ok=True)
        build.mkdir(parents=True, exist_ok=True)
        key_path.write_text(json.dumps(key, indent=1, sort_keys=True))
    app._book_execution = {"report": build / REPORT_FILE, "sampler": None}


def _prepare_caches() -> None:
    """Convert the book's model and tokenize the corpus's validation split into the user cache (no-ops when the
    cached copies are valid), in a subprocess."""
    import subprocess

    code = ("from companion.lab import corpus_tokens, load_model; "
            "corpus_tokens(load_model(device='cpu')[1], 'validation')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # the first page that needs the model will say what is wrong
        print(f"book_execution: preparing the caches failed:\n{done.stderr[-2000:]}")


def _on_source_read(app, docname, source):
    state = app._book_execution
    if state["sampler"] is not None:  # the previous page did not finish reading: drop its measurement
        state["sampler"][1].stop()
    state["sampler"] = (docname, _PeakSampler())


def _on_doctree_read(app, doctree):
    state = app._book_execution
    if state["sampler"] is None:
        return
    docname, sampler = state["sampler"]
    state["sampler"] = None
    seconds, peak = sampler.stop()
    if peak == 0:
        return  # no kernel ran: not a notebook, or served from the cache (keep what the executing run recorded)
    path = state["report"]
    report = json.loads(path.read_text()) if path.is_file() else {}
    report[docname] = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20, 1),
                       "executed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.write_text(json.dumps(report, indent=1, sort_keys=True))


def _unique_scripts(app, pagename, templatename, context, doctree):
    """Drop repeated script tags (same file or inline body, same attributes) from a page."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # sphinx-thebe's inline configuration reaches the page twice, once with filename None and once with "":
        # both mean "no file", and Sphinx's own check for repeats tells them apart
        attributes = getattr(js, "attributes", {}) or {}
        filename = getattr(js, "filename", js) or ""
        key = (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    os.environ["COMPANION_PROGRESS"] = "0"
    os.environ["COMPANION_LIVE_WIDGETS"] = "0"
    app.connect("config-inited", _on_config_inited, priority=100)
    app.connect("html-page-context", _unique_scripts, priority=900)
    app.connect("builder-inited", lambda app: _prepare_caches())
    app.connect("source-read", _on_source_read)
    app.connect("doctree-read", _on_doctree_read)
    return {"parallel_read_safe": False, "parallel_write_safe": True}


if __name__ == "__main__":  # print the environment key (for debugging a page that is executed again)
    json.dump(environment_key(), sys.stdout, indent=1, sort_keys=True)
