"""Partners nobody here wrote: the RoShamBo competition bots shipped with OpenSpiel (``pip install open-spiel``).

OpenSpiel (Lanctot et al., 2019) bundles the 43 programs of Darse Billings' First and Second International
RoShamBo Programming Competitions (1999–2000) — from ``rockbot`` and ``rotatebot`` to ``iocainebot``, the
winner — as ``pyspiel.make_roshambo_bot(player_id, name, num_throws)`` (names: ``pyspiel.roshambo_bot_names()``).
Here each bot is the partner (player 1) in our RPS and any of our agents plays against it (:func:`play_bot`).

**Payoffs.** OpenSpiel's ``matrix_rps`` orders the actions Rock = 0, Paper = 1, Scissors = 2, with the row
player's payoffs ``[[0, -1, 1], [1, 0, -1], [-1, 1, 0]]`` (win 1, tie 0, loss −1): the same order and matrix as
our ``"rps"`` (:func:`rps_matches_openspiel` checks it), so indices pass through unchanged.

**Why not a** :class:`~companion.tom.Partner`. Our partners are small state machines that the oracle plans over
exactly; a competition bot's policy depends on the whole history (and often on ``random()``), so the oracle of
:func:`companion.tom.play` cannot be built. The regret is therefore one of two references, chosen per bot:

- a bot that is **deterministic given the history** has a per-bot oracle that simulates it and plays the move
  that beats its next throw, winning every round: ``Δ_F = Σ_t max_a A[a, b_t] − Σ_t r_t`` (= T − Σ r_t in RPS).
  :class:`BotOracle` is that oracle (its regret is 0);
- a **stochastic** bot has no such oracle; its regret is against the best fixed response in hindsight,
  ``max_a Σ_t A[a, b_t] − Σ_t r_t`` (it can be negative: an adaptive agent can beat every fixed action).

Determinism is measured (:func:`is_deterministic`): the bot is replayed against the same sequences of our moves,
and it is deterministic when every replay gives the same throws. The bots draw from the C library's
``random()``, which pyspiel does not let us seed; each replay draws a later part of that one stream, so the
replays are the "different seeds". For the same reason a bot's random throws are reproducible only in a fresh
process that makes the same calls in the same order (as ``python -m companion tom roshambo`` does).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

try:
    import pyspiel
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("companion.tom.roshambo needs OpenSpiel: pip install open-spiel") from err

from ..lab.checks import check_choice, check_int, check_type, describe
from .agents import Agent, make_agent
from .games import get_game
from .metrics import literal_accuracy

__all__ = ["BOT_NAMES", "BotOracle", "BotPartner", "is_deterministic", "play_bot", "roshambo_table",
           "rps_matches_openspiel"]

#: the 43 bot names in OpenSpiel's order
BOT_NAMES: tuple[str, ...] = tuple(pyspiel.roshambo_bot_names())


def _game_string(horizon: int) -> str:
    return f"repeated_game(stage_game=matrix_rps(),num_repetitions={horizon})"


def rps_matches_openspiel() -> bool:
    """True when OpenSpiel's ``matrix_rps`` has our ``"rps"`` action names (in order) and row/column payoffs."""
    stage = pyspiel.load_game("matrix_rps")
    rps = get_game("rps")
    names = [stage.row_action_name(k).lower() for k in range(stage.num_rows())]
    A = np.array([[stage.player_utility(0, i, j) for j in range(stage.num_cols())] for i in range(stage.num_rows())])
    B = np.array([[stage.player_utility(1, i, j) for j in range(stage.num_cols())] for i in range(stage.num_rows())])
    return names == list(rps.actions) and np.array_equal(A, rps.payoff) and np.array_equal(B, rps.partner_payoff)


class BotPartner:
    """One RoShamBo bot as the partner (player 1) in a match of ``horizon`` throws.

    Args:
        name: one of :data:`BOT_NAMES`.
        horizon: the match length T (the bots are told it; the competition used 1000).
    Raises:
        ValueError / TypeError: an unknown name, a horizon that is not an int >= 1.
    """

    def __init__(self, name: str, horizon: int) -> None:
        self.name = check_choice("bot", name, BOT_NAMES)
        self.horizon = check_int("horizon", horizon, low=1)
        self.reset()

    def reset(self) -> None:
        """A fresh bot at throw 0."""
        self.state = pyspiel.load_game(_game_string(self.horizon)).new_initial_state()
        self.bot = pyspiel.make_roshambo_bot(1, self.name, self.horizon)
        self.t = 0

    def next_move(self) -> int:
        """The bot's throw this round (0 rock, 1 paper, 2 scissors); call once per round, then :meth:`record`."""
        if self.t >= self.horizon:
            raise RuntimeError(f"the match of {self.horizon} throws is over; reset() the bot")
        return int(self.bot.step(self.state))

    def record(self, a: int, b: int) -> None:
        """Apply the round's throws (ours ``a``, the bot's ``b``)."""
        self.state.apply_actions([int(a), int(b)])
        self.t += 1

    def __repr__(self) -> str:
        return f"BotPartner({self.name!r}, horizon={self.horizon})"


