"""``companion.lab``: the shared bench of the book.

- :func:`load_model` — the real model (SmolLM2-135M-Instruct by default), offline, cached as float32;
- :func:`load_corpus`, :func:`corpus_tokens` — the Python standard library as a text corpus;
- :func:`perplexity` — held-out perplexity of a causal LM;
- :func:`attention_maps`, :func:`attention_summary` — attention weights of every layer and head, and per layer
  the mass on the first token and the entropy of a row; :func:`distinct_per_block` — quantization levels;
  :func:`cache_kwargs` — how to hand a key/value cache to a model under this transformers version;
- :func:`seed_everything`, :func:`get_device`, :func:`progress` — seeds, devices, progress bars;
- :func:`cache_dir`, :func:`save_results`, :func:`load_results` — the cache and results with provenance;
- :func:`spread`, :func:`wilson_interval`, :func:`mcnemar_exact` — when a difference counts as detectable
  (:mod:`companion.lab.stats`).

Chapter 0 of the book (``book/lab/``) walks through all of it.
"""

from .cache import cache_dir
from .corpus import Corpus, corpus_tokens, load_corpus
from .eval import perplexity
from .model import (
    DEFAULT_MODEL,
    ModelUnavailableError,
    attention_maps,
    attention_summary,
    cache_kwargs,
    distinct_per_block,
    eager_attention,
    load_model,
)
from .results import load_results, provenance, save_results
from .runtime import get_device, progress, seed_everything
from .stats import Spread, mcnemar_exact, spread, wilson_interval

__all__ = [
    "DEFAULT_MODEL",
    "Corpus",
    "ModelUnavailableError",
    "Spread",
    "attention_maps",
    "attention_summary",
    "cache_dir",
    "cache_kwargs",
    "corpus_tokens",
    "distinct_per_block",
    "eager_attention",
    "get_device",
    "load_corpus",
    "load_model",
    "load_results",
    "mcnemar_exact",
    "perplexity",
    "progress",
    "provenance",
    "save_results",
    "seed_everything",
    "spread",
    "wilson_interval",
]
