"""Agents: the oracle best response, the tabular baselines, an "LLM-like" surrogate and a constant player.

Interface (driven by :func:`companion.tom.play`), rounds ``t = 0 .. T-1``, history ``h_t`` a list of
``(a, b)`` index pairs (our action, the partner's):

    agent.reset(game, horizon=T, rng=rng, partner=partner)   # only the Oracle may read ``partner``
    a_t  = agent.act(h_t, t)
    p̂_t = agent.predict(h_t, t)      # literal-ToM probe: distribution over the partner's action b_t, or None
    agent.observe(a_t, b_t, r_t, t)

``predict`` is called after ``act`` in the same round (so model-based agents may condition on the action they
are about to play) and before ``b_t`` is revealed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..lab.checks import (check_choice, check_float, check_int, check_probability, check_sequence, check_type,
                          describe)
from .games import MatrixGame, get_game
from .partners import Partner, _by_name, _check_action

__all__ = ["AGENTS", "Agent", "Constant", "CountPredictor", "FictitiousPlay", "Oracle", "QLearning", "RMax",
           "Random", "Surrogate", "best_response", "make_agent", "oracle_action_gaps", "oracle_plan"]

_TOL = 1e-9
_PLANS: dict = {}  # oracle plans by (game, partner's plan_key, horizon), reused across episodes and seeds
_MAX_PLANS = 256


def best_response(game: MatrixGame, probs: np.ndarray) -> np.ndarray:
    """The myopic best-response set to ``b ~ probs``: a bool mask ``[n]`` of ``argmax_a Σ_b probs_b A[a, b]``.

    ``game`` is a :class:`MatrixGame` or a name; ``probs`` a distribution over the partner's ``m`` actions."""
    v = get_game(game).expected_payoff(probs)
    return v >= v.max() - _TOL


def _argmax_random(values: np.ndarray, rng: np.random.Generator) -> int:
    best = np.flatnonzero(values >= values.max() - _TOL)
    return int(best[0]) if len(best) == 1 else int(best[rng.integers(len(best))])


class Agent:
    """Base class: plays uniformly at random and makes no prediction unless a subclass says otherwise."""

    name = "agent"

    def reset(self, game: MatrixGame, *, horizon: int, rng: np.random.Generator,
              partner: Partner | None = None) -> None:
        """Start an episode of ``horizon`` rounds of ``game``, drawing from ``rng``; ``partner`` is read only by
        agents that are told it (the oracle)."""
        game = get_game(game)
        horizon = check_int("horizon", horizon, low=1)
        check_type("rng", rng, np.random.Generator, what="a numpy Generator (np.random.default_rng(seed))")
        check_type("partner", partner, (Partner, type(None)), what="a Partner or None")
        self.game, self.horizon, self.rng = game, horizon, rng

    def act(self, history: Sequence[tuple[int, int]], t: int) -> int:
        raise NotImplementedError

    def predict(self, history: Sequence[tuple[int, int]], t: int) -> np.ndarray | None:
        return None

    def observe(self, a: int, b: int, r: float, t: int) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# ----------------------------------------------------------------------------------------------------- oracle
def oracle_plan(game: MatrixGame, partner: Partner, horizon: int) -> tuple[dict, float, np.ndarray]:
    """Exact finite-horizon planning against a partner whose policy is known (dynamic programming).

    Over the partner's state machine (see :mod:`companion.tom.partners`),

        Q_t(s, a) = Σ_b π(b | s, t) [A[a, b] + V_{t+1}(s')],   s' = next_state(s, a, b, t),
        V_t(s) = max_a Q_t(s, a),   V_T ≡ 0,

    over the states reachable from ``initial_state()``. Against Tit-for-Tat in IPD this cooperates every round
    but the last: a defection before round T−1 gains 5 − 3 = 2 once, but TFT answers it the next round, which then
    pays 0 (if we return to C) or 1 (if we keep defecting) instead of 3 — a net loss. A myopic best response would
    defect every round. Ties go to the lowest action index.

    Args:
        game: the stage game; partner: a partner already :meth:`~Partner.reset` for this episode.
        horizon: T.
    Returns:
        ``(policy, value, expected_rewards)``: ``policy[t][s]`` the optimal action; ``value = V_0(s_0)``, the
        optimal expected return; ``expected_rewards`` ``[T]``, the oracle's expected reward in each round when
        it follows the plan (their sum is ``value``). The Q-values are in :func:`oracle_action_gaps`.
    """
    return _solve(game, partner, horizon)[0]


