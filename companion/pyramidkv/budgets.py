"""PyramidKV's per-layer KV budgets (Cai et al., 2024, arXiv 2406.02069).

Lower layers attend broadly, deeper layers narrowly ("pyramidal funnelling"), so PyramidKV gives each layer
a prefix budget that shrinks linearly with depth. With C the capacity per layer *including* the observation
window of w tokens, β = 20, L layers and a prompt of q tokens, the official code (KVCache-Factory) does:

- ``q < C``: no compression (every layer keeps the whole prompt);
- ``C <= q < 2(C - w)``: every layer keeps ``C - w`` prefix tokens — this regime *is* SnapKV;
- otherwise: ``min = (C - w) // β``, ``max = 2(C - w) - min``; if ``max >= q - w`` then ``max = q - w`` and
  ``min = 2(C - w) - max``; ``steps = (max - min) // (L - 1)``; layer l keeps ``max - l·steps``.

The integer ``steps`` rounds the slope down, so the deepest layer keeps more than ``min`` and the mean is
*over* the target ``C - w`` (for L = 30, C = 128, w = 8, q = 4000: 234 … 31 tokens, mean 132.5, +10%).
``schedule="exact"`` keeps the same end points and linear shape but spreads the tokens with float arithmetic
and largest-remainder rounding, so the budgets sum to exactly ``L·(C - w)``.

``schedule="kvpress"`` is NVIDIA kvpress's port (``PyramidKVPress.get_layer_budget``, v0.5.5) called with
``compression_ratio = 1 - C / q``, transcribed operation for operation in floating point: the kept total
``q·(1 − ratio)`` is then not always exactly C (for C = 160, q = 2000 it is 159.99999999999991), float
arithmetic with the mean total (window included) equal to that, Python's ``round`` per layer, no "no
compression" regime, and a silent fallback to uniform SnapKV (``round(q·(1 − ratio))`` tokens) unless
``q ≥ max ≥ min ≥ w``: the deepest layer must keep at least the window. Away from the cap (long prompts)
min = C/β, so a pyramid needs C ≥ β·w (160 tokens for w = 8 — and at exactly 160 the rounding error above
makes it fall back; 1280 with kvpress's default w = 64). ``C ≥ q`` keeps the whole prompt (kvpress's
``compression_ratio = 0``); with one layer the slope is 0 (kvpress would divide by zero).

β < 1 is rejected (kvpress asserts it): it would make the "minimum" the largest budget, an inverted pyramid.

Budgets count prefix tokens only; the w window tokens are always kept on top.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..lab.checks import check_choice, check_float, check_int

SCHEDULES = ("official", "exact", "kvpress")


def _check_sizes(capacity, window: int, prompt_len) -> tuple[int, int, int]:
    """The sizes every budget function shares, checked the same way everywhere: ints >= 1 (``numpy.int64``
    too), ``window < capacity`` (the capacity counts the window) and ``window < prompt_len``."""
    capacity = check_int("capacity", capacity, low=1)
    window = check_int("window", window, low=1)
    prompt_len = check_int("prompt_len", prompt_len, low=1)
    if window >= capacity:
        raise ValueError(f"window ({window}) must be smaller than capacity ({capacity}): the budget counts the window")
    if window >= prompt_len:
        raise ValueError(f"window ({window}) must be shorter than the prompt (prompt_len {prompt_len} tokens)")
    return capacity, window, prompt_len


def layer_budgets(capacity: int, *, window: int, num_layers: int, prompt_len: int, beta: float = 20,
                  schedule: Literal["official", "exact", "kvpress"] = "official") -> list[int]:
    """Prefix tokens each layer keeps (window excluded), from layer 0 to ``num_layers - 1``.

    Args:
        capacity: C, the KV budget per layer including the window.
        window: w, the observation window (its tokens are kept in every layer, on top of the budget).
        num_layers: L.
        prompt_len: q, the prompt length in tokens.
        beta: β >= 1, the ratio between the average and the smallest budget (20 in the paper and code).
        schedule: ``"official"`` (integer steps, as KVCache-Factory), ``"exact"`` (mean exactly C - w) or
            ``"kvpress"`` (as kvpress 0.5.5's ``PyramidKVPress`` with ``compression_ratio = 1 - C / q``).
    Returns:
        ``list[int]`` of length L. In the no-compression regime each entry is ``prompt_len - window``.
    Raises:
        TypeError: a size that is not an int (a bool or a float such as ``64.5``); ``beta`` not a real number.
        ValueError: a size < 1, ``window >= capacity`` or ``window >= prompt_len``; ``beta`` < 1 or not finite;
            an unknown ``schedule``.
    """
    capacity, window, prompt_len = _check_sizes(capacity, window, prompt_len)
    num_layers = check_int("num_layers", num_layers, low=1)
    beta = check_float("beta", beta, low=1.0)
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "kvpress":
        return _kvpress_budgets(capacity, window=window, num_layers=num_layers, prompt_len=prompt_len, beta=beta)
    target = capacity - window
    if prompt_len < capacity:
        return [prompt_len - window] * num_layers
    if prompt_len < 2 * target or num_layers == 1:
        return [target] * num_layers
    low = int(target // beta)
    high = 2 * target - low
    if high >= prompt_len - window:
        high = prompt_len - window
        low = 2 * target - high
    if schedule == "official":
        steps = (high - low) // (num_layers - 1)
        return [high - layer * steps for layer in range(num_layers)]
    ramp = np.linspace(high, low, num_layers)  # mean exactly (high + low) / 2 = target
    floors = np.floor(ramp).astype(int)
    missing = num_layers * target - int(floors.sum())
    order = np.argsort(-(ramp - floors), kind="stable")  # largest remainders get the leftover tokens
    floors[order[:missing]] += 1
    return floors.tolist()


def _kvpress_budgets(capacity: int, *, window: int, num_layers: int, prompt_len: int, beta: float) -> list[int]:
    """kvpress's ``PyramidKVPress.get_layer_budget`` (kept tokens, window included) with ``compression_ratio =
    1 - capacity / prompt_len``, in its own floating-point order, minus the window."""
    if capacity >= prompt_len:  # compression_ratio <= 0: kvpress does not compress
        return [prompt_len - window] * num_layers
    ratio = 1 - capacity / prompt_len
    max_capacity_prompt = window + prompt_len * (1 - ratio)
    low = (max_capacity_prompt - window) / beta
    high = (max_capacity_prompt - window) * 2 - low
    if high >= prompt_len - window:
        high = prompt_len - window
        low = (max_capacity_prompt - window) * 2 - high
    if not prompt_len >= high >= low >= window:  # kvpress's fallback to SnapKV
        return [round(prompt_len * (1 - ratio)) - window] * num_layers
    steps = (high - low) / (num_layers - 1) if num_layers > 1 else 0.0
    return [round(high - layer * steps) - window for layer in range(num_layers)]


def regime(capacity: int, *, window: int, prompt_len: int) -> str:
    """Which of the three regimes of the official code applies: "none", "uniform" (SnapKV) or "pyramid".

    Raises:
        TypeError / ValueError: for the arguments :func:`layer_budgets` rejects (the same checks).
    """
    capacity, window, prompt_len = _check_sizes(capacity, window, prompt_len)
    if prompt_len < capacity:
        return "none"
    return "uniform" if prompt_len < 2 * (capacity - window) else "pyramid"


def overspend(budgets: list[int], capacity: int, window: int) -> float:
    """Relative excess of the mean budget over the target ``C - w`` (0.104 means 10.4% over).

    Raises:
        TypeError: ``budgets`` not a sequence of ints; ``capacity`` or ``window`` not an int.
        ValueError: ``budgets`` empty or with a negative entry; ``capacity``/``window`` < 1 or ``window >= capacity``.
    """
    if isinstance(budgets, (str, bytes)) or not hasattr(budgets, "__len__") or not hasattr(budgets, "__iter__"):
        raise TypeError(f"budgets must be a sequence of ints (one per layer), got {budgets!r}")
    if len(budgets) == 0:
        raise ValueError("budgets must not be empty (one entry per layer)")
    for i, b in enumerate(budgets):
        check_int(f"budgets[{i}]", b, low=0)
    capacity = check_int("capacity", capacity, low=1)
    window = check_int("window", window, low=1)
    if window >= capacity:
        raise ValueError(f"window ({window}) must be smaller than capacity ({capacity}): the budget counts the window")
    return float(np.mean(budgets)) / (capacity - window) - 1.0
