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
from companion.lab.checks import check_choice, check_int, check_sequence
from companion.lab.stats import wilson_interval

from .capture import expand_kv_heads
from .methods import METHODS, compress, greedy_continue, prefill
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


# ---------------------------------------------------------------------------------------------------------------
# Long contexts: many prompts per length, every method, and where the needle's tokens survive


LONG_METHODS = ("full", "streaming", "h2o", "snapkv", "pyramidkv")
QUESTIONS = ("inside", "after")


def long_prompt(tokenizer, *, length: int, index: int, max_new_tokens: int = 7) -> PasskeyPrompt:
    """Prompt ``index`` of the long-context experiment at ``length`` tokens, with the question and the answer.

    ``length`` counts everything the model sees: context, question and the ``max_new_tokens`` of the answer, so
    ``length = 8192`` stays inside SmolLM2's 8192 positions. The haystack and the key come from
    :func:`passkey_prompt` with ``seed = length · 100000 + index``, the depth is uniform in [0, 1] from its own
    stream (``random.Random(f"depth {seed}")``): every prompt is reproducible and the lengths do not share
    haystacks.
    """
    seed = length * 100_000 + index
    q_len = len(tokenizer(QUESTION, add_special_tokens=False).input_ids)
    depth = random.Random(f"depth {seed}").random()
    return passkey_prompt(tokenizer, context_tokens=length - q_len - max_new_tokens, depth=depth, seed=seed)


