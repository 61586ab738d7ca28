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
  predictions, ``BR(p̂) = argmax_a (A p̂)_a`` (ties: the mean over the set). Two definitions:

  * ``definition="paper"`` (the default): measured against the oracle's optimum, as Δ_F is. With the oracle's
    action gaps ``g_t(a) = V*_t(s_t) − Q*_t(s_t, a)`` at the partner's state ``s_t`` of each round
    (:func:`companion.tom.oracle_action_gaps`), ``Δ_ToM = Σ_t mean_{a ∈ BR(p̂_t)} g_t(a)``. This is Δ_F's own
    decomposition (``E[Σ_t g_t(a_t)] = Δ_F``) with our action replaced by the rational one, so Δ_ToM ≥ 0 and it
    compares with Δ_F on one scale. Against Tit-for-Tat in IPD a myopic best response (defect) loses 1 or 2 per
    round against the oracle's cooperation, whatever it predicted: this rational agent acts on a prediction of
    the *next move*, which is not enough against a partner who answers our moves.
  * ``definition="one-step"``: the myopic regret against the best response to the partner's actual move,
    ``Δ_ToM = Σ_t [max_a (A π_t)_a − mean_{a ∈ BR(p̂_t)} (A π_t)_a]``. Zero whenever the prediction is right
    about a deterministic partner; in IPD zero for *every* prediction (defect is the best response to both
    moves), even predictions that are always wrong.

  The two agree against partners that do not react to our moves (single action, cyclic, switching, mixed:
  then Q*_t(s, a) − (A π_t)_a does not depend on a). The paper defines Δ_ToM in words as the
  regret of a rational agent acting on the predictions, judged like Δ_F; the gap form is our reading of it.
  ``Δ_ToM ≪ Δ_F`` is the paper's signature — the model knows, but does not act on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..lab.checks import check_choice, describe
from .games import MatrixGame, get_game

__all__ = ["DEFINITIONS", "Episode", "functional_regret", "literal_accuracy", "rationalized_regret", "regret_curve"]

#: the rationalized regret's definitions (:func:`rationalized_regret`); the first is the default
DEFINITIONS = ("paper", "one-step")


def _numbers(name: str, x) -> np.ndarray:
    """``x`` as a float array if it holds real numbers (ints or floats; not bools, strings or objects)."""
    try:
        kind = np.asarray(x).dtype.kind
    except (TypeError, ValueError):  # ragged nested lists
        kind = "O"
    if kind not in "iuf" or isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got {describe(x)}")
    return np.asarray(x, dtype=float)


def _as_2d(name: str, x, m: int | None = None, *, nan_rows: bool = True) -> np.ndarray:
    """``x`` as a float ``[T, m]`` array with T >= 1, m >= 1; entries finite (NaN allowed with ``nan_rows``:
    a round without a prediction)."""
    arr = _numbers(name, x)
    if arr.ndim != 2 or (m is not None and arr.shape[1] != m):
        want = f"[T, {m}]" if m is not None else "[T, m]"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must have at least one round and one partner action, got shape {arr.shape}")
    bad = np.isinf(arr) if nan_rows else ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} must hold finite numbers{' (or NaN rows: no prediction)' if nan_rows else ''}, "
                         f"got {'an infinity' if nan_rows else 'NaN or an infinity'} in row "
                         f"{int(np.flatnonzero(bad.any(1))[0])}")
    return arr


def _actions(name: str, x, T: int, m: int) -> np.ndarray:
    """``x`` as an int array ``[T]`` of action indices in ``[0, m)``."""
    try:
        b = np.asarray(x)
    except (TypeError, ValueError):
        b = np.asarray(None)
    if b.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an array of int action indices, got {describe(x)}")
    if b.shape != (T,):
        raise ValueError(f"{name} must have shape ({T},) to match predictions, got {b.shape}")
    if T and (b.min() < 0 or b.max() >= m):
        raise ValueError(f"{name} must be action indices in [0, {m}), got values from {b.min()} to {b.max()}")
    return b