def oracle_action_gaps(game: MatrixGame, partner: Partner, horizon: int, history) -> np.ndarray:
    """``[len(history), n]`` the oracle's action gaps ``V*_t(s_t) − Q*_t(s_t, a)`` along a played history.

    ``s_t`` is the partner's state before round t when the rounds went as ``history`` (``(a, b)`` index pairs, at
    most ``horizon`` of them) and Q*, V* are :func:`oracle_plan`'s. A gap is the return lost by playing ``a`` in
    round t and the oracle's plan afterwards; 0 for the oracle's own action. By the performance-difference
    identity, ``E[Σ_t gap_t(a_t)] = V* − E[Σ_t r_t] = Δ_F`` for any policy, which is why the rationalized regret
    (:func:`companion.tom.rationalized_regret`) sums the gaps of the best responses to the predictions.

    Raises ValueError if ``history`` names an action out of range or a partner move the partner could not make.
    """
    game = get_game(game)
    Q = _solve(game, partner, horizon)[1]
    hist = _history("history", history, game, horizon)
    gaps, s = np.empty((len(hist), game.n_actions)), partner.initial_state()
    for t, (a, b) in enumerate(hist):
        if partner.policy(s, t)[b] <= 0:
            raise ValueError(f"history[{t}] {(a, b)}: the partner cannot play {game.partner_actions[b]!r} in "
                             "this round (probability 0 after the earlier rounds)")
        q = Q[t][s]
        gaps[t] = max(q) - np.asarray(q)
        s = partner.next_state(s, a, b, t)
    return gaps


def _history(name: str, history, game: MatrixGame, horizon: int) -> list[tuple[int, int]]:
    """``history`` as a list of at most ``horizon`` ``(a, b)`` int pairs in range for ``game``."""
    pairs = check_sequence(name, history, "(a, b) pairs of action indices", nonempty=False)
    if len(pairs) > horizon:
        raise ValueError(f"{name} must have at most horizon={horizon} rounds, got {len(pairs)}")
    out = []
    for t, p in enumerate(pairs):
        if (not isinstance(p, (tuple, list)) or len(p) != 2
                or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in p)):
            raise TypeError(f"{name}[{t}] must be an (a, b) pair of int action indices, got {describe(p)}")
        a, b = int(p[0]), int(p[1])
        if not (0 <= a < game.n_actions and 0 <= b < game.n_partner_actions):
            raise ValueError(f"{name}[{t}] must be in [0, {game.n_actions}) x [0, {game.n_partner_actions}), "
                             f"got {(a, b)}")
        out.append((a, b))
    return out


