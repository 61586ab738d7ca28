"""The user cache folder and atomic writes into it.

Everything the companion derives from inputs it cannot ship (the dequantized model, tokenized corpora) lives
in one cache folder, ``$COMPANION_CACHE`` when that is set, else the platform's user cache folder
(``~/.cache/companion`` on Linux). Every write goes to a temporary name first and is renamed into place, so
an interrupted run leaves either the old entry or nothing, never half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

ENV_VAR = "COMPANION_CACHE"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
        return True
    except OSError:
        return False


def cache_dir(*parts: str) -> Path:
    """Return (and create) the cache folder, or a sub-folder of it.

    Order of preference: ``$COMPANION_CACHE``, the platform's user cache folder, then a folder in the
    system's temporary directory (with a warning) when neither is writable.
    """
    from platformdirs import user_cache_dir

    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"parts must be folder names (str), got {part!r} ({type(part).__name__})")
        if not part or part in (".", "..") or "/" in part or "\\" in part:
            raise ValueError(f"parts must be plain folder names (no '/', '..' or ''), got {part!r}")
    env = os.environ.get(ENV_VAR)
    candidates = [Path(env).expanduser()] if env else [Path(user_cache_dir("companion", appauthor=False))]
    for root in candidates:
        if _writable(root):
            break
    else:
        fallback = Path(tempfile.gettempdir()) / f"companion-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        if not _writable(fallback):
            raise PermissionError(
                f"No writable cache folder: tried {candidates[0]} and {fallback}. "
                f"Set the environment variable {ENV_VAR} to a folder you can write to."
            )
        warnings.warn(
            f"Cache folder {candidates[0]} is not writable; using {fallback} instead "
            f"(set {ENV_VAR} to choose another).",
            stacklevel=2,
        )
        root = fallback
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path`` in one step.

    ``write`` receives a temporary path in the same folder (so the rename is atomic) and must create the
    file there. On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 8 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, extra: dict[str, Any] | None = None) -> Path:
    """Record size and SHA-256 of every file in ``folder`` in ``folder/manifest.json``."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }
    return atomic_write_json(folder / "manifest.json", {"files": files, **(extra or {})})


def check_manifest(folder: Path, *, verify_digests: bool = True) -> str | None:
    """Return ``None`` when ``folder`` matches its manifest, else a sentence saying what is wrong."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return f"{manifest} is missing (an interrupted build?)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"{manifest} is unreadable ({err})"
    for name, meta in files.items():
        p = folder / name
        if not p.is_file():
            return f"{p} is missing"
        if p.stat().st_size != meta["size"]:
            return f"{p} has {p.stat().st_size} bytes, expected {meta['size']} (truncated?)"
        if verify_digests and file_digest(p) != meta["sha256"]:
            return f"{p} does not match its SHA-256 (corrupted?)"
    return None


def replace_dir(src: Path, dst: Path) -> Path:
    """Move the finished folder ``src`` to ``dst``, replacing whatever was at ``dst``."""
    if dst.exists():
        stale = dst.with_name(f".{dst.name}.stale-{uuid.uuid4().hex}")
        os.replace(dst, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(src, dst)
    return dst
