"""A real text corpus that every reader already has: the Python standard library's own source.

``load_corpus`` walks ``sysconfig.get_paths()["stdlib"]`` and keeps every ``.py`` file outside test suites,
``site-packages`` and ``__pycache__``, in sorted order of relative path. A file goes to the validation split
when the first byte of the SHA-1 of its relative path is below 13 (about 5% of files, chosen by name so the
split does not move when a Python release adds or removes other files), else to the training split.

On CPython 3.11.7 that is 734 files and 12.1 M characters: 704 training files (11.63 M characters) and 30
validation files (0.49 M characters).
Other Python versions give a slightly different corpus; ``Corpus.python_version`` records which one you have.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .cache import atomic_write, cache_dir
from .checks import check_choice, check_int
from .runtime import progress

SPLITS = ("train", "validation")
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class Corpus:
    """One split of the standard-library corpus.

    Attributes:
        split: ``"train"`` or ``"validation"``.
        paths: relative paths of the files, in order.
        documents: the source text of each file (UTF-8, undecodable bytes replaced).
        python_version: the CPython version whose standard library this is.
    """

    split: str
    paths: tuple[str, ...]
    documents: tuple[str, ...] = field(repr=False)
    python_version: str

    @property
    def text(self) -> str:
        """All documents joined by blank lines."""
        return "\n\n".join(self.documents)

    @property
    def num_chars(self) -> int:
        return sum(len(d) for d in self.documents)

    def __len__(self) -> int:
        return len(self.documents)

    def describe(self) -> str:
        return (
            f"Python {self.python_version} standard library, {self.split} split: "
            f"{len(self)} files, {self.num_chars / 1e6:.2f} M characters"
        )

    def fingerprint(self) -> str:
        """A short digest of the split's contents (used as a cache key)."""
        h = hashlib.sha256(self.split.encode())
        for p, d in zip(self.paths, self.documents):
            h.update(p.encode())
            h.update(hashlib.sha256(d.encode()).digest())
        return h.hexdigest()[:16]


def _is_validation(relpath: str) -> bool:
    return hashlib.sha1(relpath.encode()).digest()[0] < 13


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """All corpus files under the standard library folder, sorted by relative path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = (p for p in root.rglob("*.py") if not _EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1]))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def load_corpus(split: Literal["train", "validation"] = "train") -> Corpus:
    """Load one split of the standard-library corpus (see the module docstring for the rule)."""
    check_choice("split", split, SPLITS)
    root = Path(sysconfig.get_paths()["stdlib"])
    paths, docs = [], []
    for p in stdlib_files(root):
        rel = p.relative_to(root).as_posix()
        if _is_validation(rel) == (split == "validation"):
            paths.append(rel)
            docs.append(p.read_bytes().decode("utf-8", errors="replace"))
    if not docs:
        raise FileNotFoundError(f"No Python source files found under {root}; is the standard library installed?")
    return Corpus(split, tuple(paths), tuple(docs), platform.python_version())


def tokenizer_fingerprint(tokenizer) -> str:
    """A short digest that changes whenever the tokenizer's vocabulary or rules change."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def corpus_tokens(tokenizer, split: Literal["train", "validation"] = "validation", *, max_tokens: int | None = None) -> torch.Tensor:
    """The split's token ids as one long 1-D ``int64`` tensor, documents separated by the EOS token.

    Tokenizing the training split takes tens of seconds, so the result is cached on disk, keyed by the
    tokenizer's and the corpus's fingerprints; a damaged cache file is rebuilt.

    Args:
        tokenizer: a Hugging Face tokenizer (fast or slow).
        split: ``"train"`` or ``"validation"``.
        max_tokens: return only the first ``max_tokens`` ids (the whole split is still cached).
    Returns:
        ``LongTensor[num_tokens]``.
    """
    if max_tokens is not None:
        max_tokens = check_int("max_tokens", max_tokens, low=1)
    corpus = load_corpus(split)
    path = cache_dir("tokens") / f"{split}-{corpus.fingerprint()}-{tokenizer_fingerprint(tokenizer)}.npy"
    ids = None
    if path.exists():
        try:
            ids = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            path.unlink(missing_ok=True)  # damaged: rebuild below
    if ids is None:
        sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        chunks = []
        docs = list(corpus.documents)
        step = 32
        for i in progress(range(0, len(docs), step), desc=f"tokenizing {split}", total=-(-len(docs) // step)):
            for enc in tokenizer(docs[i : i + step], add_special_tokens=False).input_ids:
                chunks.append(np.asarray(enc + sep, dtype=np.int32))
        ids = np.concatenate(chunks)

        def _save(tmp):
            with open(tmp, "wb") as f:
                np.save(f, ids)

        atomic_write(path, _save)
    ids = torch.from_numpy(ids.astype(np.int64))
    return ids if max_tokens is None else ids[:max_tokens]
