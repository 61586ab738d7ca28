"""Bad-input table of ``companion.tom`` (see tests/badinput.py)."""

from __future__ import annotations

import math

import numpy as np

from badinput import Choice, Custom, Float, Int, NoArguments, Spec, cli_spec
from badinput_lab import tiny_lm
from companion import tom
from companion.tom.cli import HELP

NAN, INF = math.nan, math.inf


class ByteTokenizer:
    """The one tokenizer call :class:`~companion.tom.ScoringLM` makes, on bytes modulo 32 (tiny_lm's vocabulary)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [b % 32 for b in text.encode()]}


def _rng():
    return np.random.default_rng(0)


def _ready(partner, game="rps", horizon=4):
    """``partner`` after its reset for ``game`` (the partners check their actions against the game there)."""
    partner.reset(game, horizon=horizon, rng=_rng())
    return partner


def _play(agent, game="rps", partner="tft", horizon=3):
    return tom.play(game, agent, partner, horizon=horizon, seed=0)


_GAME = Custom(("chess", "", 3, None, object()))
_SEED = Int(low=0, high=2**32 - 1)
_FLAG = Custom((1, "yes", None))
_RNG = Custom((0, "rng", np.random.RandomState(0)))
_ACTION = Custom((True, 3.5, None, -1, 5, "lizard", "", [0]))
_LM_MODEL = Custom((3, "model", object()))
_WORDS = Custom(("rock", [], [""], ["rock", 3], None, 3))
_ORDER = Custom(("defect", 3, [True, False], [0, 0], ["defect", "Defect"], [0, 5], ["defect"], ["lizard", "defect"],
                 [0.0, 1.0]))
_ORDER_AT_CONSTRUCTION = Custom(("defect", 3, [True, False], [0, 0], ["defect", "Defect"], [0.0, 1.0]))

SPECS = {
    # ------------------------------------------------------------------------------------ constants, records
    "AGENTS": NoArguments("a constant (agent classes by name); names are swept through make_agent"),
    "GAMES": NoArguments("a constant (the built-in games by name); names are swept through get_game"),
    "PARTNERS": NoArguments("a constant (partner classes by name); names are swept through make_partner"),
    "PROMPTS": NoArguments("a constant (the prompt family names); swept through LLMAgent and HTTPAgent"),
    "Episode": NoArguments("a result record returned by play; its metrics are swept through literal_accuracy, "
                           "functional_regret, rationalized_regret and regret_curve"),
    # ---------------------------------------------------------------------------------------------- games
    "get_game": Spec(
        lambda **kw: tom.get_game(**kw), lambda: {"name": "rps"},
        {"name": _GAME}, message_names={"name": "game"}),
    "make_game": Spec(
        lambda **kw: tom.make_game(**kw),
        lambda: {"payoff": [[1, 0], [0, 1]], "partner_payoff": [[0, 1], [1, 0]], "name": "g",
                 "actions": ("up", "down"), "partner_actions": ("left", "right")},
        {"payoff": Custom(([1, 2], [[True, False], [False, True]], [["a", "b"], ["c", "d"]], None, "x",
                           [[NAN, 0], [0, 0]], np.zeros((0, 2)), [[1, 2, 3], [4, 5, 6]], [[1j, 0], [0, 0]])),
         "partner_payoff": Custom(([1, 2], [[True, False], [False, True]], None, [[INF, 0], [0, 0]],
                                   np.zeros((3, 3)), [[1j, 0], [0, 0]])),
         "name": Custom((3, "", None)),
         "actions": Custom(("ud", ("up",), ("up", "UP"), ("up", 3), ("up", ""), 3)),
         "partner_actions": Custom(("lr", ("left",), ("l", "L"), ("l", None), 3))}),
    "MatrixGame": Spec(
        lambda **kw: tom.MatrixGame(**kw),
        lambda: {"name": "g", "actions": ("up", "down"), "partner_actions": ("left", "right"),
                 "payoff": np.eye(2), "partner_payoff": np.ones((2, 2))},
        {"name": Custom((3, "", None)),
         "actions": Custom(("ud", ("up",), ("up", "UP"), ("up", 3), 3, None)),
         "partner_actions": Custom(("lr", ("left",), ("l", "L"), ("l", None), 3, None)),
         "payoff": Custom(([1, 2], [[True, False], [False, True]], None, "x", [[NAN, 0], [0, 0]],
                           np.zeros((0, 2)))),
         "partner_payoff": Custom(([1, 2], None, [[INF, 0], [0, 0]], np.zeros((3, 3)), [[1j, 0], [0, 0]]))}),
    # ------------------------------------------------------------------------------------------- partners
    "Partner": Spec(
        lambda **kw: tom.Partner().reset(**kw), lambda: {"game": "rps", "horizon": 4, "rng": _rng()},
        {"game": _GAME, "horizon": Int(low=1), "rng": _RNG}),
    "Adaptive": Spec(
        lambda **kw: _ready(tom.Adaptive(), **kw).policy_from_history([(0, 1), (2, 2)]),
        lambda: {"game": "rps", "horizon": 4},
        {"game": _GAME, "horizon": Int(low=1)}),
    "SingleAction": Spec(
        lambda **kw: _ready(tom.SingleAction(**kw)), lambda: {"action": "paper"}, {"action": _ACTION}),
    "TitForTat": Spec(
        lambda **kw: _ready(tom.TitForTat(**kw)).policy_from_history([(1, 0)]),
        lambda: {"first": 0, "mode": "beat"},
        {"first": _ACTION, "mode": Choice(("copy", "beat"))}),
    "Cyclic": Spec(
        lambda **kw: _ready(tom.Cyclic(**kw)), lambda: {"cycle": [0, "paper"]},
        {"cycle": Custom(("rps", 3, [], [0, 7], ["rock", None], [True], ["lizard"]))}),
    "Switching": Spec(
        lambda **kw: _ready(tom.Switching(**kw)), lambda: {"first": 0, "second": "paper", "switch_at": 2},
        {"first": Custom((True, 3.5, -1, 5, "lizard", "", 1)), "second": Custom((True, 3.5, -1, 5, "lizard", 0)),
         "switch_at": Int(low=0, optional=True)}),
    "Mixed": Spec(
        lambda **kw: _ready(tom.Mixed(**kw)), lambda: {"probs": [0.2, 0.3, 0.5]},
        {"probs": Custom(("abc", 3, [0.5, 0.6, 0], [NAN, 0.5, 0.5], [-0.5, 1, 0.5], [[1 / 3] * 3], [],
                          [0.5, 0.5], [True, False, False], [INF, 0, 0]))}),
    "make_partner": Spec(
        lambda **kw: tom.make_partner(**kw), lambda: {"name": "single-rock"},
        {"name": Custom((3, None, "grim", "single-", ""))}, message_names={"name": "partner"}),
    # --------------------------------------------------------------------------------------------- agents
    "Agent": Spec(
        lambda **kw: tom.Agent().reset(**kw),
        lambda: {"game": "rps", "horizon": 4, "rng": _rng(), "partner": None},
        {"game": _GAME, "horizon": Int(low=1), "rng": Custom((None, 0, "rng", np.random.RandomState(0))),
         "partner": Custom(("tft", 3, object()))}),
    "Oracle": Spec(
        lambda **kw: tom.Oracle().reset(**kw),
        lambda: {"game": "rps", "horizon": 4, "rng": _rng(), "partner": _ready(tom.TitForTat())},
        {"game": _GAME, "horizon": Int(low=1), "rng": Custom((None, 0, "rng")),
         "partner": Custom((None, "tft", 3, tom.SingleAction(0), _ready(tom.SingleAction(0), "ipd")))}),
    "Random": Spec(
        lambda **kw: tom.Random().reset(**kw), lambda: {"game": "ipd", "horizon": 4, "rng": _rng()},
        {"game": _GAME, "horizon": Int(low=1), "rng": Custom((None, 0, "rng"))}),
    "RMax": Spec(
        lambda **kw: _play(tom.RMax(**kw)),
        lambda: {"m": 1, "r_max": None, "gamma": None, "explore_ties": False, "predict_backoff": False},
        {"m": Int(low=1), "r_max": Float(optional=True), "gamma": Float(low=0, high=1, high_open=True, optional=True),
         "explore_ties": _FLAG, "predict_backoff": _FLAG}),
    "FictitiousPlay": Spec(
        lambda **kw: _play(tom.FictitiousPlay(**kw)), lambda: {"prior": 1.0}, {"prior": Float(low=0)}),
    "QLearning": Spec(
        lambda **kw: _play(tom.QLearning(**kw)), lambda: {"alpha": 0.5, "gamma": 0.9, "epsilon": 0.1},
        {"alpha": Float(low=0, high=1, low_open=True), "gamma": Float(low=0, high=1),
         "epsilon": Float(low=0, high=1)}),
    "Surrogate": Spec(
        lambda **kw: _play(tom.Surrogate(**kw)), lambda: {"exploit": 0.5, "rule": "mirror"},
        {"exploit": Float(low=0, high=1), "rule": Choice(("random", "mirror"))}),
    "Constant": Spec(
        lambda **kw: _play(tom.Constant(**kw)), lambda: {"action": "Paper"}, {"action": _ACTION}),
    "CountPredictor": Spec(
        lambda **kw: tom.CountPredictor(**kw).predict(0), lambda: {"game": "bos", "backoff": True},
        {"game": _GAME, "backoff": _FLAG}),
    "make_agent": Spec(
        lambda **kw: tom.make_agent(**kw), lambda: {"name": "rmax"},
        {"name": Custom((3, None, "llama", "", "constant-"))}, message_names={"name": "agent"}),
    "best_response": Spec(
        lambda **kw: tom.best_response(**kw), lambda: {"game": "rps", "probs": [0.2, 0.3, 0.5]},
        {"game": _GAME,
         "probs": Custom(("x", None, [1, 0], [NAN, 0, 1], [0.5, 0.5, 0.5], [-1, 1, 1], [[1, 0, 0]],
                          [True, False, False], [INF, 0, 0]))}),
    "oracle_plan": Spec(
        lambda **kw: tom.oracle_plan(**kw),
        lambda: {"game": "ipd", "partner": _ready(tom.TitForTat(), "ipd"), "horizon": 4},
        {"game": _GAME, "horizon": Int(low=1),
         "partner": Custom((None, "tft", 3, tom.TitForTat(), _ready(tom.SingleAction(0), "rps")))}),
    # ----------------------------------------------------------------------------------- playing, metrics
    "play": Spec(
        lambda **kw: tom.play(**kw),
        lambda: {"game": "rps", "agent": "rmax", "partner": "tft", "horizon": 3, "seed": 0},
        {"game": _GAME, "agent": Custom(("llama", "", 3, None)),
         "partner": Custom(("grim", "", 3, None, tom.SingleAction(7))), "horizon": Int(low=1), "seed": _SEED}),
    "arena": Spec(
        lambda **kw: tom.arena(**kw),
        lambda: {"games": ["rps"], "agents": {"R": "rmax"}, "partners": ["tft"], "horizon": 3, "seeds": [0, 1],
                 "episodes": False},
        {"games": Custom((3, None, [], ["chess"], [3])),
         "agents": Custom((3, None, [], {}, ["llama"], [3])),
         "partners": Custom((3, None, [], ["grim"], [None])),
         "horizon": Int(low=1),
         "seeds": Custom((3, None, "0", [], [-1], [1.5], [True], [2**32])),
         "episodes": _FLAG}),
    "literal_accuracy": Spec(
        lambda **kw: tom.literal_accuracy(**kw),
        lambda: {"predictions": [[1, 0, 0], [0.5, 0.5, 0]], "partner_actions": [0, 1]},
        {"predictions": Custom(("x", None, [0, 1], [[]], [[INF, 0, 0], [1, 0, 0]],
                                [[True, False, False], [True, False, False]], [["a", "b", "c"]] * 2)),
         "partner_actions": Custom(([0.0, 1.0], [True, False], [0, 5], [-1, 0], [0], "01", None))}),
    "regret_curve": Spec(
        lambda **kw: tom.regret_curve(**kw), lambda: {"oracle_rewards": [1, 1], "rewards": [0, 1]},
        {"oracle_rewards": Custom(("x", None, [], [NAN, 1], [[1, 2]], [True, False], [1])),
         "rewards": Custom(("x", None, [INF, 1], [[1, 2]], [True, False], [1]))}),
    "functional_regret": Spec(
        lambda **kw: tom.functional_regret(**kw), lambda: {"oracle_rewards": [1, 1], "rewards": [0, 1]},
        {"oracle_rewards": Custom(("x", None, [], [NAN, 1], [[1, 2]], [True, False], [1])),
         "rewards": Custom(("x", None, [], [INF, 1], [[1, 2]], [True, False], [1]))}),
    "rationalized_regret": Spec(
        lambda **kw: tom.rationalized_regret(**kw),
        lambda: {"game": "rps", "predictions": [[1, 0, 0], [NAN] * 3], "partner_policies": [[0, 1, 0]] * 2,
                 "action_gaps": [[1, 0, 2]] * 2, "definition": "paper"},
        {"game": _GAME,
         "predictions": Custom(("x", None, [[1, 0]] * 2, [[INF, 0, 0]] * 2, [[1, 0, 0]], [[True, False, False]] * 2)),
         "partner_policies": Custom(("x", [[1, 0]] * 2, [[NAN, 0, 0]] * 2, [[0, 1, 0]],
                                     [[True, False, False]] * 2)),
         "action_gaps": Custom(("x", None, [[1, 0]] * 2, [[NAN, 0, 0]] * 2, [[-1, 0, 0]] * 2, [[0, 1, 0]],
                                [[True, False, False]] * 2)),
         "definition": Choice(tom.DEFINITIONS)}),
    "DEFINITIONS": NoArguments("a constant (the rationalized regret's definitions); swept through "
                               "rationalized_regret"),
    "oracle_action_gaps": Spec(
        lambda **kw: tom.oracle_action_gaps(**kw),
        lambda: {"game": "ipd", "partner": _ready(tom.TitForTat(), "ipd", 3), "horizon": 3,
                 "history": [(0, 0), (1, 0)]},
        {"game": _GAME, "partner": Custom((None, "tft", tom.TitForTat())), "horizon": Int(low=1),
         "history": Custom(("x", None, [(0, 0)] * 4, [(0, 5)], [(0.0, 0)], [(True, 0)], [0], [(0, 1)]))}),
    # ---------------------------------------------------------------------------------------- LLM agents
    "rules_text": Spec(
        lambda **kw: tom.rules_text(**kw), lambda: {"game": "ipd", "payoffs": False, "order": ["defect", "cooperate"]},
        {"game": _GAME, "payoffs": _FLAG, "order": _ORDER}),
    "action_orders": Spec(
        lambda **kw: tom.action_orders(**kw), lambda: {"game": "bos"}, {"game": _GAME}),
    "parse_action": Spec(
        lambda **kw: tom.parse_action(**kw),
        lambda: {"text": "I play Paper.", "words": ("rock", "paper"), "who": "me"},
        {"text": Custom((None, 3, b"rock", ["rock"])), "words": _WORDS, "who": Choice(("me", "partner"))}),
    "ScoringLM": Spec(
        lambda text, query, options, space, **kw: _score(tom.ScoringLM(**kw), text, query, options, space),
        lambda: {"model": tiny_lm(), "tokenizer": ByteTokenizer(), "reuse_cache": True, "text": "Round 1: a b.\n",
                 "query": "Round 2: you played", "options": ["rock", "paper"], "space": False},
        {"model": Custom((None, 3, "model", object())), "tokenizer": Custom((None, 3, "tokenizer")),
         "reuse_cache": _FLAG, "text": Custom((None, 3, b"x")), "query": Custom((None, 3, b"x")),
         "options": _WORDS, "space": _FLAG}),
    "LLMAgent": Spec(
        lambda **kw: _play(tom.LLMAgent(**kw), game="ipd", horizon=1),
        lambda: {"model": tiny_lm(), "tokenizer": ByteTokenizer(), "prompt": "social", "reuse_cache": True,
                 "temperature": 0.0, "order": [1, 0]},
        {"model": Custom((None, 3, "model", object())), "tokenizer": Custom((None, 3, "tokenizer")),
         "prompt": Choice(tom.PROMPTS), "reuse_cache": _FLAG, "temperature": Float(low=0), "order": _ORDER}),
    "HTTPBackend": Spec(  # construction only: the sweep makes no network calls
        lambda **kw: tom.HTTPBackend(**kw),
        lambda: {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "OPENAI_API_KEY",
                 "timeout": 5.0, "max_tokens": 16},
        {"base_url": Custom((None, 3, "", "localhost:8000", "ftp://x", "http://")),
         "model": Custom((None, 3, "")), "api_key_env": Custom((None, 3, "")),
         "timeout": Float(low=0, low_open=True), "max_tokens": Int(low=1)}),
    "HTTPAgent": Spec(  # construction only: the sweep makes no network calls
        lambda **kw: tom.HTTPAgent(**kw),
        lambda: {"backend": tom.HTTPBackend("http://127.0.0.1:9/v1", "m"), "prompt": "oracle", "order": None},
        {"backend": Custom((None, "http://127.0.0.1:9/v1", 3, object())), "prompt": Choice(tom.PROMPTS),
         "order": _ORDER_AT_CONSTRUCTION}),
}


def _score(lm, text, query, options, space=True):
    lm.reset(text)
    return lm.score(query, options, space=space)


CLI_SPECS = {
    f"tom {name}": cli_spec(["tom", name], {"threads": "1", "orders": "all"},
                            {"threads": Int(low=1), "orders": Choice(("book", "all"))}) for name in HELP
}