class BotOracle(Agent):
    """The per-bot oracle: runs its own copy of the bot on the same history, reads its next throw and plays the
    throw that beats it. Exact (wins every round) for a bot that is deterministic given the history; against a
    stochastic bot its copy draws other random numbers and it is no oracle. Its prediction is the copy's throw.

    Args:
        bot: one of :data:`BOT_NAMES`.
    """

    name = "bot-oracle"

    def __init__(self, bot: str) -> None:
        self.bot = check_choice("bot", bot, BOT_NAMES)

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng, partner=partner)
        if not rps_matches_openspiel() or self.game.name != "rps":
            raise ValueError(f"BotOracle plays OpenSpiel's RPS; got the game {self.game.name!r}")
        self.copy = BotPartner(self.bot, horizon)

    def act(self, history, t):
        self._b = self.copy.next_move()
        return int(np.argmax(self.game.payoff[:, self._b]))

    def predict(self, history, t):
        return np.eye(self.game.n_partner_actions)[self._b]

    def observe(self, a, b, r, t):
        self.copy.record(a, b)


def play_bot(agent: str | Agent, bot: str, *, horizon: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Play ``horizon`` rounds of RPS between ``agent`` (a name from :data:`companion.tom.AGENTS` or an
    :class:`~companion.tom.Agent`, e.g. an :class:`~companion.tom.LLMAgent`) and the RoShamBo ``bot``.

    ``seed`` seeds our agent only (the bot's ``random()`` cannot be seeded; see the module docstring).

    Returns:
        a JSON-ready row: ``agent, bot, horizon, seed``; ``mean_reward`` (reward per round, in [−1, 1]);
        ``accuracy`` (literal accuracy of the agent's predictions, NaN if it makes none);
        ``regret_oracle`` = (Σ_t max_a A[a, b_t] − Σ_t r_t) / T, the regret against the per-bot oracle (valid
        when the bot is deterministic given the history); ``regret_hindsight`` = (max_a Σ_t A[a, b_t] − Σ_t r_t) / T,
        against the best fixed response in hindsight; ``actions`` and ``bot_actions`` (lists of 0/1/2).
    Raises:
        TypeError / ValueError: an unknown agent or bot, horizon not an int >= 1, seed not an int in [0, 2^32).
    """
    horizon = check_int("horizon", horizon, low=1)
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    check_choice("bot", bot, BOT_NAMES)
    agent = make_agent(agent)
    game = get_game("rps")
    partner = BotPartner(bot, horizon)
    agent.reset(game, horizon=horizon, rng=np.random.default_rng(seed))
    A = game.payoff
    history: list[tuple[int, int]] = []
    acts, bacts, preds = [], [], []
    for t in range(horizon):
        a = agent.act(history, t)
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not 0 <= a < game.n_actions:
            raise ValueError(f"{agent!r}.act returned {a!r}; expected an action index in [0, 3)")
        p = agent.predict(history, t)
        b = partner.next_move()
        partner.record(a, b)
        agent.observe(int(a), b, float(A[a, b]), t)
        history.append((int(a), b))
        acts.append(int(a))
        bacts.append(b)
        preds.append(np.full(3, np.nan) if p is None else np.asarray(p, dtype=float))
    acts_a, b_a = np.array(acts), np.array(bacts)
    total = float(A[acts_a, b_a].sum())
    best_each = float(A[:, b_a].max(0).sum())
    best_fixed = float(A[:, b_a].sum(1).max())
    return {"agent": getattr(agent, "name", type(agent).__name__), "bot": bot, "horizon": horizon, "seed": seed,
            "mean_reward": total / horizon, "accuracy": literal_accuracy(np.array(preds), b_a),
            "regret_oracle": (best_each - total) / horizon, "regret_hindsight": (best_fixed - total) / horizon,
            "actions": acts, "bot_actions": bacts}


def is_deterministic(bot: str, *, horizon: int = 1000, sequences: int = 2, replays: int = 3) -> bool:
    """Whether ``bot`` throws the same moves every time it meets the same sequence of our moves.

    ``sequences`` random sequences of our throws (numpy seeds 0, 1, ...) are each played ``replays`` times
    against a fresh bot; each replay draws a later part of the bots' shared ``random()`` stream. True when every
    replay of a sequence gives the same throws. (A bot that draws a random number only rarely could pass a short
    check; the default length is the competition's 1000 throws.)

    Raises:
        TypeError / ValueError: an unknown bot, horizon / sequences not ints >= 1, replays not an int >= 2.
    """
    check_choice("bot", bot, BOT_NAMES)
    horizon = check_int("horizon", horizon, low=1)
    sequences = check_int("sequences", sequences, low=1)
    replays = check_int("replays", replays, low=2)
    for s in range(sequences):
        ours = np.random.default_rng(s).integers(3, size=horizon)
        seen = None
        for _ in range(replays):
            p = BotPartner(bot, horizon)
            throws = []
            for a in ours:
                b = p.next_move()
                p.record(int(a), b)
                throws.append(b)
            if seen is None:
                seen = throws
            elif throws != seen:
                return False
    return True


def _check_bots(bots) -> list[str]:
    if isinstance(bots, str):
        bots = [bots]
    try:
        bots = list(bots)
    except TypeError:
        raise TypeError(f"bots must be a list of names from BOT_NAMES, got {describe(bots)}") from None
    if not bots:
        raise ValueError("bots must not be empty")
    return [check_choice(f"bots[{k}]", b, BOT_NAMES) for k, b in enumerate(bots)]


def roshambo_table(agents: Sequence[str | Agent] = ("rmax", "fictitious-play", "surrogate"),
                   bots: Iterable[str] = BOT_NAMES, *, horizon: int = 1000, seeds: Iterable[int] = (0,),
                   deterministic: dict[str, bool] | None = None) -> dict[str, Any]:
    """Each agent against each bot for each seed (:func:`play_bot`), with the per-bot reference of the regret.

    Args:
        agents: names (:data:`companion.tom.AGENTS`) or agent instances (one instance is reset per episode).
        bots: names from :data:`BOT_NAMES` (default all 43).
        horizon: T per match (default the competition's 1000).
        seeds: our agents' seeds.
        deterministic: ``{bot: bool}`` already measured; missing bots are checked with :func:`is_deterministic`
            at this horizon.
    Returns:
        ``{"bots": {bot: {"deterministic", "regret_kind"}}, "rows": [...], "summary": [...]}``: ``rows`` are
        :func:`play_bot` rows (without the move lists) plus ``regret`` — ``regret_oracle`` for a deterministic
        bot, else ``regret_hindsight`` — and ``regret_kind`` (``"oracle"`` / ``"hindsight"``); ``summary`` the mean
        and sample sd over seeds per (agent, bot).
    """
    from .experiments import summarize

    if isinstance(agents, (str, Agent)):
        agents = [agents]
    agents = list(agents)
    if not agents:
        raise ValueError("agents must not be empty")
    bots = _check_bots(bots)
    horizon = check_int("horizon", horizon, low=1)
    seeds = [check_int(f"seeds[{k}]", s, low=0, high=2**32 - 1) for k, s in enumerate(seeds)]
    if not seeds:
        raise ValueError("seeds must not be empty")
    check_type("deterministic", deterministic, (dict, type(None)), what="a dict {bot: bool} or None")
    deterministic = dict(deterministic or {})
    info = {}
    for b in bots:
        if b not in deterministic:
            deterministic[b] = is_deterministic(b, horizon=horizon)
        info[b] = {"deterministic": bool(deterministic[b]),
                   "regret_kind": "oracle" if deterministic[b] else "hindsight"}
    rows = []
    for ag in agents:
        for b in bots:
            for s in seeds:
                r = play_bot(ag, b, horizon=horizon, seed=s)
                del r["actions"], r["bot_actions"]
                r["regret_kind"] = info[b]["regret_kind"]
                r["regret"] = r["regret_oracle"] if info[b]["deterministic"] else r["regret_hindsight"]
                rows.append(r)
    summary = summarize(rows, by=("agent", "bot", "regret_kind"),
                        metrics=("regret", "regret_oracle", "regret_hindsight", "mean_reward", "accuracy"))
    return {"bots": info, "rows": rows, "summary": summary}
