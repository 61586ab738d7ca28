"""Literal and functional theory of mind, measured (Riemer et al., arXiv 2412.19726, §3).

For an episode of T rounds with our actions ``a_t``, the partner's actions ``b_t``, the partner's policy
``π_t = π(· | h_t)`` and our literal-ToM predictions ``p̂_t`` (a distribution over ``b_t``):

- **Literal accuracy** — how often the prediction names the partner's move:
  ``acc = (1/T) Σ_t 1[b_t ∈ argmax p̂_t] / |argmax p̂_t|`` (ties count as a uniform guess among them).
- **Functional regret** — ``Δ_F = Σ_t (r*_t − r_t)``, reported per round ``Δ_F / T``: r*_t is the oracle's
  expected reward in round t when it plans against the partner's actual policy over the whole horizon
  (:func:`companion.tom.oracle_plan`), and ``r_t = Σ_b π_t(b) A[a_t, b]`` our expected reward given our action
  (equal to the realised reward whenever the partner is deterministic; it removes the partner's dice otherwise).
  Against an adaptive partner (TFT) a round's term can be negative: the oracle invests early, we cannot beat its
  total ``Σ_t r*_t = V*``, so ``Δ_F ≥ 0`` in expectation.
- **Rationalized regret** — the regret a perfectly rational agent would get if it best-responded to our own
  predictions: ``Δ_ToM = Σ_t [max_a (A π_t)_a − mean_{a ∈ BR(p̂_t)} (A π_t)_a]``,
  ``BR(p̂) = argmax_a (A p̂)_a``.
  It is one-step (myopic), as in the paper: zero whenever the prediction is right about a deterministic partner,
  whatever we then do. ``Δ_ToM ≪ Δ_F`` is the paper's signature — the model knows, but does not act on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .games import MatrixGame

__all__ = ["Episode", "functional_regret", "literal_accuracy", "rationalized_regret", "regret_curve"]


def _as_2d(name: str, x, m: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 2 or (m is not None and arr.shape[1] != m):
        want = f"[T, {m}]" if m is not None else "[T, m]"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


def literal_accuracy(predictions, partner_actions) -> float:
    """Share of rounds whose prediction's argmax is the partner's actual move (ties split evenly).

    Args:
        predictions: ``[T, m]`` distributions (rows of NaN = no prediction that round, skipped).
        partner_actions: ``[T]`` ints.
    Returns:
        accuracy in [0, 1], or NaN if no round had a prediction.
    """
    P = _as_2d("predictions", predictions)
    b = np.asarray(partner_actions)
    if b.shape != (P.shape[0],):
        raise ValueError(f"partner_actions must have shape ({P.shape[0]},) to match predictions, got {b.shape}")
    ok = ~np.isnan(P).any(1)
    if not ok.any():
        return float("nan")
    P, b = P[ok], b[ok].astype(int)
    best = P >= P.max(1, keepdims=True) - 1e-9
    return float(np.mean(best[np.arange(len(b)), b] / best.sum(1)))


def regret_curve(oracle_rewards, rewards) -> np.ndarray:
    """``[T]`` cumulative functional regret ``Σ_{s ≤ t} (r*_s − r_s)``."""
    o, r = np.asarray(oracle_rewards, dtype=float), np.asarray(rewards, dtype=float)
    if o.ndim != 1 or o.shape != r.shape:
        raise ValueError(f"oracle_rewards and rewards must be 1-D of equal length, got {o.shape} and {r.shape}")
    return np.cumsum(o - r)


def functional_regret(oracle_rewards, rewards) -> float:
    """``Δ_F / T = (1/T) Σ_t (r*_t − r_t)``."""
    curve = regret_curve(oracle_rewards, rewards)
    if len(curve) == 0:
        raise ValueError("an episode needs at least one round")
    return float(curve[-1] / len(curve))


def rationalized_regret(game: MatrixGame, predictions, partner_policies) -> float:
    """``Δ_ToM / T``: the mean one-step regret of best-responding to the predictions ``p̂_t`` (``[T, m]``) when the
    partner actually plays ``π_t`` (``[T, m]``). Rounds without a prediction (NaN rows) are skipped; NaN if none."""
    m = game.n_partner_actions
    P = _as_2d("predictions", predictions, m)
    Pi = _as_2d("partner_policies", partner_policies, m)
    if P.shape != Pi.shape:
        raise ValueError(f"predictions {P.shape} and partner_policies {Pi.shape} must have the same shape")
    ok = ~np.isnan(P).any(1)
    if not ok.any():
        return float("nan")
    A = game.payoff
    v_true = Pi[ok] @ A.T  # [T, n]: (A π_t)_a
    v_pred = P[ok] @ A.T  # [T, n]: (A p̂_t)_a
    br = v_pred >= v_pred.max(1, keepdims=True) - 1e-9
    got = (v_true * br).sum(1) / br.sum(1)
    return float(np.mean(v_true.max(1) - got))


@dataclass
class Episode:
    """One repeated game of T rounds, as played by :func:`companion.tom.play`.

    Arrays (length T unless said): ``actions``, ``partner_actions`` (ints); ``rewards``, ``partner_rewards``
    (realised); ``expected_rewards`` (``Σ_b π_t(b) A[a_t, b]``); ``oracle_rewards`` (r*_t);
    ``predictions`` ``[T, m]`` (NaN where the agent made none); ``partner_policies`` ``[T, m]`` (π_t).
    ``invalid`` counts rounds where an LLM named no legal action (and fell back; see :mod:`companion.tom.llm`).
    """

    game: MatrixGame = field(repr=False)
    agent: str
    partner: str
    horizon: int
    seed: int
    actions: np.ndarray = field(repr=False)
    partner_actions: np.ndarray = field(repr=False)
    rewards: np.ndarray = field(repr=False)
    partner_rewards: np.ndarray = field(repr=False)
    expected_rewards: np.ndarray = field(repr=False)
    oracle_rewards: np.ndarray = field(repr=False)
    predictions: np.ndarray = field(repr=False)
    partner_policies: np.ndarray = field(repr=False)
    oracle_value: float = float("nan")
    invalid: int = 0

    @property
    def accuracy(self) -> float:
        """Literal accuracy (:func:`literal_accuracy`)."""
        return literal_accuracy(self.predictions, self.partner_actions)

    @property
    def regret(self) -> float:
        """Functional regret per round ``Δ_F / T`` (:func:`functional_regret`)."""
        return functional_regret(self.oracle_rewards, self.expected_rewards)

    @property
    def tom_regret(self) -> float:
        """Rationalized regret per round ``Δ_ToM / T`` (:func:`rationalized_regret`)."""
        return rationalized_regret(self.game, self.predictions, self.partner_policies)

    @property
    def regret_curve(self) -> np.ndarray:
        """``[T]`` cumulative functional regret."""
        return regret_curve(self.oracle_rewards, self.expected_rewards)

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum())

    def summary(self) -> dict:
        """The JSON-ready headline numbers of this episode."""
        return {"game": self.game.name, "agent": self.agent, "partner": self.partner, "horizon": self.horizon,
                "seed": self.seed, "regret": self.regret, "tom_regret": self.tom_regret,
                "accuracy": self.accuracy, "return": self.total_reward, "oracle_value": self.oracle_value,
                "invalid": self.invalid}

    def __repr__(self) -> str:
        return (f"Episode({self.game.name}, {self.agent} vs {self.partner}, T={self.horizon}, seed={self.seed}: "
                f"Δ_F/T={self.regret:.3f}, Δ_ToM/T={self.tom_regret:.3f}, acc={self.accuracy:.3f})")
