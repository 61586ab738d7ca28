"""Repeated two-player matrix games (Riemer et al., 2024/2025, arXiv 2412.19726, §4 "Environments").

Convention used throughout ``companion.tom``: **we** (the agent under test) are the row player and the partner
is the column player. A game holds two payoff matrices of shape ``[n, m]`` (n of our actions, m partner actions):

    A[a, b] = our reward,      B[a, b] = the partner's reward,      when we play a and the partner plays b.

The paper's exact matrices are not recoverable, so the book states ours:

- Rock-Paper-Scissors (zero-sum): win +1, tie 0, loss -1 (``B = -A``). Uniform play against a constant partner
  earns 0 per step where the best response earns 1, hence regret 1.0/step.
- Iterated Prisoner's Dilemma: (R, S, T, P) = (3, 0, 5, 1), the Axelrod library's default ``Game()``
  (OpenSpiel's ``matrix_pd`` uses (5, 0, 10, 1) — a different scale).
- Battle of the Sexes: (2, 1) / (0, 0) / (1, 2) — we prefer "opera", the partner prefers "football"
  (OpenSpiel's ``matrix_bos`` uses (3, 2) / (0, 0) / (2, 3)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..lab.checks import check_int, check_sequence, check_type, describe

__all__ = ["GAMES", "MatrixGame", "get_game", "make_game"]


@dataclass(frozen=True, eq=False)
class MatrixGame:
    """A two-player normal-form stage game, repeated by :func:`companion.tom.play`.

    Attributes:
        name: a short name (``"rps"``, ``"ipd"``, ``"bos"`` or the user's).
        actions: our action words, length n.
        partner_actions: the partner's action words, length m.
        payoff: ``[n, m]`` float array A, our reward.
        partner_payoff: ``[n, m]`` float array B, the partner's reward.
    """

    name: str
    actions: tuple[str, ...]
    partner_actions: tuple[str, ...]
    payoff: np.ndarray = field(repr=False)
    partner_payoff: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        # the same checks as make_game (which builds its arguments): a game made directly is held to them too
        check_type("name", self.name, str)
        if not self.name:
            raise ValueError("name must be a non-empty string, got ''")
        A = _matrix("payoff (A)", self.payoff, None)
        B = _matrix("partner_payoff (B)", self.partner_payoff, A.shape)
        n, m = A.shape
        object.__setattr__(self, "actions", _words("actions", self.actions, n, "row"))
        object.__setattr__(self, "partner_actions", _words("partner_actions", self.partner_actions, m, "column"))
        object.__setattr__(self, "payoff", A)
        object.__setattr__(self, "partner_payoff", B)

    @property
    def n_actions(self) -> int:
        """n, the number of our actions."""
        return len(self.actions)

    @property
    def n_partner_actions(self) -> int:
        """m, the number of the partner's actions."""
        return len(self.partner_actions)

    @property
    def r_max(self) -> float:
        """The largest reward we can get in one round, ``max A`` (R-max's optimistic value)."""
        return float(self.payoff.max())

    @property
    def max_regret(self) -> float:
        """The largest regret one round can cost against a partner who always plays the same move,
        ``max_b (max_a A[a, b] − min_a A[a, b])``: 2 in each of our three games (RPS: a loss instead of a win;
        IPD: cooperating against C; BoS: football against opera). Dividing a regret per round by it puts games
        with different payoff scales on one scale, [0, 1] against single-action partners."""
        A = self.payoff
        return float((A.max(0) - A.min(0)).max())

    def action_index(self, action: int | str, *, partner: bool = False) -> int:
        """The index of ``action`` (a word, case-insensitive, or an int) in our (or the partner's) action list."""
        names = self.partner_actions if partner else self.actions
        who = "partner action" if partner else "action"
        if isinstance(action, (bool, np.bool_)):
            raise TypeError(f"{who} must be an int index or one of {list(names)}, got bool {action!r}")
        if isinstance(action, (int, np.integer)):
            if not 0 <= action < len(names):
                raise ValueError(f"{who} index must be in [0, {len(names)}) for {self.name}, got {action}")
            return int(action)
        if isinstance(action, str):
            low = [a.lower() for a in names]
            if action.lower() not in low:
                raise ValueError(f"unknown {who} {action!r} for {self.name}; expected one of {list(names)}")
            return low.index(action.lower())
        raise TypeError(f"{who} must be an int index or one of {list(names)}, got {type(action).__name__}")

    def reward(self, a: int, b: int) -> tuple[float, float]:
        """``(A[a, b], B[a, b])``: our reward and the partner's when we play a and the partner plays b."""
        a = check_int("a", a, low=0, high=self.n_actions - 1)
        b = check_int("b", b, low=0, high=self.n_partner_actions - 1)
        return float(self.payoff[a, b]), float(self.partner_payoff[a, b])

    def expected_payoff(self, probs: np.ndarray) -> np.ndarray:
        """``A p``: our expected reward of each action against a partner who plays ``b ~ p``, shape ``[n]``.

        ``probs`` must be a distribution over the partner's actions: ``m`` finite numbers >= 0 summing to 1."""
        return self.payoff @ self._check_distribution("probs", probs)

    def _values(self, probs: np.ndarray) -> np.ndarray:
        """``A p`` without checks, for the agents' per-round calls (``probs`` a float distribution of shape [m])."""
        return self.payoff @ probs

    def _check_distribution(self, name: str, probs) -> np.ndarray:
        """``probs`` as a float array ``[m]`` if it is a distribution over the partner's actions (``m`` finite
        numbers >= 0 summing to 1, as ``np.isclose`` reads it); else ``TypeError`` (not numbers) or ``ValueError``
        naming ``name``."""
        arr = _numbers(name, probs)
        m = self.n_partner_actions
        if arr.shape != (m,):
            raise ValueError(f"{name} must be a distribution of shape ({m},) over the partner's actions "
                             f"{list(self.partner_actions)}, got shape {arr.shape}")
        if not np.isfinite(arr).all() or (arr < 0).any() or not np.isclose(arr.sum(), 1.0):
            raise ValueError(f"{name} must be {m} finite numbers >= 0 summing to 1 (a distribution over the "
                             f"partner's actions {list(self.partner_actions)}), got {arr.tolist()}")
        return arr

    def __repr__(self) -> str:
        return f"MatrixGame({self.name!r}, actions={self.actions}, partner_actions={self.partner_actions})"


def _numbers(name: str, value) -> np.ndarray:
    """``value`` as a float array if it holds real numbers (ints or floats; not bools, strings or complex)."""
    try:
        kind = np.asarray(value).dtype.kind
        arr = np.asarray(value, dtype=float) if kind in "iuf" else None
    except (TypeError, ValueError):
        arr = None
    if arr is None:
        raise TypeError(f"{name} must be an array of real numbers (ints or floats), got {describe(value)}")
    return arr


def _matrix(name: str, value, shape: tuple[int, int] | None) -> np.ndarray:
    try:
        kind = np.asarray(value).dtype.kind
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 2-D array of numbers, got {describe(value)}") from err
    if kind not in "iuf":
        raise TypeError(f"{name} must be a 2-D array of numbers (ints or floats), got {describe(value)}")
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty 2-D matrix [n our actions, m partner actions], "
                         f"got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have the same shape as the first matrix {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must hold finite numbers, got {arr.tolist()}")
    arr.setflags(write=False)
    return arr


