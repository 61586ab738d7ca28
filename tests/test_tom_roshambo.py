"""OpenSpiel's RoShamBo bots as partners (companion.tom.roshambo): real bots, small T."""

import numpy as np
import pytest

pytest.importorskip("pyspiel")

from companion.tom import Agent, get_game  # noqa: E402
from companion.tom import roshambo as rs  # noqa: E402


class Always(Agent):
    """Plays one action and predicts nothing."""

    name = "always"

    def __init__(self, a):
        self.a = a

    def act(self, history, t):
        return self.a


def test_openspiel_rps_is_our_rps():
    assert rs.rps_matches_openspiel()
    assert len(rs.BOT_NAMES) == 43 and {"rockbot", "rotatebot", "iocainebot"} <= set(rs.BOT_NAMES)


def test_known_deterministic_bots_throw_their_known_sequences():
    rot = rs.play_bot(Always(0), "rotatebot", horizon=7)
    assert rot["bot_actions"] == [0, 1, 2, 0, 1, 2, 0]  # rock, paper, scissors in turn
    rock = rs.play_bot(Always(2), "rockbot", horizon=5)
    assert rock["bot_actions"] == [0] * 5
    # scissors against rock loses every round: reward -1, regret 2 per round against the per-bot oracle (which
    # wins every round) and against the best fixed response (paper) alike
    assert rock["mean_reward"] == -1 and rock["regret_oracle"] == 2 and rock["regret_hindsight"] == 2
    assert np.isnan(rock["accuracy"])  # Always makes no predictions


def test_regrets_against_rotatebot_by_hand():
    r = rs.play_bot(Always(0), "rotatebot", horizon=6)  # rock vs R, P, S, R, P, S: 0, -1, +1 twice
    assert r["mean_reward"] == 0
    assert r["regret_oracle"] == 1  # the oracle wins all 6: (6 - 0) / 6
    assert r["regret_hindsight"] == 0  # every fixed action also scores 0 against a balanced cycle


def test_the_per_bot_oracle_has_zero_regret_on_deterministic_bots():
    for bot in ("rotatebot", "copybot", "freqbot2", "rockbot"):
        r = rs.play_bot(rs.BotOracle(bot), bot, horizon=60)
        assert r["regret_oracle"] == 0 and r["mean_reward"] == 1 and r["accuracy"] == 1, bot
    # against rotatebot it beats every fixed action by a full point per round
    assert rs.play_bot(rs.BotOracle("rotatebot"), "rotatebot", horizon=6)["regret_hindsight"] == -1


def test_determinism_is_measured_by_replaying():
    assert rs.is_deterministic("rotatebot", horizon=200)
    assert rs.is_deterministic("copybot", horizon=200)
    assert not rs.is_deterministic("randbot", horizon=200)


def test_table_uses_the_oracle_only_for_deterministic_bots():
    out = rs.roshambo_table(["rmax", "fictitious-play"], ["rockbot", "randbot"], horizon=40, seeds=[0, 1])
    assert out["bots"] == {"rockbot": {"deterministic": True, "regret_kind": "oracle"},
                           "randbot": {"deterministic": False, "regret_kind": "hindsight"}}
    for r in out["rows"]:
        want = r["regret_oracle"] if r["bot"] == "rockbot" else r["regret_hindsight"]
        assert r["regret"] == want and r["regret_kind"] == out["bots"][r["bot"]]["regret_kind"]
    assert len(out["summary"]) == 4 and all(s["n"] == 2 for s in out["summary"])
    # fictitious play learns always-rock at once: it plays paper from round 2 on
    fp = [s for s in out["summary"] if s["agent"] == "fictitious-play" and s["bot"] == "rockbot"][0]
    assert fp["regret"] <= 2 / 40 + 1e-12


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="bot must be one of"):
        rs.play_bot("rmax", "nobot", horizon=3)
    with pytest.raises(ValueError, match="horizon"):
        rs.play_bot("rmax", "rockbot", horizon=0)
    with pytest.raises(ValueError, match="seed"):
        rs.play_bot("rmax", "rockbot", horizon=3, seed=-1)
    with pytest.raises(ValueError, match="unknown agent"):
        rs.play_bot("alphago", "rockbot", horizon=3)
    with pytest.raises(ValueError, match="replays"):
        rs.is_deterministic("rockbot", horizon=3, replays=1)
    with pytest.raises(TypeError, match="sequences"):
        rs.is_deterministic("rockbot", horizon=3, sequences=1.5)
    with pytest.raises(ValueError, match="bots must not be empty"):
        rs.roshambo_table(["rmax"], [], horizon=3)
    with pytest.raises(ValueError, match=r"bots\[1\] must be one of"):
        rs.roshambo_table(["rmax"], ["rockbot", "nobot"], horizon=3)
    with pytest.raises(TypeError, match="deterministic"):
        rs.roshambo_table(["rmax"], ["rockbot"], horizon=3, deterministic=[("rockbot", True)])
    with pytest.raises(ValueError, match="bot must be one of"):
        rs.BotOracle("nobot")
    with pytest.raises(ValueError, match="BotOracle plays OpenSpiel's RPS"):
        rs.BotOracle("rockbot").reset(get_game("ipd"), horizon=2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="horizon"):
        rs.BotPartner("rockbot", 0)
