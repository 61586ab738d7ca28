"""Partners: the other player, each with an explicit policy so the oracle can best-respond exactly.

The paper (Riemer et al., arXiv 2412.19726) uses two partner types, **single action** (always the same move)
and **Tit-for-Tat**. The others here are the book's extension: cyclic, switching, stochastic mixed and an
adaptive partner (fictitious play against us).

Every partner is a small finite-state machine over the joint history ``h_t = ((a_1, b_1), ..., (a_{t-1}, b_{t-1}))``:

    state_0 = initial_state(),   π(· | h_t) = policy(state_t, t),   state_{t+1} = next_state(state_t, a_t, b_t, t),

with hashable states. The oracle (:class:`companion.tom.Oracle`) plans over exactly this machine. Randomness that
a partner draws once per episode (the switching step) is drawn in :meth:`Partner.reset` from the episode's
partner stream, so the policy is known to the oracle after the reset; randomness per step (mixed partners) is in
π itself. Rounds are numbered ``t = 0 .. T-1``.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from ..lab.checks import check_choice, check_int, check_sequence, check_type, describe
from .games import MatrixGame, get_game

__all__ = ["PARTNERS", "Adaptive", "Cyclic", "Mixed", "Partner", "SingleAction", "Switching", "TitForTat",
           "make_partner"]


def _check_action(name: str, value, *, optional: bool = False):
    """``value`` if it can name a partner action: an int index >= 0 or a non-empty word (``None`` when
    ``optional``). Whether the game has that action is checked at :meth:`Partner.reset`."""
    if value is None and optional:
        return value
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{name} must be a non-empty action word or an int index >= 0, got ''")
        return value
    try:
        check_int(name, value, low=0)
    except TypeError:
        raise TypeError(f"{name} must be an action word (str) or an int index >= 0"
                        f"{' or None' if optional else ''}, got {describe(value)}") from None
    return value


def _index(game: MatrixGame, name: str, action) -> int:
    """``game.action_index(action, partner=True)``, its error prefixed with the argument's name."""
    try:
        return game.action_index(action, partner=True)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name}: {err}") from None


def _onehot(k: int, m: int) -> np.ndarray:
    p = np.zeros(m)
    p[k] = 1.0
    p.setflags(write=False)
    return p


class Partner:
    """Base class. Subclasses define :meth:`policy` and, when they remember anything, :meth:`initial_state` and
    :meth:`next_state`."""

    name = "partner"

    def __init__(self) -> None:
        self.game: MatrixGame | None = None
        self.horizon: int | None = None

    def reset(self, game: MatrixGame, *, horizon: int, rng: np.random.Generator | None = None) -> None:
        """Start an episode of ``horizon`` rounds of ``game``; draw per-episode randomness from ``rng``."""
        game = get_game(game)
        horizon = check_int("horizon", horizon, low=1)
        check_type("rng", rng, (np.random.Generator, type(None)), what="a numpy Generator or None")
        self.game = game
        self.horizon = horizon
        self._plan_cache = None  # the oracle's plan against this episode's partner (see oracle_plan)
        self._onehots = [_onehot(k, self.game.n_partner_actions) for k in range(self.game.n_partner_actions)]

    def plan_key(self) -> Hashable | None:
        """A hashable description of this episode's realised policy (after :meth:`reset`), equal for two partners
        exactly when their policies are; the oracle reuses its plan across episodes with the same key. ``None``
        (the default for subclasses) disables that reuse."""
        return None

    def initial_state(self) -> Hashable:
        return None

    def next_state(self, state: Hashable, a: int, b: int, t: int) -> Hashable:
        return state

    def policy(self, state: Hashable, t: int) -> np.ndarray:
        """π(· | state, t): a probability vector of shape ``[m]`` over the partner's actions."""
        raise NotImplementedError

    def policy_from_history(self, history: Sequence[tuple[int, int]]) -> np.ndarray:
        """π(· | h_t) for the joint history ``h_t`` (a list of ``(a, b)`` index pairs), t = len(history)."""
        self._need_reset()
        history = _check_history(history, self.game)
        state = self.initial_state()
        for t, (a, b) in enumerate(history):
            state = self.next_state(state, a, b, t)
        return self.policy(state, len(history))

    def _need_reset(self) -> None:
        if self.game is None:
            raise RuntimeError(f"{type(self).__name__}.reset(game, horizon=...) must be called before use")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class SingleAction(Partner):
    """Always plays the same action (the paper's "single action" partner): ``π(b) = 1[b = b₀]``."""

    def __init__(self, action: int | str = 0) -> None:
        super().__init__()
        self.action = _check_action("action", action)
        self.name = f"single-{action}"

    def reset(self, game, *, horizon, rng=None):
        super().reset(game, horizon=horizon, rng=rng)
        self._k = _index(self.game, "action", self.action)
        self.name = f"single-{self.game.partner_actions[self._k]}"

    def plan_key(self):
        return ("single", self._k)

    def policy(self, state, t):
        return self._onehots[self._k]


