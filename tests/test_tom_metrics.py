import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.tom import (
    arena,
    functional_regret,
    get_game,
    literal_accuracy,
    play,
    make_partner,
    oracle_action_gaps,
    rationalized_regret,
    regret_curve,
)

RPS = get_game("rps")
ROCK = [1.0, 0.0, 0.0]


def test_literal_accuracy_on_a_hand_made_episode():
    preds = [ROCK, [0, 1, 0], [0.5, 0.5, 0], [np.nan] * 3]
    # right, wrong, a tie between rock and paper (half right), no prediction (skipped)
    assert literal_accuracy(preds, [0, 0, 0, 0]) == pytest.approx((1 + 0 + 0.5) / 3)
    assert np.isnan(literal_accuracy([[np.nan] * 3], [0]))


def test_functional_regret_and_curve_by_hand():
    np.testing.assert_allclose(regret_curve([1, 1, 1, 1], [0, 1, -1, 1]), [1, 1, 3, 3])
    assert functional_regret([1, 1, 1, 1], [0, 1, -1, 1]) == 0.75


def test_rationalized_regret_one_step_by_hand():
    pols = [ROCK] * 3
    # predicting rock -> paper (regret 0); predicting paper -> scissors loses (regret 2); predicting
    # scissors -> rock ties (regret 1)
    one = dict(definition="one-step")
    assert rationalized_regret(RPS, [ROCK, [0, 1, 0], [0, 0, 1]], pols, **one) == pytest.approx(1.0)
    # a uniform prediction best-responds with every action: mean regret (0 + 1 + 2) / 3 = 1
    assert rationalized_regret(RPS, [[1 / 3] * 3], [ROCK], **one) == pytest.approx(1.0)


IPD = get_game("ipd")
C, D = [1.0, 0.0], [0.0, 1.0]


def _tft(T):
    p = make_partner("tft")
    p.reset(IPD, horizon=T)
    return p


def test_oracle_action_gaps_by_hand_ipd_vs_tft():
    # T = 3, TFT's state = our last move (C at the start). Backwards: last round Q(C-state) = (3, 5), V = 5;
    # Q(D-state) = (0, 1), V = 1. Round 1: Q(C-state) = (3 + 5, 5 + 1) = (8, 6); Q(D-state) = (0 + 5, 1 + 1).
    # Round 0: Q(C-state) = (3 + 8, 5 + 5) = (11, 10). Along all-cooperate: gaps (0, 1), (0, 2), (2, 0).
    gaps = oracle_action_gaps(IPD, _tft(3), 3, [(0, 0)] * 3)
    np.testing.assert_allclose(gaps, [[0, 1], [0, 2], [2, 0]])
    # we defect in round 0 (its gaps are still (0, 1)); TFT answers in round 1, the D-state: (5 - 5, 5 - 2)
    np.testing.assert_allclose(oracle_action_gaps(IPD, _tft(3), 3, [(1, 0), (0, 1)]), [[0, 1], [0, 3]])
    with pytest.raises(ValueError, match="cannot play 'defect'"):
        oracle_action_gaps(IPD, _tft(3), 3, [(0, 1), (0, 0)])  # TFT opens with C, never D


def test_rationalized_regret_paper_definition_by_hand_ipd_vs_tft():
    gaps = oracle_action_gaps(IPD, _tft(3), 3, [(0, 0)] * 3)
    pols = [C] * 3  # TFT cooperates each round (we did)
    wrong = [D] * 3  # always wrong: the best response to D is D
    # the paper's: defecting costs 1, 2 and 0 against the oracle's plan -> (1 + 2 + 0) / 3
    assert rationalized_regret(IPD, wrong, pols, action_gaps=gaps) == pytest.approx(1.0)
    # one-step: defecting is the best response to C as well, so wrong predictions cost nothing
    assert rationalized_regret(IPD, wrong, pols, definition="one-step") == 0.0
    # right predictions (C) also lead a myopic rational agent to defect: the same 1.0 by the paper's
    assert rationalized_regret(IPD, pols, pols, action_gaps=gaps) == pytest.approx(1.0)
    # partner_policies are not needed by the paper's definition; rounds without a prediction are skipped
    assert rationalized_regret(IPD, [[np.nan, np.nan], D, D], action_gaps=gaps) == pytest.approx(1.0)


