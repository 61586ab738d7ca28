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

from .capture import queries_keys
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
    ``[heads, q - w]`` window scores; returns the normalised attention too."""
    if scores.dim() != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be [heads, prefix_len], got {tuple(scores.shape)}")
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    p = scores / scores.sum(-1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-12).log2()).sum(-1)
    cumulative = p.sort(dim=-1, descending=True).values.cumsum(-1)
    needed = (cumulative < mass - 1e-6).sum(-1) + 1
    return entropy.mean().item(), needed.float().mean().item(), p[:, 0].mean().item(), p


def funnel(model, input_ids: torch.Tensor, *, window: int = 8, mass: float = 0.9) -> Funnel:
    """:func:`funnel_stats` for every layer of ``model`` on one prompt ``input_ids`` (``[1, q_len]``)."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must be one prompt, shape [1, q_len], got {tuple(input_ids.shape)}")
    rows = [funnel_stats(window_scores(Q, K, window=window, pooling=None)[0], mass=mass)
            for Q, K in queries_keys(model, input_ids)]
    return Funnel(*[list(col) for col in zip(*rows)])
