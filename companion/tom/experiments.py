"""The chapter's experiments, each returning JSON-ready dicts (the notebooks plot them; ``python -m companion tom
<experiment> --full`` saves the larger runs under ``results/tom/``).

- :func:`table1` — the paper's Table-1 setting, RPS against an always-Rock partner at T = 100: the tabular agents
  over several seeds (and, given a model, the LLM rows of :func:`llm_runs`), next to :data:`PAPER_TABLE1`;
- :func:`grid` — every game × partner × agent over several seeds (:func:`companion.tom.arena`), averaged;
- :func:`horizon_sweep` — Δ_F/T, Δ_ToM/T and accuracy as the horizon T grows;
- :func:`llm_runs` — a language model with several prompt families (SmolLM2 scored locally, or any
  OpenAI-compatible endpoint through :class:`~companion.tom.HTTPBackend`), with the unparseable replies counted;
- :func:`oracle_diagnostic` — the same model told its partner's next move (prompt ``"oracle"``): does it exploit it?

The partners (:func:`make_partner_factory`): the paper's **single action** and **Tit-for-Tat**, and the book's
extension, **cyclic** and **switching** (see :mod:`companion.tom.partners`). The single-action partner plays
:data:`SINGLE_ACTION` of each game.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..lab.checks import check_choice, check_float, check_int, check_type, describe
from .agents import AGENTS, Agent, RMax, make_agent
from .arena import arena, play
from .games import GAMES, MatrixGame, get_game
from .metrics import Episode
from .partners import Cyclic, Partner, SingleAction, Switching, TitForTat

__all__ = ["EXTRA_AGENTS", "GAME_NAMES", "LLM_PROMPTS", "PAPER_ORACLE", "PAPER_TABLE1", "PARTNER_KINDS", "SINGLE_ACTION",
           "TABULAR_AGENTS", "TOM_METRICS", "best_response_rate", "episode_row", "grid", "horizon_sweep", "llm_runs",
           "make_partner_factory", "oracle_diagnostic", "order_spread", "summarize", "table1"]

GAME_NAMES = ("rps", "ipd", "bos")
#: the learning baselines of the chapter (the oracle is the reference, regret 0 by construction)
TABULAR_AGENTS = ("rmax", "fictitious-play", "q-learning", "random", "surrogate")
#: extra agent variants by name: R-max whose literal probe falls back to what it saw elsewhere when it has no data
#: for the current (state, action) (instead of a uniform guess)
EXTRA_AGENTS: dict[str, Callable[[], Agent]] = {"rmax-backoff": lambda: RMax(predict_backoff=True)}
#: the paper's two partner types, then the book's extension
PARTNER_KINDS = ("single", "tft", "cyclic", "switching")
#: the move of the single-action partner in each game (the paper's Table 1: always Rock)
SINGLE_ACTION = {"rps": "rock", "ipd": "cooperate", "bos": "opera"}
#: the metrics averaged by :func:`grid`: Δ_F/T, Δ_ToM/T (the paper's definition, then the one-step one), accuracy
TOM_METRICS = ("regret", "tom_regret", "tom_regret_one_step", "accuracy")
#: the prompt families of the Table-1 LLM rows (see :data:`companion.tom.PROMPTS`)
LLM_PROMPTS = ("lm", "social")

#: Riemer et al. (arXiv 2412.19726), RPS vs a single-action partner, T = 100, from a secondary transcription of
#: the paper's table (no official code): Δ_F/T, Δ_ToM/T and literal accuracy.
PAPER_TABLE1: list[dict[str, Any]] = [
    {"agent": "Tabular R-max", "regret": 0.083, "tom_regret": 0.039, "accuracy": 0.974},
    {"agent": "Llama-2 70B", "regret": 0.971, "tom_regret": 0.048, "accuracy": 0.968},
    {"agent": "Llama-2 70B chat", "regret": 0.857, "tom_regret": 0.119, "accuracy": 0.921},
    {"agent": "Mixtral 8x7B instruct", "regret": 0.542, "tom_regret": 0.050, "accuracy": 0.967},
]
#: Llama-3 70B Δ_F/T per game (RPS / BoS / IPD, single-action partner) from the same transcription: the tabular
#: R-max, the QA prompt, and the "Oracle" prompt that tells the model its partner's next move.
PAPER_ORACLE: dict[str, dict[str, float]] = {
    "tabular": {"rps": 0.083, "bos": 0.211, "ipd": 0.086},
    "qa": {"rps": 0.444, "bos": 1.391, "ipd": 0.996},
    "oracle": {"rps": 0.238, "bos": 1.343, "ipd": 0.839},
}


# ------------------------------------------------------------------------------------------------- helpers
def _as_list(kind: str, values, what: str) -> list:
    """``values`` as a non-empty list; a lone string is a list of one name (not of its characters)."""
    if isinstance(values, str):
        return [values]
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{kind} must be a list of {what}, got {describe(values)}") from None
    if not values:
        raise ValueError(f"{kind} must not be empty")
    return values


def _check_names(kind: str, names, allowed) -> list[str]:
    """A non-empty list of names, each one of ``allowed`` (a lone name is a list of one)."""
    names = _as_list(kind, names, f"names from {list(allowed)}")
    for i, n in enumerate(names):
        check_choice(f"{kind}[{i}]", n, list(allowed))
    return names


def _check_ints(kind: str, values, *, low: int, high: int | None = None) -> list[int]:
    """A non-empty list of ints in ``[low, high]`` (a lone int is not accepted: ``seeds=5`` could mean seed 5 or
    five seeds)."""
    values = _as_list(kind, values, "ints (e.g. range(5))")
    return [check_int(f"{kind}[{i}]", v, low=low, high=high) for i, v in enumerate(values)]


def make_partner_factory(game: str | MatrixGame, kind: str) -> Callable[[], Partner]:
    """A zero-argument factory of the chapter's partner ``kind`` in ``game``:

    ``"single"`` — always :data:`SINGLE_ACTION` ``[game]`` (the first action for a custom game); ``"tft"`` —
    Tit-for-Tat (opens with the first action, then copies our last move; in IPD Axelrod's TFT); ``"cyclic"`` —
    every action in turn (R→P→S; C, D; opera, football); ``"switching"`` — a random constant that changes to
    another at a random round in [T/4, 3T/4].
    """
    g = get_game(game)
    check_choice("kind", kind, PARTNER_KINDS)
    if kind == "single":
        action = SINGLE_ACTION.get(g.name, 0) if g.name in GAMES else 0
        return lambda: SingleAction(action)
    if kind == "tft":
        return lambda: TitForTat()
    if kind == "cyclic":
        return lambda: Cyclic()
    return lambda: Switching()


def best_response_rate(episode: Episode) -> float:
    """Share of rounds whose action is a myopic best response to the partner's *actual* move that round,
    ``mean_t 1[a_t ∈ argmax_a A[a, b_t]]`` — for the oracle prompt, how often the model used the move it was told."""
    check_type("episode", episode, Episode, what="an Episode from companion.tom.play")
    A = episode.game.payoff
    cols = A[:, episode.partner_actions]  # [n, T]
    best = cols >= cols.max(0, keepdims=True) - 1e-9
    return float(best[episode.actions, np.arange(episode.horizon)].mean())


def episode_row(episode: Episode, **extra) -> dict[str, Any]:
    """An episode's JSON-ready summary plus the best-response rate and the count of each of our actions."""
    check_type("episode", episode, Episode, what="an Episode from companion.tom.play")
    g = episode.game
    counts = np.bincount(episode.actions, minlength=g.n_actions)
    return {**episode.summary(), "br_rate": best_response_rate(episode),
            "action_counts": {w: int(c) for w, c in zip(g.actions, counts)}, **extra}


def summarize(rows: Sequence[dict], *, by: Sequence[str] = ("game", "agent", "partner"),
              metrics: Sequence[str] = ("regret", "tom_regret", "accuracy")) -> list[dict[str, Any]]:
    """Group ``rows`` (one per episode) by the keys ``by`` and give each metric's mean and sample standard
    deviation (ddof 1; 0.0 for a single episode) over the group (``<metric>`` and ``<metric>_std``), with ``n`` the
    number of episodes. Groups keep first-seen order."""
    if isinstance(rows, (str, bytes, dict)):
        raise TypeError(f"rows must be a list of dicts (one per episode), got {describe(rows)}")
    rows = _as_list("rows", rows, "dicts (one per episode)")
    by = _as_list("by", by, "row keys")
    metrics = _as_list("metrics", metrics, "row keys")
    groups: dict[tuple, list[dict]] = {}
    for i, r in enumerate(rows):
        check_type(f"rows[{i}]", r, dict)
        missing = [k for k in (*by, *metrics) if k not in r]
        if missing:
            raise ValueError(f"row lacks the keys {missing}; it has {sorted(r)}")
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        s: dict[str, Any] = dict(zip(by, key))
        for mname in metrics:
            v = np.array([r[mname] for r in rs], dtype=float)
            v = v[~np.isnan(v)]
            s[mname] = float(v.mean()) if v.size else float("nan")
            s[f"{mname}_std"] = (float(v.std(ddof=1)) if v.size > 1 else 0.0) if v.size else float("nan")
        s["n"] = len(rs)
        out.append(s)
    return out


# --------------------------------------------------------------------------------------------- tabular runs
def grid(*, games: Iterable[str] = GAME_NAMES, partners: Iterable[str] = PARTNER_KINDS,
         agents: Iterable[str] = TABULAR_AGENTS, seeds: Iterable[int] = range(5), horizon: int = 100
         ) -> dict[str, Any]:
    """Every game × partner × agent × seed at horizon T (:func:`companion.tom.arena`), averaged over seeds.

    Returns ``{"settings", "summary", "rows", "seconds"}``: ``summary`` one dict per (game, agent, partner) with the
    mean and std of Δ_F/T (``regret``), Δ_ToM/T by the paper's definition (``tom_regret``) and the one-step one
    (``tom_regret_one_step``, see :func:`companion.tom.rationalized_regret`) and ``accuracy`` over seeds; ``rows``
    one per episode.
    """
    games = _check_names("games", games, GAMES)
    partners = _check_names("partners", partners, PARTNER_KINDS)
    agents = _check_names("agents", agents, [*AGENTS, *EXTRA_AGENTS])
    seeds = _check_ints("seeds", seeds, low=0, high=2**32 - 1)
    horizon = check_int("horizon", horizon, low=1)
    start = time.perf_counter()
    rows = []
    for g in games:
        facts = {k: make_partner_factory(g, k) for k in partners}
        for r in arena(g, {a: EXTRA_AGENTS.get(a, lambda a=a: make_agent(a)) for a in agents}, facts, horizon=horizon, seeds=seeds):
            r["partner"] = r.pop("partner_label")  # the kind ("single"), not the instance name ("single-rock")
            rows.append(r)
    return {"settings": {"games": games, "partners": partners, "agents": agents, "seeds": seeds,
                         "horizon": horizon, "single_action": {g: SINGLE_ACTION[g] for g in games}},
            "summary": summarize(rows, metrics=TOM_METRICS), "rows": rows, "seconds": time.perf_counter() - start}


def table1(*, seeds: Iterable[int] = range(20), horizon: int = 100,
           agents: Iterable[str] = ("rmax", "rmax-backoff", *TABULAR_AGENTS[1:])) -> dict[str, Any]:
    """The paper's Table-1 setting for the tabular agents: RPS against always-Rock, T = 100, several seeds.

    Returns :func:`grid`'s dict for that one cell, plus ``"paper"`` (:data:`PAPER_TABLE1`). The LLM rows come from
    :func:`llm_runs` (the CLI's ``table1`` experiment adds them).
    """
    out = grid(games=["rps"], partners=["single"], agents=agents, seeds=seeds, horizon=horizon)
    out["paper"] = PAPER_TABLE1
    return out


def horizon_sweep(*, horizons: Iterable[int] = (10, 30, 100, 300, 1000), agents: Iterable[str] = TABULAR_AGENTS,
                  game: str = "rps", partners: Iterable[str] = ("single", "switching"),
                  seeds: Iterable[int] = range(5)) -> dict[str, Any]:
    """Δ_F/T, Δ_ToM/T and accuracy of each agent as the horizon T grows (one :func:`grid` per T).

    Returns ``{"settings", "summary", "seconds"}``; each summary row carries its ``horizon``.
    """
    horizons = _check_ints("horizons", horizons, low=1)
    # the grids' own checks, once before the first (slow) one runs
    check_choice("game", game, list(GAMES))
    agents = _check_names("agents", agents, [*AGENTS, *EXTRA_AGENTS])
    partners = _check_names("partners", partners, PARTNER_KINDS)
    seeds = _check_ints("seeds", seeds, low=0, high=2**32 - 1)
    start = time.perf_counter()
    summary = []
    for T in horizons:
        res = grid(games=[game], partners=partners, agents=agents, seeds=seeds, horizon=T)
        summary += [{**s, "horizon": T} for s in res["summary"]]
    return {"settings": {"horizons": horizons, "agents": list(agents), "game": game, "partners": list(partners),
                         "seeds": list(seeds)}, "summary": summary, "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------------- LLM runs
def _llm_factory(model, tokenizer, backend) -> Callable[..., Agent]:
    from .llm import HTTPAgent, HTTPBackend, LLMAgent, _check_model

    if backend is not None:
        if not isinstance(backend, HTTPBackend):
            raise TypeError(f"backend must be an HTTPBackend, got {type(backend).__name__}")
        if model is not None:
            raise TypeError("give either a local model (model, tokenizer) or an HTTP backend, not both")

        def make_http(prompt: str, temperature: float, order=None) -> Agent:
            if temperature != 0:
                raise ValueError("the HTTP backend asks at temperature 0; use temperature=0 with backend=")
            return HTTPAgent(backend, prompt=prompt, order=order)

        return make_http
    if model is None or tokenizer is None:
        raise TypeError("llm runs need a model and its tokenizer (companion.lab.load_model()) or backend=")
    _check_model(model, tokenizer)
    agent_cache: dict = {}

    def make_local(prompt: str, temperature: float, order=None) -> Agent:  # one agent per family and order
        key = (prompt, temperature, order)
        if key not in agent_cache:
            agent_cache[key] = LLMAgent(model, tokenizer, prompt=prompt, temperature=temperature, order=order)
        return agent_cache[key]

    return make_local


def llm_runs(model=None, tokenizer=None, *, backend=None, game: str = "rps", partner: str = "single",
             prompts: Sequence[str] = LLM_PROMPTS, horizon: int = 100, seeds: Iterable[int] = (0,),
             temperature: float = 0.0, label: str = "SmolLM2-135M", orders=None) -> list[dict[str, Any]]:
    """A language model playing ``game`` against the chapter's ``partner`` with each prompt family.

    Args:
        model, tokenizer: a local causal LM scored by :class:`~companion.tom.LLMAgent`; or
        backend: an :class:`~companion.tom.HTTPBackend` (answers parsed by :class:`~companion.tom.HTTPAgent`).
        prompts: families from :data:`companion.tom.PROMPTS`.
        temperature: 0 plays the best-scored action (then every seed gives the same episode against a
            deterministic partner); > 0 samples ``softmax(log p / temperature)`` with the seed's stream.
        label: the model's name in the rows.
        orders: the listing orders of the action words in the prompt (:func:`companion.tom.rules_text`):
            None (default) the game's own order only; ``"all"`` every order (:func:`companion.tom.action_orders`:
            6 for RPS, 2 for IPD and BoS), a balanced design against position bias; or a list of orders.
    Returns:
        one row per (prompt, order, seed): :func:`episode_row` plus ``model, prompt, order, temperature,
        seconds`` and ``invalid`` / ``invalid_predictions`` — the replies that named no legal action (always 0
        when scoring); for a scoring agent also ``first_action_probs`` / ``first_prediction_probs`` (round 1,
        before any history) and, for the social and oracle prompts, ``copy_rate`` (see :func:`_scored_extras`). ``summarize(rows, by=("prompt", "order"))`` gives the per-order table,
        ``summarize(rows, by=("prompt",))`` the mean and spread over orders.
    """
    from .llm import PROMPTS

    prompts = _check_names("prompts", prompts, PROMPTS)
    seeds = _check_ints("seeds", seeds, low=0, high=2**32 - 1)
    horizon = check_int("horizon", horizon, low=1)
    temperature = check_float("temperature", temperature, low=0.0)
    check_type("label", label, str)
    check_choice("partner", partner, PARTNER_KINDS)
    get_game(game)
    from .llm import _order, action_orders

    g = get_game(game)
    if orders is None:
        order_list = [tuple(g.actions)]
    elif isinstance(orders, str):
        check_choice("orders", orders, ["all"])
        order_list = action_orders(g)
    else:
        order_list = [tuple(g.actions[a] for a in _named_order(g, k, o, _order))
                      for k, o in enumerate(_as_list("orders", orders, "orders (lists of action words)"))]
    make = _llm_factory(model, tokenizer, backend)
    part = make_partner_factory(game, partner)
    rows = []
    for prompt in prompts:
        for order in order_list:
            for seed in seeds:
                agent = make(prompt, float(temperature), None if order == tuple(g.actions) else order)
                start = time.perf_counter()
                ep = play(game, agent, part(), horizon=horizon, seed=seed)
                rows.append(episode_row(ep, partner=partner, model=label, prompt=prompt, order=" ".join(order),
                                        temperature=float(temperature),
                                        invalid_predictions=int(getattr(agent, "invalid_predictions", 0)),
                                        seconds=time.perf_counter() - start, **_scored_extras(agent, ep)))
    return rows


def _softmax(lp) -> list[float]:
    z = np.asarray(lp, dtype=float)
    p = np.exp(z - z.max())
    return [float(x) for x in p / p.sum()]


def _scored_extras(agent: Agent, ep: Episode) -> dict[str, Any]:
    """What a scoring agent adds to its row: round-1 probabilities of our actions and of the partner's
    (``first_action_probs``, ``first_prediction_probs``, in the game's own action order), and for the social and
    oracle prompts ``copy_rate``, the share of rounds whose move is the word written into the action query (the
    model's own prediction, or the partner's actual move)."""
    out: dict[str, Any] = {}
    if getattr(agent, "action_logprobs", None):
        out["first_action_probs"] = _softmax(agent.action_logprobs[0])
    if getattr(agent, "prediction_logprobs", None):
        out["first_prediction_probs"] = _softmax(agent.prediction_logprobs[0])
    told = getattr(agent, "told", None)
    if told:
        g = ep.game
        words = [g.actions[a].lower() for a in ep.actions]
        out["copy_rate"] = float(np.mean([w == g.partner_actions[k].lower() for w, k in zip(words, told)]))
    return out


def order_spread(rows: Sequence[dict], *, by: Sequence[str] = ("game", "partner", "prompt"),
                 metrics: Sequence[str] = ("regret", "tom_regret", "accuracy", "br_rate")) -> list[dict[str, Any]]:
    """Mean ± spread of each metric over the listing orders (one row per order) within each group ``by``:
    ``<metric>`` the mean, ``<metric>_sd`` the sample sd (ddof 1), ``<metric>_ci`` the 95% t-interval
    (:func:`companion.lab.stats.spread`), ``<metric>_min`` / ``_max`` the extremes over orders, ``n`` the
    number of orders. A metric missing from a group's rows is skipped for that group.

    Raises:
        TypeError / ValueError: as :func:`summarize` (rows a list of dicts having the ``by`` keys).
    """
    from ..lab.stats import spread

    rows = _as_list("rows", rows, "dicts (one per episode)")
    by = _as_list("by", by, "row keys")
    metrics = _as_list("metrics", metrics, "row keys")
    groups: dict[tuple, list[dict]] = {}
    for i, r in enumerate(rows):
        check_type(f"rows[{i}]", r, dict)
        missing = [k for k in by if k not in r]
        if missing:
            raise ValueError(f"rows[{i}] lacks the keys {missing}; it has {sorted(r)}")
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        s: dict[str, Any] = {**dict(zip(by, key)), "n": len(rs), "orders": [r.get("order") for r in rs]}
        for m in metrics:
            vals = [float(r[m]) for r in rs if m in r]
            if not vals:
                continue
            sp = spread(vals)
            s |= {m: sp.mean, f"{m}_sd": sp.sd, f"{m}_ci": [sp.low, sp.high], f"{m}_min": min(vals),
                  f"{m}_max": max(vals)}
        out.append(s)
    return out


def _named_order(game: MatrixGame, k: int, order, check) -> list[int]:
    """``check(game, order)`` (the indices of a listing order) with its error prefixed ``orders[k]``."""
    try:
        return check(game, order)
    except (TypeError, ValueError) as err:
        raise type(err)(f"orders[{k}]: {err}") from None


def oracle_diagnostic(model=None, tokenizer=None, *, backend=None, games: Iterable[str] = GAME_NAMES,
                      partners: Iterable[str] = ("single", "tft"), prompts: Sequence[str] = ("lm", "oracle"),
                      horizon: int = 100, seed: int = 0, label: str = "SmolLM2-135M", orders=None
                      ) -> list[dict[str, Any]]:
    """The model told its partner's next move (prompt ``"oracle"``) next to the plain prompt, game by game.

    The key column is ``br_rate`` (:func:`best_response_rate`): with the answer in the prompt, a model that acts
    on it best-responds in every round (rate 1; against TFT in IPD the oracle plan cooperates instead, so there a
    rate near 1 means short-sighted defection). ``orders``: None (the game's own listing of the action words)
    or ``"all"`` (every listing order, :func:`llm_runs`). Returns :func:`llm_runs` rows with the ``game`` of each.
    """
    games = _check_names("games", games, GAMES)
    partners = _check_names("partners", partners, PARTNER_KINDS)
    from .llm import PROMPTS

    prompts = _check_names("prompts", prompts, PROMPTS)
    horizon = check_int("horizon", horizon, low=1)
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    check_type("label", label, str)
    if orders is not None:
        check_choice("orders", orders, ["all"])
    _llm_factory(model, tokenizer, backend)  # the model/backend checks, before the first game
    rows = []
    for g in games:
        for p in partners:
            rows += llm_runs(model, tokenizer, backend=backend, game=g, partner=p, prompts=prompts, horizon=horizon,
                             seeds=[seed], temperature=0.0, label=label, orders=orders)
    return rows