def test_both_definitions_agree_against_a_partner_that_does_not_react():
    bos = get_game("bos")
    p = make_partner("single-opera")
    p.reset(bos, horizon=2)
    gaps = oracle_action_gaps(bos, p, 2, [(0, 0), (1, 0)])
    np.testing.assert_allclose(gaps, [[0, 2], [0, 2]])  # opera pays 2, football 0, nothing carries over
    preds, pols = [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0]] * 2  # right (regret 0), wrong (football: regret 2)
    for kw in ({"action_gaps": gaps}, {"definition": "one-step"}):
        assert rationalized_regret(bos, preds, pols, **kw) == pytest.approx(1.0)


def test_episode_tom_regret_uses_the_paper_definition_and_the_gaps_sum_to_delta_f():
    ep = play("ipd", "rmax", "tft", horizon=40, seed=1)
    p = make_partner("tft")
    p.reset(IPD, horizon=40)
    history = list(zip(ep.actions.tolist(), ep.partner_actions.tolist()))
    gaps = oracle_action_gaps(IPD, p, 40, history)
    np.testing.assert_allclose(ep.action_gaps, gaps)
    # performance difference: against a deterministic partner the played actions' gaps add up to Δ_F exactly
    assert gaps[np.arange(40), ep.actions].sum() / 40 == pytest.approx(ep.regret)
    assert ep.tom_regret == pytest.approx(rationalized_regret(IPD, ep.predictions, action_gaps=gaps))
    assert ep.tom_regret > 0.5 and ep.tom_regret_one_step == 0.0  # a myopic best response defects against TFT
    s = ep.summary()
    assert s["tom_regret"] == ep.tom_regret and s["tom_regret_one_step"] == 0.0


def test_random_play_against_a_constant_has_regret_one_per_round_in_expectation():
    assert np.mean([play("rps", "random", "single-rock", horizon=200, seed=s).regret for s in range(10)]) == \
        pytest.approx(1.0, abs=0.1)


def test_episode_fields_are_consistent():
    ep = play("ipd", "rmax", "tft", horizon=30, seed=3)
    A = ep.game.payoff
    np.testing.assert_array_equal(ep.rewards, A[ep.actions, ep.partner_actions])
    np.testing.assert_array_equal(ep.expected_rewards, ep.rewards)  # TFT is deterministic
    assert ep.partner_actions[1:].tolist() == ep.actions[:-1].tolist()  # TFT copies us
    s = ep.summary()
    assert s["regret"] == ep.regret and s["agent"] == "rmax" and s["partner"] == "tft"


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30).flatmap(lambda T: st.tuples(
    st.lists(st.lists(st.floats(0, 1), min_size=3, max_size=3).filter(lambda r: sum(r) > 0), min_size=T,
             max_size=T),
    st.lists(st.integers(0, 2), min_size=T, max_size=T))))
def test_metric_properties(data):
    preds, actions = data
    preds = np.array(preds) / np.array(preds).sum(1, keepdims=True)
    acc = literal_accuracy(preds, actions)
    assert 0 <= acc <= 1
    pols = np.eye(3)[actions]
    tom = rationalized_regret(RPS, preds, pols, definition="one-step")
    assert 0 <= tom <= 2 + 1e-9
    # a perfect predictor of a deterministic partner has no rationalized regret
    assert rationalized_regret(RPS, pols, pols, definition="one-step") == 0.0
    # against a constant partner the paper's definition is the same number
    gaps = pols @ RPS.payoff.T
    gaps = gaps.max(1, keepdims=True) - gaps
    assert rationalized_regret(RPS, preds, action_gaps=gaps) == pytest.approx(tom)
    assert literal_accuracy(pols, actions) == 1.0


def test_arena_runs_a_grid_and_labels_rows():
    rows = arena(["rps", "ipd"], {"R-max": "rmax", "FP": "fictitious-play"}, ["single", "tft"], horizon=20,
                 seeds=[0, 1])
    assert len(rows) == 2 * 2 * 2 * 2
    assert {r["agent"] for r in rows} == {"R-max", "FP"}
    assert all(np.isfinite(r["regret"]) and r["horizon"] == 20 for r in rows)


