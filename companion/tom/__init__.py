"""``companion.tom``: literal vs functional theory of mind of agents in repeated games (Riemer, Ashktorab,
Bouneffouf, Das, Liu, Weisz & Campbell, "Position: Theory of Mind Benchmarks are Broken for Large Language
Models", ICML 2025; v1 "Can Large Language Models Adapt to Other Agents In-Context?", arXiv 2412.19726).
No official code exists; matrices and baseline parameters are ours and stated where defined.

- :func:`get_game`, :func:`make_game`, :class:`MatrixGame` — Rock-Paper-Scissors (±1/0), Iterated Prisoner's
  Dilemma (3, 0, 5, 1), Battle of the Sexes ((2,1),(0,0),(1,2)), or any two matrices;
- partners with explicit policies — :class:`SingleAction`, :class:`TitForTat`, :class:`Cyclic`,
  :class:`Switching`, :class:`Mixed`, :class:`Adaptive`; :func:`make_partner`;
- agents — :class:`Oracle` (exact DP over the partner's policy and the remaining horizon, :func:`oracle_plan`,
  its action gaps :func:`oracle_action_gaps`),
  :class:`RMax`, :class:`FictitiousPlay`, :class:`QLearning`, :class:`Random`, the "LLM-like"
  :class:`Surrogate`, :class:`Constant` (one action every round); :func:`make_agent`;
- :func:`play` → :class:`Episode` (literal accuracy, Δ_F/T, Δ_ToM/T by the paper's definition and the one-step
  one, regret curve) and :func:`arena` for grids;
  the metrics alone: :func:`literal_accuracy`, :func:`functional_regret`, :func:`rationalized_regret`,
  :func:`regret_curve`;
- :class:`LLMAgent`, :class:`ScoringLM` (``companion.tom.llm``) — a frozen LM (SmolLM2 by default) that scores each
  legal action word by log-probability, reusing the KV cache of the growing history between rounds; prompt
  families ``PROMPTS`` (plain completion, predict-then-act, told the partner's move, no history, no payoffs),
  the action words listed in any order (:func:`action_orders`, against position bias);
  :class:`HTTPAgent` / :class:`HTTPBackend` — the same prompts sent to any OpenAI-compatible endpoint;
- ``companion.tom.experiments`` — the chapter's tables (Table-1 setting, the games × partners × agents grid, the
  horizon sweep, LLM prompt families and the oracle diagnostic); ``python -m companion tom <experiment> --full``;
- ``companion.tom.peers`` (needs ``axelrod``) — our agents as Axelrod players, Axelrod players as our agents.
"""

from .agents import (
    AGENTS,
    Agent,
    Constant,
    CountPredictor,
    FictitiousPlay,
    Oracle,
    QLearning,
    Random,
    RMax,
    Surrogate,
    best_response,
    make_agent,
    oracle_action_gaps,
    oracle_plan,
)
from .arena import arena, play
from .games import GAMES, MatrixGame, get_game, make_game
from .llm import PROMPTS, HTTPAgent, HTTPBackend, LLMAgent, ScoringLM, action_orders, parse_action, rules_text
from .metrics import DEFINITIONS, Episode, functional_regret, literal_accuracy, rationalized_regret, regret_curve
from .partners import PARTNERS, Adaptive, Cyclic, Mixed, Partner, SingleAction, Switching, TitForTat, make_partner

__all__ = [
    "action_orders", "Adaptive", "Agent", "AGENTS", "arena", "best_response", "Constant", "CountPredictor", "Cyclic",
    "Episode",
    "FictitiousPlay", "functional_regret", "GAMES", "get_game", "HTTPAgent", "HTTPBackend", "literal_accuracy",
    "LLMAgent", "make_agent", "make_game", "make_partner", "MatrixGame", "Mixed", "Oracle", "oracle_action_gaps",
    "oracle_plan", "DEFINITIONS",
    "parse_action", "Partner", "PARTNERS", "play", "PROMPTS", "QLearning", "Random", "rationalized_regret",
    "regret_curve", "RMax", "rules_text", "ScoringLM", "SingleAction", "Surrogate", "Switching", "TitForTat",
]
