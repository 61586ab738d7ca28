"""Bridges to the Axelrod library (``pip install axelrod``; optional, IPD only).

- :func:`axelrod_player` — one of our agents (R-max by default) as an ``axl.Player``, to enter Axelrod matches,
  tournaments and Moran processes. It plays the row player's side of our IPD with (R, S, T, P) read from the
  match's ``axl.Game`` (default 3, 0, 5, 1, our ``"ipd"``), C = our action 0 and D = action 1. When the match
  announces its length (``match_attributes["length"] = turns``, Axelrod's default) the agent plans over exactly
  those rounds, as in :func:`companion.tom.play`. When it does not (``length`` -1, as Axelrod marks an unknown
  length, or infinite, as in matches with ``prob_end``) the game is treated as unbounded — Axelrod's meaning of
  "unknown" is "no known end": R-max plans with discounted value iteration (``gamma = discount``, unknown pairs
  worth ``R_max / (1 − γ)``) instead of a finite horizon, so it has no last round to defect in.
- :class:`AxelrodAgent` — the other way round: any ``axl.Player`` as our :class:`~companion.tom.Agent`, so that
  :func:`companion.tom.play` can replay an Axelrod match and its scores can be compared.

This module imports Axelrod (``companion.tom`` itself does not), so the player class pickles and Axelrod's
parallel tournaments work.
"""

from __future__ import annotations

import numpy as np

try:
    import axelrod as axl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("companion.tom.peers needs the optional peer library axelrod: pip install axelrod") from err

from ..lab.checks import check_choice, check_float, check_int, check_type
from .agents import AGENTS, Agent, make_agent
from .games import MatrixGame, get_game, make_game

__all__ = ["AxelrodAgent", "CompanionPlayer", "axelrod_player", "ipd_from_axelrod"]


def ipd_from_axelrod(game=None) -> MatrixGame:
    """Our IPD with Axelrod's ``game.RPST()`` payoffs (default ``axl.Game()``: 3, 1, 0, 5 → our ``"ipd"``)."""
    if game is None:
        return get_game("ipd")
    R, P, S, T = (float(x) for x in game.RPST())
    if (R, S, T, P) == (3.0, 0.0, 5.0, 1.0):
        return get_game("ipd")
    return make_game([[R, S], [T, P]], [[R, T], [S, P]], name=f"ipd-{R:g}{S:g}{T:g}{P:g}",
                     actions=("cooperate", "defect"), partner_actions=("cooperate", "defect"))


C, D = axl.Action.C, axl.Action.D
#: the horizon given to agents in a match of unknown length (R-max then plans discounted; Q-learning never reaches
#: its terminal round; the other agents do not read it)
_UNBOUNDED = 2**31 - 1


class CompanionPlayer(axl.Player):
    """One of ``companion.tom``'s agents as an Axelrod player (see :func:`axelrod_player`)."""

    name = "companion"
    classifier = {"memory_depth": float("inf"), "stochastic": True, "long_run_time": False,
                  "inspects_source": False, "manipulates_source": False, "manipulates_state": False}

    def __init__(self, agent: str = "rmax", seed: int = 0, discount: float = 0.95,
                 agent_kwargs: dict | None = None) -> None:
        super().__init__()
        self.agent_name, self.agent_seed, self.discount = agent, seed, discount
        self.agent_kwargs = dict(agent_kwargs or {})
        self.name = f"{agent} (companion)"
        self._agent = None

    def _start(self) -> None:
        length = self.match_attributes.get("length", -1)
        kwargs = dict(self.agent_kwargs)
        if length is not None and 0 < length < float("inf"):
            self._T = int(length)
        else:  # no known end: an unbounded game (only R-max's finite-horizon plan reads the horizon)
            self._T = _UNBOUNDED
            if self.agent_name == "rmax" and kwargs.get("gamma") is None:
                kwargs["gamma"] = self.discount
        self._game = ipd_from_axelrod(self.match_attributes.get("game"))
        self._agent = make_agent(self.agent_name, **kwargs)
        self._agent.reset(self._game, horizon=self._T, rng=np.random.default_rng(self.agent_seed))
        self._hist: list[tuple[int, int]] = []

    def strategy(self, opponent):
        t = len(self.history)
        if t == 0 or self._agent is None:
            self._start()
        else:
            a, b = int(self.history[-1] == D), int(opponent.history[-1] == D)
            self._hist.append((a, b))
            self._agent.observe(a, b, float(self._game.payoff[a, b]), t - 1)
        if t >= self._T:  # an unannounced match longer than planned: keep the last plan's final step
            return C if self._agent.act(self._hist, self._T - 1) == 0 else D
        return C if self._agent.act(self._hist, t) == 0 else D


def axelrod_player(agent: str = "rmax", *, seed: int = 0, discount: float = 0.95, **agent_kwargs):
    """An ``axl.Player`` that plays our ``agent`` (a name from :data:`companion.tom.AGENTS` other than the oracle,
    which needs to read its partner's policy); hyperparameters as keyword arguments (e.g. ``m=1``).

    Args:
        agent: the agent's name. seed: its random stream (an int in [0, 2**32 − 1]).
        discount: γ in [0, 1) of R-max's discounted plan when the match length is unknown (Axelrod's
            ``length`` -1 or infinite: an unbounded game; see the module docstring). A ``gamma=`` among the
            hyperparameters is used in every match instead. Default 0.95 (an effective horizon of 20 rounds).
    Raises:
        ValueError / TypeError: an unknown agent, a bad seed or discount, or bad hyperparameters.
    """
    check_choice("agent", agent, sorted(set(AGENTS) - {"oracle"}))
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    discount = check_float("discount", discount, low=0.0, high=1.0, high_open=True)
    make_agent(agent, **agent_kwargs)  # validate the hyperparameters now
    return CompanionPlayer(agent=agent, seed=seed, discount=discount, agent_kwargs=agent_kwargs)


class AxelrodAgent(Agent):
    """Any ``axl.Player`` (e.g. ``axl.TitForTat()``) as our row player in IPD, for :func:`companion.tom.play`.

    Each round it asks ``player.strategy(shadow)``, where ``shadow`` is a bare ``axl.Player`` holding the partner's
    moves, and then updates both histories as ``axl.Match`` does. Deterministic strategies only make sense for
    score comparisons (stochastic ones draw from Axelrod's own random state).
    """

    def __init__(self, player) -> None:
        check_type("player", player, axl.Player, what="an axelrod.Player instance")
        self.player, self.name = player, player.name
        self._C, self._D = axl.Action.C, axl.Action.D
        self._shadow_cls = axl.Player

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng)
        if self.game.n_actions != 2 or self.game.n_partner_actions != 2:
            raise ValueError(f"AxelrodAgent plays two-action games (IPD), got {self.game!r}")
        self.player.reset()
        self.player.set_match_attributes(length=horizon)
        self.shadow = self._shadow_cls()
        self.shadow.set_match_attributes(length=horizon)

    def act(self, history, t):
        return int(self.player.strategy(self.shadow) == self._D)

    def observe(self, a, b, r, t):
        act = (self._C, self._D)
        self.player.update_history(act[a], act[b])
        self.shadow.update_history(act[b], act[a])
