"""Our IPD engine against the Axelrod library (optional peer: skipped when axelrod is not installed)."""

import numpy as np
import pytest

axl = pytest.importorskip("axelrod")

from companion.tom import Cyclic, SingleAction, TitForTat, play  # noqa: E402
from companion.tom.peers import AxelrodAgent, axelrod_player, ipd_from_axelrod  # noqa: E402

ROW = ["Cooperator", "Defector", "TitForTat", "SuspiciousTitForTat", "Alternator", "Grudger", "WinStayLoseShift",
       "Bully"]
PARTNERS = {  # our partner -> the same deterministic strategy in axelrod
    "Cooperator": lambda: SingleAction("cooperate"),
    "Defector": lambda: SingleAction("defect"),
    "TitForTat": lambda: TitForTat(first="cooperate"),
    "SuspiciousTitForTat": lambda: TitForTat(first="defect"),
    "Alternator": lambda: Cyclic(["cooperate", "defect"]),
}


@pytest.mark.parametrize("row", ROW)
@pytest.mark.parametrize("col", sorted(PARTNERS))
def test_ipd_scores_equal_axelrod_match(row, col):
    T = 37
    ep = play("ipd", AxelrodAgent(getattr(axl, row)()), PARTNERS[col](), horizon=T, seed=0)
    match = axl.Match((getattr(axl, row)(), getattr(axl, col)()), turns=T, game=axl.Game())
    moves = match.play()
    assert (float(ep.rewards.sum()), float(ep.partner_rewards.sum())) == tuple(float(s) for s in match.final_score())
    assert ep.actions.tolist() == [int(a == axl.Action.D) for a, _ in moves]
    assert ep.partner_actions.tolist() == [int(b == axl.Action.D) for _, b in moves]


def test_default_axelrod_game_is_our_ipd():
    from companion.tom import get_game

    assert ipd_from_axelrod(axl.Game()) is get_game("ipd")
    g = ipd_from_axelrod(axl.Game(r=5, s=0, t=10, p=1))  # OpenSpiel's scale
    assert g.payoff.tolist() == [[5, 0], [10, 1]] and g.partner_payoff.tolist() == [[5, 10], [0, 1]]


def test_rmax_player_learns_to_exploit_a_cooperator_and_to_cooperate_with_tft():
    m = axl.Match((axelrod_player("rmax"), axl.Cooperator()), turns=100)
    m.play()
    assert m.final_score()[0] >= 490  # defects against an unconditional cooperator after one exploration
    m = axl.Match((axelrod_player("rmax"), axl.TitForTat()), turns=100)
    m.play()
    assert m.final_score()[0] >= 280  # mostly mutual cooperation (3/round), not mutual defection (1/round)


@pytest.mark.parametrize("length", [-1, float("inf")])
def test_rmax_player_treats_an_unknown_length_as_an_unbounded_game(length):
    # Axelrod marks an unknown length as -1 (or inf with prob_end): there is no last round to defect in. With the
    # old fallback (plan over 200 rounds) R-max defected on every round from 200 on and scored 795 here.
    m = axl.Match((axelrod_player("rmax"), axl.TitForTat()), turns=400, match_attributes={"length": length})
    moves = m.play()
    assert all(a == axl.Action.C for a, _ in moves[20:])  # cooperation after its exploration, to the end
    assert m.final_score()[0] >= 1150
    # the same player still exploits an unconditional cooperator
    m = axl.Match((axelrod_player("rmax"), axl.Cooperator()), turns=300, match_attributes={"length": length})
    m.play()
    assert m.final_score()[0] >= 1450


def test_rmax_player_with_a_known_length_defects_only_in_the_last_round():
    m = axl.Match((axelrod_player("rmax"), axl.TitForTat()), turns=400)
    moves = m.play()
    assert [i for i, (a, _) in enumerate(moves) if a == axl.Action.D and i >= 20] == [399]


def test_rmax_player_enters_a_tournament_against_the_basic_strategies():
    players = [axelrod_player("rmax", seed=0)] + [s() for s in axl.basic_strategies]
    results = axl.Tournament(players, turns=50, repetitions=1, seed=0).play(progress_bar=False)
    assert len(results.ranked_names) == len(players)
    scores = [float(np.mean(s)) for s in results.normalised_scores]
    assert scores[0] >= np.median(scores)


def test_bad_peer_input_is_rejected():
    with pytest.raises(ValueError, match="agent must be one of"):
        axelrod_player("oracle")
    with pytest.raises(ValueError, match="seed"):
        axelrod_player("rmax", seed=-1)
    with pytest.raises(ValueError, match="discount"):
        axelrod_player("rmax", discount=1.0)
    with pytest.raises(TypeError, match="axelrod.Player"):
        AxelrodAgent("TitForTat")
    with pytest.raises(ValueError, match="two-action"):
        play("rps", AxelrodAgent(axl.TitForTat()), "single-rock", horizon=3)