class TitForTat(Partner):
    """Tit-for-Tat: opens with ``first`` and then repeats our previous action, ``b_t = a_{t-1}``.

    In IPD this is Axelrod's TFT (opens with cooperate). Its RPS analogue with ``mode="copy"`` mirrors our last
    throw; ``mode="beat"`` plays what would have beaten our last throw (the action b maximising the partner's
    payoff ``B[a_{t-1}, b]``) — a "reactive" partner that punishes repetition. Needs our and its action sets to
    coincide for ``"copy"``.
    """

    def __init__(self, *, first: int | str = 0, mode: str = "copy") -> None:
        super().__init__()
        _check_action("first", first)
        check_choice("mode", mode, ("copy", "beat"))
        self.first, self.mode = first, mode
        self.name = "tft" if mode == "copy" else "tft-beat"

    def reset(self, game, *, horizon, rng=None):
        super().reset(game, horizon=horizon, rng=rng)
        g = self.game
        self._first = _index(g, "first", self.first)
        if self.mode == "copy":
            if [s.lower() for s in g.actions] != [s.lower() for s in g.partner_actions]:
                raise ValueError(f"TitForTat(mode='copy') needs both players to share the action words; {g.name} "
                                 f"has {list(g.actions)} vs {list(g.partner_actions)}")
            self._reply = list(range(g.n_actions))
        else:
            self._reply = [int(np.argmax(g.partner_payoff[a])) for a in range(g.n_actions)]

    def plan_key(self):
        return ("tft", self._first, tuple(self._reply))

    def initial_state(self):
        return None  # no previous action of ours yet

    def next_state(self, state, a, b, t):
        return a

    def policy(self, state, t):
        return self._onehots[self._first if state is None else self._reply[state]]


class Cyclic(Partner):
    """Plays a fixed cycle, ``b_t = cycle[t mod len(cycle)]`` (default: every action in order, R→P→S in RPS)."""

    def __init__(self, cycle: Sequence[int | str] | None = None) -> None:
        super().__init__()
        if cycle is not None:
            cycle = check_sequence("cycle", cycle, "actions (words or int indices)")
            for i, c in enumerate(cycle):
                _check_action(f"cycle[{i}]", c)
        self.cycle = cycle
        self.name = "cyclic"

    def reset(self, game, *, horizon, rng=None):
        super().reset(game, horizon=horizon, rng=rng)
        cyc = self.cycle if self.cycle is not None else list(range(self.game.n_partner_actions))
        self._cycle = [_index(self.game, f"cycle[{i}]", c) for i, c in enumerate(cyc)]

    def plan_key(self):
        return ("cyclic", tuple(self._cycle))

    def policy(self, state, t):
        return self._onehots[self._cycle[t % len(self._cycle)]]


