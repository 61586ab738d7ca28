"""Results of full-mode experiments, written with their provenance.

A full-mode run (``python -m companion <chapter> <experiment> --full``) saves a JSON file under
``results/<chapter>/`` at the repository root; the notebooks show those committed files beside their live
quick runs. Every file carries a ``provenance`` block: the command, the package version, the seed, the date
and the machine, so a reader can tell where each number came from.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from .cache import atomic_write_json
from .checks import check_int, check_type

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"


def _command_line() -> str:
    """How this process was started, e.g. ``python -m companion lab perplexity --full``."""
    script = Path(sys.argv[0])
    prog = f"python -m {script.parent.name}" if script.name == "__main__.py" else script.name
    return " ".join([prog, *(shlex.quote(a) for a in sys.argv[1:])])


def _git_commit() -> str | None:
    """The repository's commit (with ``+dirty`` when tracked files differ from it), or ``None`` outside git."""
    import subprocess

    root = RESULTS_DIR.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(*, seed: int | None, command: str | None = None) -> dict[str, Any]:
    """Where a result came from: command line, companion version and git commit, Python and torch versions,
    seed, UTC date, machine (platform, CPU model, cores, GPU)."""
    import torch

    import companion

    if seed is not None:
        seed = check_int("seed", seed)
    if command is not None:
        check_type("command", command, str)
    return {
        "command": command if command is not None else _command_line(),
        "companion_version": companion.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "seed": seed,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }


def _check_names(chapter: str, name: str) -> None:
    for label, value in (("chapter", chapter), ("name", name)):
        if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
            raise ValueError(f"{label} must be a plain non-empty name without '/', got {value!r}")


def save_results(chapter: str, name: str, payload: dict[str, Any], *, seed: int | None, command: str | None = None,
                 folder: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` plus its provenance to ``<folder>/<chapter>/<name>.json`` (atomically)."""
    _check_names(chapter, name)
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    path = Path(folder or RESULTS_DIR) / chapter / f"{name}.json"
    return atomic_write_json(path, {"provenance": provenance(seed=seed, command=command), **payload})


def load_results(chapter: str, name: str, *, folder: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The committed results of ``<chapter>/<name>``, or ``None`` when no full run has been saved."""
    _check_names(chapter, name)
    path = Path(folder or RESULTS_DIR) / chapter / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def benchmark_payload(script: str, settings: dict[str, Any], measurements: dict[str, Any],
                      ratios: dict[str, float]) -> dict[str, Any]:
    """The ledger entry of a benchmark (``benchmarks/<script>.py``): its settings (every option but ``save``),
    torch's thread count, the raw measurements, and the ratios it prints (each against a baseline run in the
    same process)."""
    import torch

    return {"benchmark": script, "settings": {k: v for k, v in settings.items() if k != "save"},
            "threads": torch.get_num_threads(), "measurements": measurements, "ratios": ratios}


def save_benchmark(chapter: str, name: str, payload: dict[str, Any], *, argv: list[str],
                   seed: int | None = None) -> Path:
    """:func:`save_results` for a :func:`benchmark_payload`, with the command line that reproduces it."""
    command = " ".join(["python", f"benchmarks/{payload['benchmark']}.py", *map(shlex.quote, argv)])
    return save_results(chapter, name, payload, seed=seed, command=command)

