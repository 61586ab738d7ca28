"""The chapter's tokenizer: a small byte-level BPE trained on the standard-library corpus's training split.

The paper used GPT-2's tokenizer (50257 tokens) on the Pile; a vocabulary that large would dominate the
parameters of a CPU-sized model, so we train a byte-level BPE of 4096 tokens (Hugging Face ``tokenizers``:
ByteLevel pre-tokenizer and decoder, as GPT-2) on the training split, with ``<|endoftext|>`` (id 0) separating
documents. Training takes tens of seconds, so the tokenizer (JSON) and the token ids of each split (``.npy``)
are cached under ``<cache>/remoe/``, keyed by the corpus's fingerprint and the settings; writes are atomic and a
damaged or missing file is rebuilt with a warning, never fatal.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import torch

from companion.lab.cache import atomic_write, cache_dir
from companion.lab.checks import check_choice, check_int, check_type, describe
from companion.lab.corpus import SPLITS, load_corpus

EOS = "<|endoftext|>"
_FORMAT = 1  # bump when the tokenizer recipe changes


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 4096):
    """Train a byte-level BPE (``tokenizers.Tokenizer``) on ``texts`` with ``<|endoftext|>`` as id 0.

    Args:
        texts: the training documents.
        vocab_size: size of the vocabulary, including the 256 byte symbols and the EOS token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    vocab_size = check_int("vocab_size", vocab_size, low=258)  # 256 bytes + EOS + one merge
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of documents (strings), not a single string")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"texts must be an iterable of documents (strings), got {describe(texts)}") from None
    for i, text in enumerate(texts):
        check_type(f"texts[{i}]", text, str, what="a document (str)")
    if not any(texts):
        raise ValueError("texts must hold at least one non-empty document, got "
                         + ("none" if not texts else f"{len(texts)} empty ones"))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


@functools.lru_cache(maxsize=2)
def _corpus(split: str):
    """The split, read once per process (the corpus is immutable; reading it takes a fraction of a second)."""
    return load_corpus(split)


def _documents(split: str, max_chars: int | None):
    corpus = _corpus(split)
    docs = list(corpus.documents)
    if max_chars is not None:
        kept, total = [], 0
        for d in docs:
            if total >= max_chars:
                break
            kept.append(d[: max_chars - total])
            total += len(kept[-1])
        docs = kept
    return corpus, docs


def _check_max_chars(max_chars) -> int | None:
    return None if max_chars is None else check_int("max_chars", max_chars, low=1)


def tokenizer_path(*, vocab_size: int = 4096, max_chars: int | None = None) -> Path:
    """Where :func:`load_tokenizer` caches the tokenizer for these settings."""
    corpus = _corpus("train")
    size = "all" if max_chars is None else str(max_chars)
    return cache_dir("remoe") / f"bpe{vocab_size}-v{_FORMAT}-{corpus.fingerprint()}-{size}.json"


def load_tokenizer(*, vocab_size: int = 4096, max_chars: int | None = None, rebuild: bool = False):
    """The chapter's BPE tokenizer, trained once on the training split and then read from the cache.

    Args:
        vocab_size: vocabulary size (4096).
        max_chars: train on only the first ``max_chars`` characters of the split (for tests); ``None``: all.
        rebuild: train again even when a cached copy loads.
    Returns:
        A ``tokenizers.Tokenizer``; ``tokenizer.token_to_id("<|endoftext|>") == 0``.
    """
    from tokenizers import Tokenizer

    max_chars = _check_max_chars(max_chars)
    vocab_size = check_int("vocab_size", vocab_size, low=258)
    check_type("rebuild", rebuild, bool)
    path = tokenizer_path(vocab_size=vocab_size, max_chars=max_chars)
    if path.exists() and not rebuild:
        try:
            tok = Tokenizer.from_file(str(path))
            if tok.token_to_id(EOS) == 0:
                return tok
            problem = "it has no <|endoftext|> token at id 0"
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            problem = f"it does not load ({str(err)[:120]})"
        warnings.warn(f"Rebuilding the cached tokenizer {path.name}: {problem}.", stacklevel=2)
    _, docs = _documents("train", max_chars)
    tok = train_tokenizer(docs, vocab_size=vocab_size)
    text = tok.to_str()
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return tok


def tokenizer_fingerprint(tokenizer) -> str:
    """A short digest of the tokenizer's vocabulary and rules."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def corpus_ids(split: Literal["train", "validation"] = "train", *, tokenizer=None, vocab_size: int = 4096,
               max_chars: int | None = None) -> torch.Tensor:
    """Token ids of one split as a 1-D ``LongTensor``, documents separated by ``<|endoftext|>`` (id 0).

    Cached as ``.npy`` next to the tokenizer (keyed by the corpus's and the tokenizer's fingerprints); a damaged
    file is rebuilt.

    Args:
        split: ``"train"`` or ``"validation"``.
        tokenizer: a ``tokenizers.Tokenizer``; default :func:`load_tokenizer` with ``vocab_size``.
        vocab_size: used only when ``tokenizer`` is ``None``.
        max_chars: tokenize only the first ``max_chars`` characters of the split.
    Returns:
        ``LongTensor[N]``.
    """
    check_choice("split", split, SPLITS)
    max_chars = _check_max_chars(max_chars)
    vocab_size = check_int("vocab_size", vocab_size, low=258)
    if tokenizer is not None and (not hasattr(tokenizer, "encode_batch") or not hasattr(tokenizer, "to_str")):
        raise TypeError(f"tokenizer must be a tokenizers.Tokenizer (from load_tokenizer), got {describe(tokenizer)}")
    tok = load_tokenizer(vocab_size=vocab_size) if tokenizer is None else tokenizer
    if not hasattr(tok, "encode_batch") or not hasattr(tok, "to_str"):
        raise TypeError(f"tokenizer must be a tokenizers.Tokenizer (from load_tokenizer), got {type(tok).__name__}")
    corpus, docs = _documents(split, max_chars)
    size = "all" if max_chars is None else str(max_chars)
    path = cache_dir("remoe") / f"{split}-{corpus.fingerprint()}-{size}-{tokenizer_fingerprint(tok)}.npy"
    ids = None
    if path.exists():
        try:
            ids = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            warnings.warn(f"Rebuilding the cached token ids {path.name}: {err}.", stacklevel=2)
    if ids is None:
        eos = tok.token_to_id(EOS)
        dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.int32
        chunks = [np.asarray(enc.ids + [eos], dtype=dtype) for enc in tok.encode_batch(docs)]
        ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)

        def _save(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, ids)

        atomic_write(path, _save)
    return torch.from_numpy(ids.astype(np.int64))
