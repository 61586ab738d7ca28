"""Playing repeated games: :func:`play` (one episode) and :func:`arena` (a grid of them).

Seeding: ``seed`` makes an ``np.random.SeedSequence`` split into two independent streams, one for the agent and
one for the partner (its per-episode draws, e.g. the switching step, and its per-round dice). So the partner
behaves identically for every agent under the same seed, as long as the agent's actions are the same.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

import numpy as np

from ..lab.checks import check_int, check_type, describe
from .agents import Agent, _solve, make_agent
from .games import MatrixGame, get_game
from .metrics import Episode
from .partners import Partner, make_partner

__all__ = ["arena", "play"]


#: seeds are 32-bit, as everywhere in the companion (``np.random.SeedSequence`` takes larger ones, but a seed
#: should mean the same thing in every chapter)
_SEED_MAX = 2**32 - 1


def play(game: str | MatrixGame, agent: str | Agent, partner: str | Partner, *, horizon: int = 100,
         seed: int = 0) -> Episode:
    """Play ``horizon`` rounds of ``game`` between ``agent`` (row player) and ``partner``; return the
    :class:`Episode` with literal accuracy, Δ_F/T, Δ_ToM/T (both definitions) and the regret curve.

    The oracle's plan against this partner (its r*_t) is computed once per episode, after the partner's reset, so
    it sees the same realised partner (e.g. the same switching step). T = 100 in the paper's main tables.
    """
    game = get_game(game)
    horizon = check_int("horizon", horizon, low=1)
    seed = check_int("seed", seed, low=0, high=_SEED_MAX)
    agent, partner = make_agent(agent), make_partner(partner)
    agent_ss, partner_ss = np.random.SeedSequence(seed).spawn(2)
    prng = np.random.default_rng(partner_ss)
    partner.reset(game, horizon=horizon, rng=prng)
    (_, value, oracle_rewards), Q = _solve(game, partner, horizon)  # oracle_plan, with its Q-values
    agent.reset(game, horizon=horizon, rng=np.random.default_rng(agent_ss), partner=partner)

    n, m = game.n_actions, game.n_partner_actions
    A, B = game.payoff, game.partner_payoff
    acts: list[int] = []
    pacts: list[int] = []
    preds: list = []  # p̂_t or None
    pols: list = []  # π_t
    history: list[tuple[int, int]] = []
    state = partner.initial_state()
    gaps: list = []  # V*_t(s_t) - Q*_t(s_t, a) along the played states (oracle_action_gaps)
    draw, A_list = prng.random, A.tolist()
    as_list: dict = {}  # id(π) -> (π, π as a list, Σπ), for read-only π
    for t in range(horizon):
        a = agent.act(history, t)
        if type(a) is not int or not 0 <= a < n:  # fast path for a plain int, else the full check
            if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not 0 <= a < n:
                raise ValueError(f"{agent!r}.act returned {a!r}; expected an action index in [0, {n})")
            a = int(a)
        preds.append(agent.predict(history, t))
        pi = partner.policy(state, t)
        pols.append(pi)
        q = Q[t][state]
        top = max(q)
        gaps.append([top - x for x in q])
        # b ~ π_t by inverse CDF: the first b whose cumulative probability exceeds u·Σπ (one uniform per round,
        # from the partner's stream, whatever the policy; a plain loop is much faster than numpy for m <= 3)
        cached = as_list.get(id(pi))
        if cached is None or cached[0] is not pi:
            pl = pi.tolist()
            cached = (pi, pl, sum(pl))
            if not pi.flags.writeable:  # the built-in partners reuse read-only policy arrays: convert each once
                as_list[id(pi)] = cached
        _, pl, total = cached
        x = draw() * total
        acc, b = 0.0, m - 1
        for k, pk in enumerate(pl):
            acc += pk
            if x < acc:
                b = k
                break
        while pl[b] == 0:  # guard against round-off landing on a zero-probability action
            b -= 1
        agent.observe(a, b, A_list[a][b], t)
        state = partner.next_state(state, a, b, t)
        history.append((a, b))
        acts.append(a)
        pacts.append(b)
    acts = np.asarray(acts, dtype=np.int64)
    pacts = np.asarray(pacts, dtype=np.int64)
    pols = np.asarray(pols, dtype=float).reshape(horizon, m)
    preds = np.asarray([np.full(m, np.nan) if p is None else p for p in preds], dtype=float).reshape(horizon, m)
    rewards = A[acts, pacts]
    expected = (pols * A[acts]).sum(1)
    return Episode(game=game, agent=agent.name, partner=partner.name, horizon=horizon, seed=seed, actions=acts,
                   partner_actions=pacts, rewards=rewards, partner_rewards=B[acts, pacts], expected_rewards=expected,
                   oracle_rewards=oracle_rewards, predictions=preds, partner_policies=pols,
                   action_gaps=np.asarray(gaps, dtype=float).reshape(horizon, n), oracle_value=value,
                   invalid=int(getattr(agent, "invalid", 0)))


def _factory(kind: str, spec, make) -> tuple[str, Callable]:
    if isinstance(spec, str):
        _named(kind, make, spec)  # validate the name now
        return spec, lambda: make(spec)
    if callable(spec) and not isinstance(spec, (Agent, Partner)):
        return getattr(spec, "name", getattr(spec, "__name__", kind)), spec
    if isinstance(spec, (Agent, Partner)):
        return spec.name, lambda: spec
    raise TypeError(f"{kind} must be a name, an instance or a zero-argument factory, got {describe(spec)}")


def _named(kind: str, make: Callable, spec):
    """``make(spec)``, its TypeError/ValueError prefixed with ``kind`` (e.g. ``agents[1]: unknown agent ...``)."""
    try:
        return make(spec)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{kind}: {err}") from None


def _listed(kind: str, specs, single: tuple) -> list:
    """``specs`` as a non-empty list (one item of the ``single`` types becomes a list of one)."""
    if isinstance(specs, single):
        return [specs]
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Iterable):
        raise TypeError(f"{kind} must be a list (or one item), got {describe(specs)}")
    specs = list(specs)
    if not specs:
        raise ValueError(f"{kind} must not be empty")
    return specs


def _items(kind: str, specs, make) -> list[tuple[str, Callable]]:
    if isinstance(specs, Mapping):
        if not specs:
            raise ValueError(f"{kind} must not be empty")
        return [(str(k), _factory(f"{kind}[{k!r}]", v, make)[1]) for k, v in specs.items()]
    specs = _listed(kind, specs, (str, Agent, Partner))
    return [_factory(f"{kind}[{i}]", s, make) for i, s in enumerate(specs)]


def arena(games: Iterable, agents: Iterable | Mapping, partners: Iterable | Mapping, *, horizon: int = 100,
          seeds: Iterable[int] = (0,), episodes: bool = False) -> list[dict]:
    """Play every game × agent × partner × seed and return one JSON-ready row per episode.

    Agents and partners are given as names (``"rmax"``, ``"tft"``, ``"single-rock"``), instances (reset before each
    episode) or zero-argument factories; a mapping ``{label: spec}`` sets the row labels. Each row holds
    ``game, agent, partner, seed, horizon, regret (Δ_F/T), tom_regret (Δ_ToM/T), accuracy, return, oracle_value,
    invalid, seconds``; with ``episodes=True`` also the :class:`Episode` under ``"episode"``.
    """
    horizon = check_int("horizon", horizon, low=1)
    games = [_named(f"games[{i}]", get_game, g) for i, g in enumerate(_listed("games", games, (str, MatrixGame)))]
    agent_items, partner_items = _items("agents", agents, make_agent), _items("partners", partners, make_partner)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise TypeError(f"seeds must be a list of ints (e.g. range(5)), got {describe(seeds)}")
    seeds = [check_int(f"seeds[{i}]", s, low=0, high=_SEED_MAX) for i, s in enumerate(seeds)]
    if not seeds:
        raise ValueError("seeds must not be empty")
    check_type("episodes", episodes, bool)
    rows = []
    for g in games:
        for a_label, a_make in agent_items:
            for p_label, p_make in partner_items:
                for s in seeds:
                    t0 = time.perf_counter()
                    ep = play(g, a_make(), p_make(), horizon=horizon, seed=s)
                    row = ep.summary() | {"agent": a_label, "partner_label": p_label,
                                          "seconds": time.perf_counter() - t0}
                    if episodes:
                        row["episode"] = ep
                    rows.append(row)
    return rows