def literal_accuracy(predictions, partner_actions) -> float:
    """Share of rounds whose prediction's argmax is the partner's actual move (ties split evenly).

    Args:
        predictions: ``[T, m]`` distributions (rows of NaN = no prediction that round, skipped).
        partner_actions: ``[T]`` ints.
    Returns:
        accuracy in [0, 1], or NaN if no round had a prediction.
    """
    P = _as_2d("predictions", predictions)
    b = _actions("partner_actions", partner_actions, P.shape[0], P.shape[1])
    return _literal_accuracy(P, b)


def _literal_accuracy(P: np.ndarray, b: np.ndarray) -> float:
    ok = ~np.isnan(P).any(1)
    if not ok.any():
        return float("nan")
    P, b = P[ok], b[ok].astype(int)
    best = P >= P.max(1, keepdims=True) - 1e-9
    return float(np.mean(best[np.arange(len(b)), b] / best.sum(1)))


def regret_curve(oracle_rewards, rewards) -> np.ndarray:
    """``[T]`` cumulative functional regret ``Σ_{s ≤ t} (r*_s − r_s)``: two finite ``[T]`` arrays, T >= 1."""
    o, r = _numbers("oracle_rewards", oracle_rewards), _numbers("rewards", rewards)
    if o.ndim != 1 or o.shape != r.shape:
        raise ValueError(f"oracle_rewards and rewards must be 1-D of equal length, got {o.shape} and {r.shape}")
    if len(o) == 0:
        raise ValueError("oracle_rewards and rewards must have at least one round (an episode), got length 0")
    for name, x in (("oracle_rewards", o), ("rewards", r)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} must hold finite numbers, got NaN or an infinity")
    return np.cumsum(o - r)


def functional_regret(oracle_rewards, rewards) -> float:
    """``Δ_F / T = (1/T) Σ_t (r*_t − r_t)``."""
    curve = regret_curve(oracle_rewards, rewards)
    return float(curve[-1] / len(curve))


def rationalized_regret(game: MatrixGame, predictions, partner_policies=None, *, action_gaps=None,
                        definition: str = "paper") -> float:
    """``Δ_ToM / T``: the regret per round of best-responding to the predictions ``p̂_t`` (see the module docstring).

    Args:
        game: a :class:`MatrixGame` or a name; n our actions, m the partner's.
        predictions: ``[T, m]`` distributions ``p̂_t`` (NaN rows: no prediction that round, skipped).
        partner_policies: ``[T, m]`` the partner's actual ``π_t`` (needed by ``"one-step"``).
        action_gaps: ``[T, n]`` the oracle's gaps ``V*_t(s_t) − Q*_t(s_t, a) >= 0`` in reward units
            (:func:`companion.tom.oracle_action_gaps`; needed by ``"paper"``).
        definition: ``"paper"`` (default: against the oracle's optimum) or ``"one-step"``.
    Returns:
        the mean over rounds with a prediction, in reward per round; NaN if no round has one.
    Raises:
        ValueError: a shape mismatch, a non-finite entry, a negative gap, or the array the definition needs missing.
    """
    game = get_game(game)
    check_choice("definition", definition, DEFINITIONS)
    m = game.n_partner_actions
    P = _as_2d("predictions", predictions, m)
    Pi = None
    if partner_policies is not None:  # checked whenever given, used by "one-step"
        Pi = _as_2d("partner_policies", partner_policies, m, nan_rows=False)
        if P.shape != Pi.shape:
            raise ValueError(f"predictions {P.shape} and partner_policies {Pi.shape} must have the same shape")
    if definition == "one-step":
        if Pi is None:
            raise ValueError("definition='one-step' needs partner_policies ([T, m], the partner's actual π_t)")
        return _rationalized_regret(game, P, Pi)
    if action_gaps is None:
        raise ValueError("definition='paper' needs action_gaps ([T, n], the oracle's V*_t(s_t) − Q*_t(s_t, a) from "
                         "companion.tom.oracle_action_gaps)")
    G = _as_2d("action_gaps", action_gaps, game.n_actions, nan_rows=False)
    if G.shape[0] != P.shape[0]:
        raise ValueError(f"action_gaps must have one row per round of predictions ({P.shape[0]}), got {G.shape[0]}")
    if (G < -1e-9).any():
        raise ValueError(f"action_gaps must be >= 0 (V*_t − Q*_t), got a minimum of {G.min():g}")
    return _gap_regret(game, P, G)