def test_arena_is_fast_enough_for_a_quick_notebook():
    t0 = time.perf_counter()
    rows = arena(["rps"], ["rmax", "random"], ["single", "tft", "cyclic", "switching"], horizon=100, seeds=range(5))
    assert len(rows) == 40
    assert time.perf_counter() - t0 < 30  # generous: a few hundred ms on one core; catches accidental O(T^3)


def test_bad_metric_and_play_input_is_rejected():
    with pytest.raises(ValueError, match=r"shape \[T, m\]"):
        literal_accuracy([0, 1], [0, 1])
    with pytest.raises(ValueError, match="to match predictions"):
        literal_accuracy([ROCK], [0, 1])
    with pytest.raises(ValueError, match="equal length"):
        regret_curve([1, 2], [1])
    with pytest.raises(ValueError, match=r"shape \[T, 3\]"):
        rationalized_regret(RPS, [[1, 0]], [[1, 0]], definition="one-step")
    with pytest.raises(ValueError, match="needs action_gaps"):
        rationalized_regret(RPS, [ROCK], [ROCK])
    with pytest.raises(ValueError, match="needs partner_policies"):
        rationalized_regret(RPS, [ROCK], definition="one-step")
    with pytest.raises(ValueError, match="action_gaps must be >= 0"):
        rationalized_regret(RPS, [ROCK], action_gaps=[[0, -1, 0]])
    with pytest.raises(ValueError, match="one row per round"):
        rationalized_regret(RPS, [ROCK], action_gaps=[[0, 1, 0]] * 2)
    with pytest.raises(ValueError, match="definition must be one of"):
        rationalized_regret(RPS, [ROCK], [ROCK], definition="myopic")
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        play("rps", "random", "tft", horizon=0)
    with pytest.raises(TypeError, match="horizon must be an int"):
        play("rps", "random", "tft", horizon=10.0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        play("rps", "random", "tft", horizon=10, seed=-1)
    with pytest.raises(ValueError, match="unknown partner"):
        arena(["rps"], ["rmax"], ["nobody"])


# ------------------------------------------------------------------------------------ bad input, one way
def test_literal_accuracy_rejects_float_and_out_of_range_partner_actions():
    with pytest.raises(TypeError, match="partner_actions must be an array of int action indices"):
        literal_accuracy([ROCK, [0, 1, 0]], [0.7, 1.2])  # was truncated to [0, 1]: accuracy 1.0
    with pytest.raises(ValueError, match=r"partner_actions must be action indices in \[0, 3\)"):
        literal_accuracy([ROCK, [0, 0, 1]], [0, -1])  # was read as the last action: accuracy 1.0
    with pytest.raises(ValueError, match=r"partner_actions must be action indices in \[0, 3\)"):
        literal_accuracy([ROCK, [0, 0, 1]], [0, 5])  # was IndexError
    with pytest.raises(TypeError, match="partner_actions must be an array of int"):
        literal_accuracy([ROCK], [True])


def test_metrics_reject_empty_and_non_finite_input():
    with pytest.raises(ValueError, match="predictions must have at least one round and one partner action"):
        literal_accuracy([[]], [0])  # was a numpy reduction error
    with pytest.raises(ValueError, match="oracle_rewards must hold finite numbers"):
        functional_regret([1, np.nan], [0, 0])  # was NaN
    with pytest.raises(ValueError, match="at least one round"):
        regret_curve([], [])
    with pytest.raises(ValueError, match="partner_policies must hold finite numbers"):
        rationalized_regret("rps", [ROCK], [[np.nan, 0, 1]], definition="one-step")


def test_play_and_arena_reject_bool_and_empty_arguments():
    with pytest.raises(TypeError, match="horizon must be an int"):
        play("rps", "random", "tft", horizon=True)
    with pytest.raises(ValueError, match="games must not be empty"):
        arena([], ["rmax"], ["tft"])  # was [] silently
    with pytest.raises(TypeError, match=r"seeds must be a list of ints"):
        arena(["rps"], ["rmax"], ["tft"], seeds=3)  # was TypeError: 'int' object is not iterable
    with pytest.raises(ValueError, match=r"agents\[0\]: unknown agent 'llama'"):
        arena(["rps"], ["llama"], ["tft"])
    with pytest.raises(TypeError, match="episodes must be bool"):
        arena(["rps"], ["rmax"], ["tft"], episodes="yes")