def _solve(game: MatrixGame, partner: Partner, horizon: int) -> tuple[tuple, list]:
    """``(plan, Q)``: :func:`oracle_plan`'s ``(policy, value, expected_rewards)`` and ``Q[t][s]`` (n floats)."""
    game = get_game(game)
    check_type("partner", partner, Partner)
    horizon = check_int("horizon", horizon, low=1)
    if partner.game is None:
        raise ValueError(f"partner {partner!r} must be reset (partner.reset(game, horizon=...)) before planning "
                         "against it")
    if partner.game is not game and (partner.game.payoff.shape != game.payoff.shape
                                     or not np.array_equal(partner.game.payoff, game.payoff)
                                     or not np.array_equal(partner.game.partner_payoff, game.partner_payoff)):
        raise ValueError(f"partner {partner!r} was reset for {partner.game!r}, not for game {game!r}")
    cached = getattr(partner, "_plan_cache", None)
    if cached is not None and cached[0] is game and cached[1] == horizon:
        return cached[2]
    key = partner.plan_key()
    if key is not None:
        key = (game.payoff.shape, game.payoff.tobytes(), game.partner_payoff.tobytes(), key, horizon)
        if key in _PLANS:
            partner._plan_cache = (game, horizon, _PLANS[key])
            return _PLANS[key]
    A = game.payoff.tolist()
    n = game.n_actions
    # forward: the reachable partner states per round, and each (s, a)'s outcomes [(prob, b, s'), ...]
    layers: list[list] = [[partner.initial_state()]]
    trans: list[dict] = []
    for t in range(horizon):
        nxt: dict = {}
        tr_t = {}
        for s in layers[t]:
            p = partner.policy(s, t).tolist()
            outs = []
            for a in range(n):
                o = []
                for b, pb in enumerate(p):
                    if pb > 0:
                        s2 = partner.next_state(s, a, b, t)
                        nxt[s2] = None
                        o.append((pb, b, s2))
                outs.append(o)
            tr_t[s] = outs
        trans.append(tr_t)
        layers.append(list(nxt))
    V_next: dict = {s: 0.0 for s in layers[horizon]}
    policy: list[dict] = [None] * horizon  # type: ignore[list-item]
    Q: list[dict] = [None] * horizon  # type: ignore[list-item]
    for t in range(horizon - 1, -1, -1):
        V_t, pi_t, Q_t = {}, {}, {}
        for s, outs in trans[t].items():
            q = [sum(pb * (A[a][b] + V_next[s2]) for pb, b, s2 in outs[a]) for a in range(n)]
            best = max(q)
            a_star = next(a for a in range(n) if q[a] >= best - _TOL)
            V_t[s], pi_t[s], Q_t[s] = q[a_star], a_star, q
        policy[t], Q[t], V_next = pi_t, Q_t, V_t
    s0 = layers[0][0]
    value = V_next[s0]
    # forward again: distribution over partner states under the plan -> expected reward per round
    expected = np.zeros(horizon)
    dist = {s0: 1.0}
    for t in range(horizon):
        new: dict = {}
        for s, w in dist.items():
            a = policy[t][s]
            for pb, b, s2 in trans[t][s][a]:
                expected[t] += w * pb * A[a][b]
                new[s2] = new.get(s2, 0.0) + w * pb
        dist = new
    expected.setflags(write=False)
    result = ((policy, float(value), expected), Q)
    partner._plan_cache = (game, horizon, result)
    if key is not None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = result
    return result


class Oracle(Agent):
    """The best response to the partner's actual policy, planned over the remaining horizon (:func:`oracle_plan`).

    It is the reference of the functional regret Δ_F. It reads the partner passed to :meth:`reset` (and only it
    may); its prediction is the partner's true policy, so its literal accuracy is the best achievable.
    """

    name = "oracle"

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng, partner=partner)
        if partner is None:
            raise ValueError("Oracle needs the partner: reset(game, horizon=..., rng=..., partner=partner)")
        self.partner = partner
        self.plan, self.value, self.expected_rewards = oracle_plan(self.game, partner, horizon)
        self._state = partner.initial_state()

    def act(self, history, t):
        s = self._state
        if s not in self.plan[t]:  # off-plan (only if someone else drove the history): plan one step greedily
            return int(np.argmax(self.game._values(self.partner.policy(s, t))))
        return self.plan[t][s]

    def predict(self, history, t):
        return self.partner.policy(self._state, t)

    def observe(self, a, b, r, t):
        self._state = self.partner.next_state(self._state, a, b, t)


