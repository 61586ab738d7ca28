"""Does attention narrow with depth? Per-layer statistics of the observation window's attention.

For each layer, the attention of the last w prompt tokens over the q − w prefix tokens, normalised to a
distribution per head (``p_j = s_j / Σ s``, with s from :func:`window_scores`, no pooling), summarised as:

- ``entropy``: Shannon entropy of p in bits (log2(q − w) for uniform attention, 0 for a single token);
- ``tokens_90``: the fewest prefix tokens holding 90% of p;
- ``first_token``: p of the first prompt token (the "attention sink").

Each is averaged over heads. PyramidKV's premise is that entropy and ``tokens_90`` fall with depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..lab.checks import check_float, check_int, check_tensor
from .capture import _check_input_ids, _layers, queries_keys
from .scoring import window_scores


@dataclass
class Funnel:
    """Per-layer statistics (lists of length num_layers) and the window attention they came from."""

    entropy: list[float]
    tokens_90: list[float]
    first_token: list[float]
    window_attention: list[torch.Tensor]  # per layer, [heads, q - w]: p for each head


def funnel_stats(scores: torch.Tensor, *, mass: float = 0.9) -> tuple[float, float, float, torch.Tensor]:
    """Entropy (bits), tokens holding ``mass`` of the attention, first-token share, for one layer's
    ``[heads, q - w]`` window scores; returns the normalised attention too.

    Raises:
        TypeError: ``scores`` not a floating-point tensor; ``mass`` not a real number.
        ValueError: ``scores`` not 2-D ``[heads, prefix_len]``, empty, not finite, negative, or with a head whose
            scores sum to 0 (no distribution); ``mass`` outside ``(0, 1]``.
    """
    check_tensor("scores", scores, ndim=2, dtype="floating", finite=True)
    mass = check_float("mass", mass, low=0.0, high=1.0, low_open=True)
    if not bool((scores >= 0).all()) or not bool((scores.sum(-1) > 0).all()):
        raise ValueError("scores must be non-negative attention mass with a positive sum for every head "
                         "(each row is normalised to a distribution)")
    p = scores / scores.sum(-1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-12).log2()).sum(-1)
    cumulative = p.sort(dim=-1, descending=True).values.cumsum(-1)
    needed = (cumulative < mass - 1e-6).sum(-1) + 1
    return entropy.mean().item(), needed.float().mean().item(), p[:, 0].mean().item(), p


def funnel(model, input_ids: torch.Tensor, *, window: int = 8, mass: float = 0.9) -> Funnel:
    """:func:`funnel_stats` for every layer of ``model`` on one prompt ``input_ids`` (``[1, q_len]``).

    Everything is checked before the model runs.

    Raises:
        TypeError: an unsupported ``model``; ``input_ids`` not an integer tensor; ``window`` not an int; ``mass``
            not a real number.
        ValueError: ``input_ids`` not one non-empty prompt of token ids; ``window`` outside ``[1, q_len)``; ``mass``
            outside ``(0, 1]``.
    """
    _layers(model)
    _check_input_ids(model, input_ids, one_prompt=True)
    window = check_int("window", window, low=1, high=input_ids.shape[1] - 1)
    mass = check_float("mass", mass, low=0.0, high=1.0, low_open=True)
    rows = [funnel_stats(window_scores(Q, K, window=window, pooling=None)[0], mass=mass)
            for Q, K in queries_keys(model, input_ids)]
    return Funnel(*[list(col) for col in zip(*rows)])