def _fingerprints(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One int64 per vector of ``x [..., d]``: its bytes times fixed random weights, summed (wrapping)."""
    raw = x.contiguous().view(torch.uint8).reshape(*x.shape[:-1], -1).to(torch.int64)
    return (raw * weights[: raw.shape[-1]]).sum(-1)


def kept_positions(whole, small, positions: torch.Tensor) -> list[int]:
    """Per layer, how many of the prompt ``positions`` (1-D) at least one KV head of ``small`` still holds.

    Measured on the cache itself, not on the selection code: a position counts as kept by head h when its key
    vector in the uncompressed cache ``whole`` appears, bit for bit, among head h's keys in the compressed
    ``small`` (the compression copies key vectors, and two positions never share one: RoPE rotates each
    differently). Fingerprints of the vectors narrow the candidates; every match is then checked element-wise.
    """
    out = []
    weights = None
    for W, S in zip(whole.layers, small.layers):
        target, kept = W.keys[0][:, positions.to(W.keys.device)], S.keys[0]  # [heads, n, d], [heads, k, d]
        if weights is None:
            size = target.shape[-1] * target.element_size()
            weights = torch.randint(-2**62, 2**62, (size,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.int64).to(target.device)
        hit = torch.zeros(len(positions), dtype=torch.bool, device=target.device)
        for h in range(target.shape[0]):
            i, j = (_fingerprints(target[h], weights)[:, None] == _fingerprints(kept[h], weights)[None]).nonzero(
                as_tuple=True)
            hit[i[(target[h][i] == kept[h][j]).all(-1)]] = True
        out.append(int(hit.sum()))
    return out


def _prompt_rows(model, tokenizer, length: int, index: int, s: dict) -> list[dict]:
    """Every (question, method, capacity) row of one long-context prompt (one prefill per question)."""
    p = long_prompt(tokenizer, length=length, index=index, max_new_tokens=s["max_new_tokens"])
    start, end = p.needle_span
    needle = torch.arange(start, end)
    digits = torch.tensor([i for i in range(start, end) if tokenizer.decode([int(p.context[0, i])]).strip().isdigit()],
                          dtype=torch.long)
    # the question's tokens that compression can drop: inside the prompt and before the always-kept window
    n_ctx, n_q = p.context.shape[1], p.question.shape[1]
    asked = torch.arange(n_ctx, max(n_ctx, n_ctx + n_q - s["window"]))
    rows = []
    for question in s["questions"]:
        pre = prefill(model, torch.cat([p.context, p.question], dim=1) if question == "inside" else p.context)
        for method in s["methods"]:
            for capacity in ([None] if method == "full" else s["capacities"]):
                cache, kept = compress(pre, method, capacity=capacity or pre.prompt_len, window=s["window"],
                                       kernel=s["kernel"], pooling=s["pooling"], schedule=s["schedule"],
                                       granularity=s["granularity"])
                needle_kept, digits_kept = kept_positions(pre.cache, cache, needle), kept_positions(pre.cache, cache, digits)
                question_kept = kept_positions(pre.cache, cache, asked) if question == "inside" else None
                out = greedy_continue(model, pre, cache, max_new_tokens=s["max_new_tokens"],
                                      suffix=p.question if question == "after" else None)
                rows.append({"length": length, "prompt": index, "depth": round(p.depth, 4), "key": p.key,
                             "question": question, "method": method, "capacity": capacity,
                             "found": found(tokenizer, out, p.key), "answer": tokenizer.decode(out),
                             "kept_tokens": sum(kept) / len(kept), "needle_tokens": len(needle),
                             "digit_tokens": len(digits), "needle_kept": needle_kept, "digits_kept": digits_kept,
                             "question_tokens": len(asked) if question == "inside" else None,
                             "question_kept": question_kept})
            del cache
        del pre
    return rows


def long_retrieval(model, tokenizer, *, lengths=(2048, 4096, 8192), prompts: int = 385, capacities=(64, 256),
                   methods=LONG_METHODS, questions=QUESTIONS, window: int = 8, kernel: int = 7,
                   pooling: str = "maxpool", schedule: str = "official", max_new_tokens: int = 7,
                   previous: dict | None = None, on_prompt=None) -> dict:
    """Pass-key retrieval at long contexts: ``prompts`` prompts per length, every method, both placements.

    Per length and prompt (:func:`long_prompt`: its own haystack, key and a uniform random depth), and per
    question placement (``"inside"``/``"after"``, as in :func:`retrieval_sweep`), the prompt is prefilled once,
    then every method compresses its own copy of the cache at every capacity (``"full"`` once), with KV-head
    selection (KVCache-Factory's KV-head scoring: group mean, then pooling) and decodes the answer. Besides
    found/not found each row records where the needle survived (:func:`kept_positions`): per layer, how many of
    the needle's ``needle_tokens`` positions and of its ``digit_tokens`` key-digit positions at least one KV head
    kept (``needle_kept``, ``digits_kept``: lists of L ints). With the question inside the prompt it also
    records, per layer, how many of the question's ``question_tokens`` tokens before the always-kept window of
    ``window`` tokens some KV head kept (``question_kept``; both ``None`` with the question after the context,
    which no method compresses).

    Args:
        lengths: tokens per prompt, question and answer included (each at most the model's
            ``max_position_embeddings``).
        prompts: prompts per length (385 give a 95% Wilson interval of at most ± 5 points per cell), run in
            the order prompt 0 at every length, then prompt 1, ...
        capacities: C, tokens per layer including the window (each > ``window``).
        methods, questions: subsets of :data:`LONG_METHODS` and :data:`QUESTIONS`.
        window, kernel, pooling, schedule, max_new_tokens: as :func:`retrieval_sweep` (w = 8, max-pooling 7,
            the official PyramidKV schedule, 7 answer tokens).
        previous: a payload this function returned (or saved) before: its rows are kept when its settings are
            the same, and the (length, prompt) pairs it holds are not run again — a resumed run. Pairs whose
            rows predate ``question_kept`` are run again (within ``lengths`` and ``prompts``) and their rows
            replaced, each pair as it finishes.
        on_prompt: called with the payload after every prompt (the CLI saves it there).
    Returns:
        ``{settings..., "rows": [...]}``: one row per (length, prompt, question, method, capacity).
    Raises:
        TypeError / ValueError: ``lengths``/``capacities`` not non-empty sequences of ints, a length the model's
            positions or the needle do not fit, ``prompts`` < 1, a capacity not above the window, an unknown
            method or question placement.
    """
    lengths = [check_int(f"lengths[{i}]", v, low=1) for i, v in enumerate(check_sequence("lengths", lengths, "ints"))]
    prompts = check_int("prompts", prompts, low=1)
    window = check_int("window", window, low=1)
    capacities = [check_int(f"capacities[{i}]", v, low=window + 1)
                  for i, v in enumerate(check_sequence("capacities", capacities, "ints"))]
    methods = [check_choice("methods", m, METHODS) for m in check_sequence("methods", methods, "method names")]
    questions = [check_choice("questions", q, QUESTIONS) for q in check_sequence("questions", questions, "placements")]
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    limit = getattr(model.config, "max_position_embeddings", None)
    for length in lengths:
        if limit is not None and length > limit:
            raise ValueError(f"lengths: {length} tokens exceed the model's {limit} positions")
        try:
            long_prompt(tokenizer, length=length, index=0, max_new_tokens=max_new_tokens)
        except ValueError as err:
            raise ValueError(f"lengths: {length} tokens cannot hold the needle, the question and the answer ({err})") from None
    settings = {"capacities": capacities, "methods": methods, "questions": questions, "window": window,
                "kernel": kernel, "pooling": pooling, "schedule": schedule, "granularity": "kv",
                "max_new_tokens": max_new_tokens, "layers": len(model.model.layers),
                "kv_heads": model.config.num_key_value_heads}
    rows = []
    if previous and all(previous.get(k) == v for k, v in settings.items()):
        rows = list(previous["rows"])
        lengths_before, prompts_before = previous.get("lengths", []), previous.get("prompts", 0)
    else:
        lengths_before, prompts_before = [], 0
    payload = {**settings, "lengths": sorted(set(lengths) | set(lengths_before)),
               "prompts": max(prompts, prompts_before), "rows": rows}
    done = {(r["length"], r["prompt"]) for r in rows if "question_kept" in r}
    # prompt by prompt across the lengths, so that an interrupted run has about as many prompts at each length
    jobs = [(length, i) for i in range(prompts) for length in lengths if (length, i) not in done]
    for length, index in progress(jobs, desc="long-context pass keys"):
        new = _prompt_rows(model, tokenizer, length, index, payload)
        rows[:] = [r for r in rows if (r["length"], r["prompt"]) != (length, index)] + new
        if on_prompt is not None:
            on_prompt(payload)
    return payload


def _question_survival(cell: list[dict], layers: int) -> dict:
    """``question_n`` and ``question_share`` of :func:`long_summary` for one cell's rows."""
    part = [r for r in cell if r.get("question_kept") is not None]
    if not part:
        return {"question_n": 0, "question_share": None}
    return {"question_n": len(part),
            "question_share": [sum(r["question_kept"][layer] / max(r["question_tokens"], 1) for r in part) / len(part)
                               for layer in range(layers)]}


def long_summary(rows: list[dict], *, layers: int, confidence: float = 0.95) -> list[dict]:
    """Accuracy and needle survival per (length, question, method, capacity), over the prompts of each cell.

    Each dict: ``length, question, method, capacity, n`` (prompts), ``found``, ``accuracy`` and its Wilson
    interval ``low, high`` (:func:`companion.lab.stats.wilson_interval` at ``confidence``); ``needle_layers``,
    the mean over prompts of the number of layers (of ``layers``) where at least one KV head kept at least one
    needle token, and the same over the prompts found and missed (``needle_layers_found``,
    ``needle_layers_missed``; ``None`` without such prompts); ``digit_layers`` likewise for the key's digits;
    ``needle_share`` and ``digit_share``, per layer, the share of the needle's (digits') tokens kept by at least
    one KV head, averaged over prompts; ``question_n``, the prompts whose rows record the question's survival
    (question inside only; 0 otherwise), and over them ``question_share``, per layer, the share of the question's
    tokens before the window kept by some KV head (``None`` when ``question_n`` is 0). Cells come sorted by
    length, question, method, capacity.
    """
    layers = check_int("layers", layers, low=1)
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["length"], r["question"], r["method"], r["capacity"]), []).append(r)
    order = {m: i for i, m in enumerate(METHODS)}
    out = []
    for (length, question, method, capacity), cell in sorted(
            cells.items(), key=lambda kv: (kv[0][0], kv[0][1] != "inside", order[kv[0][2]], kv[0][3] or 0)):
        n, hits = len(cell), sum(bool(r["found"]) for r in cell)
        low, high = wilson_interval(hits, n, confidence=confidence)

        def mean_layers(part, field):
            return sum(sum(k > 0 for k in r[field]) for r in part) / len(part) if part else None

        def share(field, total):
            return [sum(r[field][layer] / max(r[total], 1) for r in cell) / n for layer in range(layers)]

        out.append({"length": length, "question": question, "method": method, "capacity": capacity, "n": n,
                    "found": hits, "accuracy": hits / n, "low": low, "high": high,
                    "needle_layers": mean_layers(cell, "needle_kept"),
                    "needle_layers_found": mean_layers([r for r in cell if r["found"]], "needle_kept"),
                    "needle_layers_missed": mean_layers([r for r in cell if not r["found"]], "needle_kept"),
                    "digit_layers": mean_layers(cell, "digits_kept"),
                    "needle_share": share("needle_kept", "needle_tokens"),
                    "digit_share": share("digits_kept", "digit_tokens"),
                    **_question_survival(cell, layers)})
    return out