class Switching(Partner):
    """A constant partner that switches once: ``b_t = first`` for ``t < τ``, then ``b_t = second``.

    Unless given, τ is drawn uniformly from ``[⌊T/4⌋, ⌊3T/4⌋]`` at :meth:`reset`, ``first`` uniformly from the
    partner's actions and ``second`` uniformly from the others. The oracle sees the drawn τ (it best-responds to
    the partner's realised policy); learners must notice the switch.
    """

    def __init__(self, first: int | str | None = None, second: int | str | None = None, *,
                 switch_at: int | None = None) -> None:
        super().__init__()
        _check_action("first", first, optional=True)
        _check_action("second", second, optional=True)
        if switch_at is not None:
            check_int("switch_at", switch_at, low=0)
        self.first, self.second, self.switch_at = first, second, switch_at
        self.name = "switching"

    def reset(self, game, *, horizon, rng=None):
        super().reset(game, horizon=horizon, rng=rng)
        rng = rng if rng is not None else np.random.default_rng(0)
        m = self.game.n_partner_actions
        if m < 2:
            raise ValueError("Switching needs a partner with at least two actions")
        first = (_index(self.game, "first", self.first) if self.first is not None
                 else int(rng.integers(m)))
        if self.second is not None:
            second = _index(self.game, "second", self.second)
            if second == first:
                raise ValueError(f"second must be another action than first, got {self.second!r} for both")
        else:
            others = [k for k in range(m) if k != first]
            second = others[int(rng.integers(len(others)))]
        tau = self.switch_at if self.switch_at is not None else int(rng.integers(horizon // 4, 3 * horizon // 4 + 1))
        self.tau, self._first, self._second = int(tau), first, second

    def plan_key(self):
        return ("switching", self._first, self._second, self.tau)

    def policy(self, state, t):
        return self._onehots[self._first if t < self.tau else self._second]


class Mixed(Partner):
    """A stationary stochastic partner, ``b_t ~ p`` i.i.d. (default uniform: the RPS Nash equilibrium)."""

    def __init__(self, probs: Sequence[float] | None = None) -> None:
        super().__init__()
        if probs is not None:  # the length is checked against the game's actions at reset
            try:
                kind = np.asarray(probs).dtype.kind
            except (TypeError, ValueError):
                kind = "O"
            if kind not in "iuf" or isinstance(probs, (str, bytes)):
                raise TypeError(f"probs must be a sequence of numbers (one per partner action) or None, "
                                f"got {describe(probs)}")
            p = np.asarray(probs, dtype=float)
            if p.ndim != 1 or p.size == 0 or not np.isfinite(p).all() or (p < 0).any() \
                    or not np.isclose(p.sum(), 1.0):
                raise ValueError(f"probs must be non-negative numbers summing to 1 (one per partner action), "
                                 f"got {probs!r}")
        self.probs = probs
        self.name = "mixed"

    def reset(self, game, *, horizon, rng=None):
        super().reset(game, horizon=horizon, rng=rng)
        m = self.game.n_partner_actions
        p = np.full(m, 1.0 / m) if self.probs is None else np.asarray(self.probs, dtype=float)
        if p.shape != (m,) or not np.isfinite(p).all() or (p < 0).any() or not np.isclose(p.sum(), 1.0):
            raise ValueError(f"probs must be {m} non-negative numbers summing to 1 (one per partner action "
                             f"{list(self.game.partner_actions)}), got {self.probs!r}")
        self._p = p / p.sum()
        self._p.setflags(write=False)

    def plan_key(self):
        return ("mixed", tuple(self._p.tolist()))

    def policy(self, state, t):
        return self._p


class Adaptive(Partner):
    """Fictitious play against us: best-responds, by its own payoff B, to the empirical frequency of our actions.

    ``π_t = uniform over argmax_b Σ_a c_a B[a, b]`` with ``c_a`` the count of our action a so far (uniform over all
    actions at t = 0). The state is the count vector, so the oracle's exact plan grows as ``O(T^n)`` states.
    """

    name = "adaptive"

    def initial_state(self):
        return (0,) * self.game.n_actions

    def next_state(self, state, a, b, t):
        return state[:a] + (state[a] + 1,) + state[a + 1:]

    def reset(self, game, *, horizon, rng=None):
        super().reset(game, horizon=horizon, rng=rng)
        self._cache: dict = {}

    def plan_key(self):
        return ("adaptive",)

    def policy(self, state, t):
        p = self._cache.get(state)
        if p is None:
            m = self.game.n_partner_actions
            if sum(state) == 0:
                p = np.full(m, 1.0 / m)
            else:
                v = np.asarray(state, dtype=float) @ self.game.partner_payoff
                best = v >= v.max() - 1e-9
                p = best / best.sum()
            p.setflags(write=False)
            self._cache[state] = p
        return p


def _check_history(history, game: MatrixGame) -> list[tuple[int, int]]:
    """``history`` as a list of ``(a, b)`` int pairs, our and the partner's action indices in ``game``."""
    history = check_sequence("history", history, "(a, b) action-index pairs", nonempty=False)
    out = []
    for t, pair in enumerate(history):
        try:
            a, b = pair
        except (TypeError, ValueError):
            raise TypeError(f"history[{t}] must be an (a, b) pair of action indices, got {describe(pair)}") from None
        out.append((check_int(f"history[{t}] (our action a)", a, low=0, high=game.n_actions - 1),
                    check_int(f"history[{t}] (the partner's action b)", b, low=0, high=game.n_partner_actions - 1)))
    return out


PARTNERS = {
    "single": SingleAction,
    "tft": TitForTat,
    "cyclic": Cyclic,
    "switching": Switching,
    "mixed": Mixed,
    "adaptive": Adaptive,
}


def make_partner(name: str | Partner, **kwargs) -> Partner:
    """A partner by name: ``"single"`` (kwarg ``action``), ``"tft"``, ``"cyclic"``, ``"switching"``, ``"mixed"``,
    ``"adaptive"``; ``"single-<action>"`` is short for ``make_partner("single", action="<action>")``."""
    return _by_name(name, kwargs, table=PARTNERS, base=Partner, constant=SingleAction, prefix="single",
                    kind="partner")


def _by_name(name, kwargs: dict, *, table: dict, base: type, constant: type, prefix: str, kind: str):
    """What :func:`make_partner` and :func:`companion.tom.make_agent` share: an instance of ``base`` passes
    through, ``"<prefix>-<action>"`` builds ``constant(action)`` (an action index or word), any other name is
    looked up in ``table``; ``kwargs`` go to the constructor."""
    if isinstance(name, base):
        return name
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be a name {sorted(table)} or a{'n' if kind[0] in 'aeiou' else ''} "
                        f"{base.__name__}, got {describe(name)}")
    key = name.lower()
    if key.startswith(f"{prefix}-"):
        action = name.split("-", 1)[1]
        if not action:
            raise ValueError(f"unknown {kind} {name!r}: name the action after '{prefix}-' (e.g. '{prefix}-rock')")
        return constant(int(action) if action.isdigit() else action, **kwargs)
    if key not in table:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {sorted(table)} (or '{prefix}-<action>')")
    return table[key](**kwargs)