def make_game(payoff, partner_payoff, *, name: str = "custom", actions=None, partner_actions=None) -> MatrixGame:
    """A user-defined game from two matrices ``A`` (ours) and ``B`` (the partner's), both ``[n, m]``.

    Action words default to ``"a0", "a1", ...`` (ours) and ``"b0", ...`` (the partner's); the LLM agent writes
    them into its prompt, so give real words when it will play.
    """
    A = _matrix("payoff (A)", payoff, None)
    B = _matrix("partner_payoff (B)", partner_payoff, A.shape)
    n, m = A.shape
    actions = _words("actions", actions, n, "row") if actions is not None else tuple(f"a{i}" for i in range(n))
    partner_actions = (_words("partner_actions", partner_actions, m, "column") if partner_actions is not None
                       else tuple(f"b{j}" for j in range(m)))
    check_type("name", name, str)
    if not name:
        raise ValueError("name must be a non-empty string, got ''")
    return MatrixGame(name, actions, partner_actions, A, B)


def _words(label: str, names, k: int, where: str) -> tuple[str, ...]:
    """``names`` as a tuple of ``k`` distinct (case-insensitive) non-empty strings, one per matrix row/column."""
    names = tuple(check_sequence(label, names, f"{k} strings (one per matrix {where})", nonempty=False))
    if not all(isinstance(s, str) for s in names):
        raise TypeError(f"{label} must be {k} strings (one per matrix {where}), got {list(names)}")
    if len(names) != k or not all(names):
        raise ValueError(f"{label} must be {k} non-empty strings (one per matrix {where}), got {list(names)}")
    if len({s.lower() for s in names}) != k:
        raise ValueError(f"{label} must be distinct (case-insensitive), got {list(names)}")
    return names


_RPS = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])  # rows/cols: rock, paper, scissors; paper beats rock
_IPD = np.array([[3, 0], [5, 1]])  # rows: cooperate, defect; (R, S, T, P) = (3, 0, 5, 1)

GAMES: dict[str, MatrixGame] = {
    "rps": make_game(_RPS, -_RPS, name="rps", actions=("rock", "paper", "scissors"),
                     partner_actions=("rock", "paper", "scissors")),
    "ipd": make_game(_IPD, _IPD.T, name="ipd", actions=("cooperate", "defect"),
                     partner_actions=("cooperate", "defect")),
    "bos": make_game([[2, 0], [0, 1]], [[1, 0], [0, 2]], name="bos", actions=("opera", "football"),
                     partner_actions=("opera", "football")),
}


def get_game(name: str | MatrixGame) -> MatrixGame:
    """The game called ``name``: ``"rps"``, ``"ipd"`` or ``"bos"`` (a :class:`MatrixGame` passes through)."""
    if isinstance(name, MatrixGame):
        return name
    if not isinstance(name, str):
        raise TypeError(f"game must be a name {sorted(GAMES)} or a MatrixGame, got {type(name).__name__}")
    key = name.lower()
    if key not in GAMES:
        raise ValueError(f"unknown game {name!r}; expected one of {sorted(GAMES)} or a MatrixGame from make_game")
    return GAMES[key]
