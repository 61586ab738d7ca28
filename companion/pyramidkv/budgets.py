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

``schedule="kvpress"`` is NVIDIA kvpress's port (``PyramidKVPress``, v0.5.5): float arithmetic with the mean
total (window included) equal to C, rounded per layer, no "no compression" regime, and a silent fallback to
uniform SnapKV unless ``q ≥ max ≥ min ≥ w``: the deepest layer must keep at least the window. Away from the
cap (long prompts) min = C/β, so a pyramid needs C ≥ β·w (160 tokens for w = 8; 1280 with kvpress's
default w = 64).

Budgets count prefix tokens only; the w window tokens are always kept on top.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SCHEDULES = ("official", "exact", "kvpress")


def layer_budgets(capacity: int, *, window: int, num_layers: int, prompt_len: int, beta: float = 20,
                  schedule: Literal["official", "exact", "kvpress"] = "official") -> list[int]:
    """Prefix tokens each layer keeps (window excluded), from layer 0 to ``num_layers - 1``.

    Args:
        capacity: C, the KV budget per layer including the window.
        window: w, the observation window (its tokens are kept in every layer, on top of the budget).
        num_layers: L.
        prompt_len: q, the prompt length in tokens.
        beta: β, the ratio between the average and the smallest budget (20 in the paper and code).
        schedule: ``"official"`` (integer steps, as KVCache-Factory), ``"exact"`` (mean exactly C - w) or
            ``"kvpress"`` (as kvpress 0.5.5's ``PyramidKVPress`` with ``compression_ratio = 1 - C / q``).
    Returns:
        ``list[int]`` of length L. In the no-compression regime each entry is ``prompt_len - window``.
    """
    for name, value in (("capacity", capacity), ("window", window), ("num_layers", num_layers), ("prompt_len", prompt_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if window >= capacity:
        raise ValueError(f"window ({window}) must be smaller than capacity ({capacity}): the budget counts the window")
    if window >= prompt_len:
        raise ValueError(f"window ({window}) must be shorter than the prompt ({prompt_len} tokens)")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
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
    """kvpress's ``PyramidKVPress.get_layer_budget`` (kept tokens, window included), minus the window."""
    total = min(capacity, prompt_len)  # kvpress keeps q · (1 - compression_ratio) tokens on average
    low = total / beta
    high = 2 * total - low
    if high >= prompt_len - window:
        high = prompt_len - window
        low = 2 * total - high
    if not prompt_len >= high >= low >= window:  # kvpress's fallback: uniform, window included
        return [total - window] * num_layers
    steps = (high - low) / (num_layers - 1) if num_layers > 1 else 0.0
    return [round(high - layer * steps) - window for layer in range(num_layers)]


def regime(capacity: int, *, window: int, prompt_len: int) -> str:
    """Which of the three regimes of the official code applies: "none", "uniform" (SnapKV) or "pyramid"."""
    if prompt_len < capacity:
        return "none"
    return "uniform" if prompt_len < 2 * (capacity - window) else "pyramid"


def overspend(budgets: list[int], capacity: int, window: int) -> float:
    """Relative excess of the mean budget over the target ``C - w`` (0.104 means 10.4% over)."""
    return float(np.mean(budgets)) / (capacity - window) - 1.0