def _best_responses(game: MatrixGame, P: np.ndarray) -> np.ndarray:
    """``[T, n]`` the best-response set to each prediction row, as weights summing to 1 (ties share)."""
    v_pred = P @ game.payoff.T  # [T, n]: (A p̂_t)_a
    br = v_pred >= v_pred.max(1, keepdims=True) - 1e-9
    return br / br.sum(1, keepdims=True)


def _gap_regret(game: MatrixGame, P: np.ndarray, G: np.ndarray) -> float:
    ok = ~np.isnan(P).any(1)
    if not ok.any():
        return float("nan")
    return float(np.mean((_best_responses(game, P[ok]) * G[ok]).sum(1)))


def _rationalized_regret(game: MatrixGame, P: np.ndarray, Pi: np.ndarray) -> float:
    ok = ~np.isnan(P).any(1)
    if not ok.any():
        return float("nan")
    v_true = Pi[ok] @ game.payoff.T  # [T, n]: (A π_t)_a
    return float(np.mean(v_true.max(1) - (_best_responses(game, P[ok]) * v_true).sum(1)))


@dataclass
class Episode:
    """One repeated game of T rounds, as played by :func:`companion.tom.play`.

    Arrays (length T unless said): ``actions``, ``partner_actions`` (ints); ``rewards``, ``partner_rewards``
    (realised); ``expected_rewards`` (``Σ_b π_t(b) A[a_t, b]``); ``oracle_rewards`` (r*_t);
    ``predictions`` ``[T, m]`` (NaN where the agent made none); ``partner_policies`` ``[T, m]`` (π_t);
    ``action_gaps`` ``[T, n]`` (the oracle's ``V*_t(s_t) − Q*_t(s_t, a)`` at the partner's state of each round).
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
    action_gaps: np.ndarray = field(repr=False)
    oracle_value: float = float("nan")
    invalid: int = 0

    @property
    def accuracy(self) -> float:
        """Literal accuracy (:func:`literal_accuracy`)."""
        return _literal_accuracy(self.predictions, self.partner_actions)  # play's arrays: no checks needed

    @property
    def regret(self) -> float:
        """Functional regret per round ``Δ_F / T`` (:func:`functional_regret`)."""
        return functional_regret(self.oracle_rewards, self.expected_rewards)

    @property
    def tom_regret(self) -> float:
        """Rationalized regret per round ``Δ_ToM / T``, the paper's definition (against the oracle's optimum)."""
        return _gap_regret(self.game, self.predictions, self.action_gaps)

    @property
    def tom_regret_one_step(self) -> float:
        """Rationalized regret per round, the one-step definition (``rationalized_regret(definition="one-step")``)."""
        return _rationalized_regret(self.game, self.predictions, self.partner_policies)

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
                "tom_regret_one_step": self.tom_regret_one_step,
                "accuracy": self.accuracy, "return": self.total_reward, "oracle_value": self.oracle_value,
                "invalid": self.invalid}

    def __repr__(self) -> str:
        return (f"Episode({self.game.name}, {self.agent} vs {self.partner}, T={self.horizon}, seed={self.seed}: "
                f"Δ_F/T={self.regret:.3f}, Δ_ToM/T={self.tom_regret:.3f}, acc={self.accuracy:.3f})")
