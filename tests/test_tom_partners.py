import numpy as np
import pytest

from companion.tom import Adaptive, Cyclic, Mixed, SingleAction, Switching, TitForTat, get_game, make_partner

RPS, IPD = get_game("rps"), get_game("ipd")


def _reset(p, game=RPS, horizon=20, seed=0):
    p.reset(game, horizon=horizon, rng=np.random.default_rng(seed))
    return p


def test_single_action_policy_is_one_hot():
    p = _reset(SingleAction("paper"))
    np.testing.assert_array_equal(p.policy_from_history([(0, 1), (2, 1)]), [0, 1, 0])
    assert p.name == "single-paper"
    assert _reset(make_partner("single-rock")).policy(None, 5)[0] == 1


def test_tit_for_tat_opens_with_cooperate_and_copies():
    p = _reset(TitForTat(), IPD)
    np.testing.assert_array_equal(p.policy_from_history([]), [1, 0])
    np.testing.assert_array_equal(p.policy_from_history([(1, 0)]), [0, 1])
    np.testing.assert_array_equal(p.policy_from_history([(1, 0), (0, 1)]), [1, 0])


def test_rps_tit_for_tat_beat_mode_plays_what_beats_our_last_move():
    p = _reset(TitForTat(mode="beat"))
    np.testing.assert_array_equal(p.policy_from_history([(0, 0)]), [0, 1, 0])  # we threw rock -> paper
    np.testing.assert_array_equal(p.policy_from_history([(2, 0)]), [1, 0, 0])  # scissors -> rock


def test_cyclic_default_cycles_rock_paper_scissors():
    p = _reset(Cyclic())
    assert [int(np.argmax(p.policy(None, t))) for t in range(6)] == [0, 1, 2, 0, 1, 2]


def test_switching_changes_once_at_a_seeded_step():
    taus = set()
    for seed in range(10):
        p = _reset(Switching(), horizon=100, seed=seed)
        moves = [int(np.argmax(p.policy(None, t))) for t in range(100)]
        assert 25 <= p.tau <= 75
        assert moves[: p.tau] == [moves[0]] * p.tau and moves[p.tau:] == [moves[-1]] * (100 - p.tau)
        assert moves[0] != moves[-1]
        taus.add(p.tau)
        assert _reset(Switching(), horizon=100, seed=seed).tau == p.tau  # same seed, same switch
    assert len(taus) > 1


def test_mixed_and_adaptive_policies():
    np.testing.assert_allclose(_reset(Mixed()).policy(None, 0), np.full(3, 1 / 3))
    p = _reset(Adaptive())
    np.testing.assert_allclose(p.policy_from_history([]), np.full(3, 1 / 3))
    # we played rock twice: the partner best-responds (by its payoff) with paper
    np.testing.assert_array_equal(p.policy_from_history([(0, 0), (0, 1)]), [0, 1, 0])


def test_bad_partner_input_is_rejected():
    with pytest.raises(ValueError, match="unknown partner 'grim'"):
        make_partner("grim")
    with pytest.raises(ValueError, match="unknown partner action 'lizard'"):
        _reset(SingleAction("lizard"))
    with pytest.raises(ValueError, match="sum"):
        _reset(Mixed([0.5, 0.6, 0]))
    with pytest.raises(ValueError, match="mode must be"):
        TitForTat(mode="mirror")
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        SingleAction().reset(RPS, horizon=0)
    with pytest.raises(RuntimeError, match="reset"):
        SingleAction().policy_from_history([])
    with pytest.raises(TypeError, match="partner must be a name"):
        make_partner(3)


# ------------------------------------------------------------------------------------ bad input, one way
def test_partner_actions_are_checked_at_construction_and_named_at_reset():
    with pytest.raises(TypeError, match="action must be an action word"):
        SingleAction(3.5)  # was accepted, and failed only at reset
    with pytest.raises(ValueError, match="first must be an int >= 0"):
        TitForTat(first=-1)
    with pytest.raises(ValueError, match=r"cycle\[1\]: partner action index must be in \[0, 3\)"):
        _reset(Cyclic([0, 7]))
    with pytest.raises(TypeError, match="cycle must be a sequence"):
        Cyclic(3)  # was a TypeError from len()


def test_switching_between_the_same_action_is_rejected():
    with pytest.raises(ValueError, match="second must be another action than first"):
        _reset(Switching("rock", "rock"))  # was a partner that never switches


def test_partner_reset_rejects_a_non_generator_rng():
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        Switching().reset(RPS, horizon=4, rng=0)  # was AttributeError: 'int' object has no attribute 'integers'


def test_mixed_rejects_non_numbers_at_construction():
    with pytest.raises(TypeError, match="probs must be a sequence of numbers"):
        Mixed(["a", "b", "c"])  # was a numpy conversion error at reset
    with pytest.raises(ValueError, match="probs must be non-negative numbers summing to 1"):
        Mixed([np.nan, 0.5, 0.5])


def test_policy_from_history_rejects_out_of_range_actions():
    with pytest.raises(ValueError, match=r"history\[0\] \(our action a\) must be an int >= 0 and <= 2"):
        _reset(TitForTat()).policy_from_history([(5, 0)])  # was IndexError: list index out of range