# ------------------------------------------------------------------------------------------------ predictors
class CountPredictor:
    """A count-based model of the partner: ``P̂(b | s, a)`` with ``s`` the last joint action.

    ``predict(s, a)`` uses the counts of ``(s, a)``; with ``backoff=True`` it falls back to the counts of ``s``
    (any a), then to all counts, then to uniform. This is the "accurate predictor" of the surrogate and the literal
    probe of the model-free agents.
    """

    def __init__(self, game: MatrixGame, *, backoff: bool = True) -> None:
        game = get_game(game)
        check_type("backoff", backoff, bool)
        n, m = game.n_actions, game.n_partner_actions
        self.n, self.m, self.backoff = n, m, backoff
        self.counts = np.zeros((1 + n * m, n, m))

    def state(self, history: Sequence[tuple[int, int]]) -> int:
        """0 before the first round, else ``1 + a·m + b`` for the last joint action."""
        if not history:
            return 0
        a, b = history[-1]
        return 1 + a * self.m + b

    def update(self, s: int, a: int, b: int) -> None:
        self.counts[s, a, b] += 1

    def predict(self, s: int, a: int | None = None) -> np.ndarray:
        tiers = [] if a is None else [self.counts[s, a]]
        if self.backoff or a is None:
            tiers += [self.counts[s].sum(0), self.counts.sum((0, 1))]
        for c in tiers:
            if c.sum() > 0:
                return c / c.sum()
        return np.full(self.m, 1.0 / self.m)


# ----------------------------------------------------------------------------------------------------- R-max
class RMax(Agent):
    """R-max (Brafman & Tennenholtz, 2002, JMLR 3): model-based RL with optimism in the face of the unknown.

    State ``s`` = the last joint action (plus a start state): ``S = 1 + n·m`` states. A pair ``(s, a)`` is
    *known* after ``m`` visits; its model is then frozen at the empirical ``P̂(b | s, a)`` (the next state is
    ``(a, b)`` and the reward ``A[a, b]``). Unknown pairs are worth ``R_max`` per remaining round. The agent replans
    only when a pair becomes known, by finite-horizon value iteration over the remaining rounds h:

        Q_h(s, a) = Σ_b P̂(b|s,a) [A[a, b] + V_{h-1}(a, b)]   if (s, a) known,   else h · R_max,

    or, with ``gamma``, by discounted value iteration with unknown pairs worth ``R_max / (1 − γ)``. Ties between
    equal values are broken at random; ``explore_ties=True`` sends them to unknown pairs first (a little more
    exploration: 0.093 instead of 0.082 regret/step in the setting below, mean of 20 seeds).

    Defaults (the paper gives none; these reproduce its 0.083 regret/step on RPS vs always-Rock at T = 100):
    ``m = 1`` (right for deterministic partners; raise it for stochastic ones), ``r_max = max A``, finite horizon.
    Literal probe: its model ``P̂(b | s, a_t)``, uniform where it has no data (``predict_backoff=True``: fall back
    to what it saw in state s, then anywhere).
    """

    name = "rmax"

    def __init__(self, *, m: int = 1, r_max: float | None = None, gamma: float | None = None,
                 explore_ties: bool = False, predict_backoff: bool = False) -> None:
        check_int("m (the known-ness threshold)", m, low=1)
        if r_max is not None:
            check_float("r_max", r_max)
        if gamma is not None:
            check_float("gamma", gamma, low=0.0, high=1.0, high_open=True)
        check_type("explore_ties", explore_ties, bool)
        check_type("predict_backoff", predict_backoff, bool)
        self.m, self.r_max, self.gamma, self.explore_ties = int(m), r_max, gamma, explore_ties
        self.predict_backoff = predict_backoff

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng)
        g = self.game
        self.model = CountPredictor(g, backoff=self.predict_backoff)
        self.known = np.zeros((1 + g.n_actions * g.n_partner_actions, g.n_actions), dtype=bool)
        self.rmax_value = g.r_max if self.r_max is None else float(self.r_max)
        self._s = 0
        self._a = None
        self._plan()

    def _plan(self) -> None:
        g, A = self.game, self.game.payoff
        n, m = g.n_actions, g.n_partner_actions
        c = self.model.counts
        tot = c.sum(-1, keepdims=True)
        P = np.divide(c, tot, out=np.zeros_like(c), where=tot > 0)  # [S, n, m]
        nxt = 1 + np.arange(n)[:, None] * m + np.arange(m)[None, :]  # [n, m] index of state (a, b)
        if self.gamma is None:
            Q = np.zeros((self.horizon + 1, len(P), n))
            V = np.zeros(len(P))
            for h in range(1, self.horizon + 1):
                q = np.einsum("sab,ab->sa", P, A + V[nxt])
                Q[h] = np.where(self.known, q, h * self.rmax_value)
                V = Q[h].max(1)
        else:
            opt = self.rmax_value / (1 - self.gamma)
            V = np.full(len(P), opt)
            for _ in range(10_000):
                q = np.where(self.known, np.einsum("sab,ab->sa", P, A + self.gamma * V[nxt]), opt)
                V2 = q.max(1)
                if np.abs(V2 - V).max() < 1e-8:
                    break
                V = V2
            Q = q
        self.Q = Q

    def act(self, history, t):
        s = self.model.state(history)
        q = self.Q[self.horizon - t, s] if self.gamma is None else self.Q[s]
        best = np.flatnonzero(q >= q.max() - 1e-9 * max(1.0, abs(q.max())))
        if self.explore_ties and not self.known[s, best].all():
            best = best[~self.known[s, best]]
        a = int(best[self.rng.integers(len(best))]) if len(best) > 1 else int(best[0])
        self._s, self._a = s, a
        return a

    def predict(self, history, t):
        return self.model.predict(self._s, self._a)

    def observe(self, a, b, r, t):
        s = self._s
        if not self.known[s, a]:
            self.model.update(s, a, b)
            if self.model.counts[s, a].sum() >= self.m:
                self.known[s, a] = True
                self._plan()


