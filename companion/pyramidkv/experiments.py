"""The chapter's retrieval experiment: a pass key hidden in standard-library source code.

A haystack of ``context_tokens`` tokens of real Python (the corpus's validation split, a different stretch for
each seed), a needle line ``# The pass key is 73914. Remember it. ...`` inserted at a relative ``depth``, and a
question after it. The model must complete ``the pass key is`` with the five digits. Each prompt is run once
(:func:`prefill`), then every method and capacity compresses a fresh copy of the same cache — so all methods
see exactly the same scores.

Two placements of the question:

- ``"inside"``: the question ends the prompt, so the observation window *is* the question (query-aware, as
  the PyramidKV/SnapKV papers and KVCache-Factory evaluate);
- ``"after"``: the context alone is prefilled and compressed, then the question is fed through the
  compressed cache (query-agnostic, kvpress's default): the window is the last lines of code.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from companion.lab import corpus_tokens, progress
from companion.lab.checks import check_choice

from .capture import expand_kv_heads
from .methods import compress, greedy_continue, prefill
from .scoring import GRANULARITIES, stored_bytes

NEEDLE = "\n# The pass key is {key}. Remember it. The pass key is {key}.\n"
QUESTION = "\n# Question: what is the pass key?\n# Answer: the pass key is"


@dataclass
class PasskeyPrompt:
    """One haystack with a needle: ``context`` and ``question`` token ids ``[1, n]``, the key, where it sits."""

    context: torch.Tensor
    question: torch.Tensor
    key: str
    depth: float
    needle_span: tuple[int, int]  # token positions [start, end) of the needle inside the context


def passkey_prompt(tokenizer, *, context_tokens: int = 1024, depth: float = 0.5, seed: int = 0) -> PasskeyPrompt:
    """A haystack of ``context_tokens`` corpus tokens (needle included) with the needle at ``depth`` ∈ [0, 1]."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    rng = random.Random(seed)
    key = str(rng.randrange(10_000, 100_000))
    needle = tokenizer(NEEDLE.format(key=key), add_special_tokens=False, return_tensors="pt").input_ids[0]
    if context_tokens < len(needle) + 16:
        raise ValueError(f"context_tokens must be at least {len(needle) + 16} to hold the needle, got {context_tokens}")
    text = corpus_tokens(tokenizer, "validation")
    hay_len = context_tokens - len(needle)
    start = rng.randrange(0, len(text) - hay_len)
    hay = text[start: start + hay_len]
    at = round(depth * hay_len)
    context = torch.cat([hay[:at], needle, hay[at:]])[None]
    question = tokenizer(QUESTION, add_special_tokens=False, return_tensors="pt").input_ids
    return PasskeyPrompt(context, question, key, depth, (at, at + len(needle)))


def found(tokenizer, generated: list[int], key: str) -> bool:
    """Whether the generated continuation states the key (its first number equals it)."""
    numbers = re.findall(r"\d+", tokenizer.decode(generated))
    return bool(numbers) and numbers[0] == key


def retrieval_sweep(model, tokenizer, *, capacities: list[int], methods=("full", "streaming", "h2o", "snapkv", "pyramidkv"),
                    depths=(0.1, 0.5, 0.9), seeds=(0,), context_tokens: int = 1024, question: str = "inside",
                    granularity: str = "kv", window: int = 8, kernel: int = 7, pooling: str = "maxpool",
                    schedule: str = "official", max_new_tokens: int = 7) -> list[dict]:
    """Pass-key accuracy for every method × capacity on the same prompts (one prefill per prompt).

    ``granularity="query"`` runs the model with K/V repeated to every query head (:func:`expand_kv_heads`), so
    each query head keeps its own tokens, as the official code does by default; ``"kv"`` selects per KV head with
    KVCache-Factory's KV-head scoring (group mean, then pooling); ``"kv_pool_first"`` per KV head with
    pooling first, then the group mean (kvpress's order; the book's committed full run used it).
    Returns one dict per (prompt, method, capacity): ``method, capacity, depth, seed, found, answer,
    kept_tokens`` (mean per layer), ``cache_bytes`` (as stored).
    """
    check_choice("question", question, ("inside", "after"))
    check_choice("granularity", granularity, GRANULARITIES)
    runner = expand_kv_heads(model) if granularity == "query" else model
    kv_order = "kv" if granularity == "query" else granularity  # one query head per KV head: the orders agree
    rows = []
    jobs = [(d, s) for s in seeds for d in depths]
    for depth, seed in progress(jobs, desc=f"pass key ({question}, {granularity} heads)"):
        p = passkey_prompt(tokenizer, context_tokens=context_tokens, depth=depth, seed=seed)
        ids = torch.cat([p.context, p.question], dim=1) if question == "inside" else p.context
        pre = prefill(runner, ids)
        for method in methods:
            for capacity in ([max(capacities)] if method == "full" else capacities):
                cache, kept = compress(pre, method, capacity=capacity, window=window, kernel=kernel,
                                       pooling=pooling, schedule=schedule, granularity=kv_order)
                size = stored_bytes(cache)
                out = greedy_continue(runner, pre, cache, max_new_tokens=max_new_tokens,
                                      suffix=p.question if question == "after" else None)
                rows.append({"method": method, "capacity": None if method == "full" else capacity, "depth": depth,
                             "seed": seed, "key": p.key, "found": found(tokenizer, out, p.key),
                             "answer": tokenizer.decode(out), "kept_tokens": sum(kept) / len(kept),
                             "cache_bytes": size, "question": question, "granularity": granularity})
    return rows


def mean_by(rows: list[dict], field: str, *, by: tuple[str, ...] = ("method", "capacity")) -> dict[tuple, float]:
    """Mean of ``row[field]`` over the rows sharing the same values of ``by`` (e.g. kept tokens per method and C)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(float(r[field]))
    return {k: sum(v) / len(v) for k, v in groups.items()}


def accuracy_table(rows: list[dict]) -> dict[tuple[str, int | None], float]:
    """Share of pass keys found per (method, capacity)."""
    return mean_by(rows, "found")