# ------------------------------------------------------------------------------------------ other baselines
class Random(Agent):
    """Uniformly random play (the Nash equilibrium of RPS); its probe is uniform (ties broken at random)."""

    name = "random"

    def act(self, history, t):
        return int(self.rng.integers(self.game.n_actions))

    def predict(self, history, t):
        return np.full(self.game.n_partner_actions, 1.0 / self.game.n_partner_actions)


class Constant(Agent):
    """Plays the same action every round, ``a_t = a₀``, whatever the partner does (the agent-side twin of the
    :class:`~companion.tom.SingleAction` partner); it makes no prediction (its literal probe is empty).

    A yardstick for Δ_F: in IPD against Tit-for-Tat, ``"defect"`` is what a myopic best response to the partner's
    last move plays every round, ``"cooperate"`` what a planner plays until the last round.

    Args:
        action: our action ``a₀``, an int index >= 0 or a word of the game's ``actions`` (case-insensitive);
            default 0, the game's first action. Whether the game has it is checked at :meth:`reset`.

    Raises:
        TypeError/ValueError: ``action`` is neither an int >= 0 nor a non-empty word (here), or not one of the
            game's actions (at :meth:`reset`); the message names ``action``.
    """

    def __init__(self, action: int | str = 0) -> None:
        self.action = _check_action("action", action)
        self.name = f"constant-{action}"

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng)
        try:
            self._k = self.game.action_index(self.action)
        except (TypeError, ValueError) as err:
            raise type(err)(f"action: {err}") from None
        self.name = f"constant-{self.game.actions[self._k]}"

    def act(self, history, t):
        return self._k


class FictitiousPlay(Agent):
    """Fictitious play: a myopic best response to the empirical frequency of the partner's actions,
    ``a_t ∈ argmax_a Σ_b (c_b + prior) A[a, b]`` (ties at random); the probe is that frequency."""

    name = "fictitious-play"

    def __init__(self, *, prior: float = 1.0) -> None:
        self.prior = check_float("prior (pseudo-count per action)", prior, low=0.0)

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng)
        self.counts = np.full(self.game.n_partner_actions, self.prior)

    def predict(self, history, t):
        tot = self.counts.sum()
        m = self.game.n_partner_actions
        return self.counts / tot if tot > 0 else np.full(m, 1.0 / m)

    def act(self, history, t):
        return _argmax_random(self.game._values(self.predict(history, t)), self.rng)

    def observe(self, a, b, r, t):
        self.counts[b] += 1


class QLearning(Agent):
    """Tabular Q-learning over the state "last joint action", ε-greedy:
    ``Q(s, a) ← Q(s, a) + α [r + γ max_a' Q(s', a') − Q(s, a)]``.

    Model-free, so it has no prediction of its own; its literal probe is a :class:`CountPredictor` over the same
    state. Defaults: ``alpha = 0.5, gamma = 0.9, epsilon = 0.1``, Q initialised to 0.
    """

    name = "q-learning"

    def __init__(self, *, alpha: float = 0.5, gamma: float = 0.9, epsilon: float = 0.1) -> None:
        self.alpha = check_probability("alpha", alpha, low_open=True)
        self.gamma = check_probability("gamma", gamma)
        self.epsilon = check_probability("epsilon", epsilon)

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng)
        self.model = CountPredictor(self.game)
        self.Q = np.zeros((1 + self.game.n_actions * self.game.n_partner_actions, self.game.n_actions))
        self._s = 0

    def act(self, history, t):
        self._s = self.model.state(history)
        if self.rng.random() < self.epsilon:
            self._a = int(self.rng.integers(self.game.n_actions))
        else:
            self._a = _argmax_random(self.Q[self._s], self.rng)
        return self._a

    def predict(self, history, t):
        return self.model.predict(self._s, self._a)

    def observe(self, a, b, r, t):
        s2 = 1 + a * self.game.n_partner_actions + b
        target = r + (self.gamma * self.Q[s2].max() if t < self.horizon - 1 else 0.0)
        self.Q[self._s, a] += self.alpha * (target - self.Q[self._s, a])
        self.model.update(self._s, a, b)


class Surrogate(Agent):
    """An "LLM-like" agent: an accurate predictor paired with a non-exploiting action rule.

    The probe is a :class:`CountPredictor` (≈ the 97 % accuracy the paper reports for large LLMs against simple
    partners). Each round it best-responds to its own prediction with probability ``exploit`` and otherwise
    follows ``rule``: ``"random"`` (uniform; the default — regret ≈ 1/step in RPS vs a constant, like Llama-2 70B's
    0.971) or ``"mirror"`` (plays the partner's predicted move, a tie in RPS). Against partners that do not react
    to our moves, Δ_ToM stays small while Δ_F is large: the paper's signature. (Against Tit-for-Tat in IPD the
    rational agent of Δ_ToM, a myopic best response, defects and has a large Δ_ToM too.)
    """

    name = "surrogate"

    def __init__(self, *, exploit: float = 0.0, rule: str = "random") -> None:
        self.exploit = check_probability("exploit", exploit)
        self.rule = check_choice("rule", rule, ("random", "mirror"))

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng)
        self.model = CountPredictor(self.game)

    def act(self, history, t):
        self._s = self.model.state(history)
        p = self.model.predict(self._s)
        if self.rng.random() < self.exploit:
            return _argmax_random(self.game._values(p), self.rng)
        if self.rule == "mirror" and self.game.n_actions == self.game.n_partner_actions:
            return _argmax_random(p, self.rng)
        return int(self.rng.integers(self.game.n_actions))

    def predict(self, history, t):
        return self.model.predict(self._s)

    def observe(self, a, b, r, t):
        self.model.update(self._s, a, b)


AGENTS = {
    "oracle": Oracle,
    "rmax": RMax,
    "fictitious-play": FictitiousPlay,
    "q-learning": QLearning,
    "random": Random,
    "surrogate": Surrogate,
    "constant": Constant,
}


def make_agent(name: str | Agent, **kwargs) -> Agent:
    """An agent by name: one of ``AGENTS`` (``"oracle"``, ``"rmax"``, ``"fictitious-play"``, ``"q-learning"``,
    ``"random"``, ``"surrogate"``, ``"constant"`` (kwarg ``action``)), hyperparameters as keyword arguments;
    ``"constant-<action>"`` is short for ``make_agent("constant", action="<action>")`` (as ``"single-<action>"``
    is for partners); an :class:`Agent` passes through.

    Raises:
        TypeError: ``name`` is neither a string nor an :class:`Agent`; ValueError: an unknown name; the agent's
            own errors for bad keyword arguments."""
    return _by_name(name, kwargs, table=AGENTS, base=Agent, constant=Constant, prefix="constant", kind="agent")
