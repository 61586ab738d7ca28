import numpy as np
import pytest

from companion.tom import GAMES, get_game, make_game, make_partner, play


def test_rps_payoffs_by_hand():
    g = get_game("rps")
    assert g.actions == ("rock", "paper", "scissors")
    assert g.reward(1, 0) == (1.0, -1.0)  # paper covers rock
    assert g.reward(0, 2) == (1.0, -1.0)  # rock breaks scissors
    assert g.reward(2, 1) == (1.0, -1.0)  # scissors cut paper
    assert g.reward(0, 1) == (-1.0, 1.0)
    assert all(g.reward(a, a) == (0.0, 0.0) for a in range(3))
    np.testing.assert_array_equal(g.partner_payoff, -g.payoff)  # zero-sum
    assert g.r_max == 1.0


def test_ipd_payoffs_are_axelrod_defaults():
    g = get_game("ipd")
    C, D = g.action_index("cooperate"), g.action_index("defect")
    assert g.reward(C, C) == (3.0, 3.0)  # R
    assert g.reward(C, D) == (0.0, 5.0)  # S, T
    assert g.reward(D, C) == (5.0, 0.0)  # T, S
    assert g.reward(D, D) == (1.0, 1.0)  # P


def test_bos_payoffs():
    g = get_game("BoS")
    assert g.reward(0, 0) == (2.0, 1.0)
    assert g.reward(1, 1) == (1.0, 2.0)
    assert g.reward(0, 1) == g.reward(1, 0) == (0.0, 0.0)


def test_user_game_from_two_matrices_plays():
    g = make_game([[1, 0, 0], [0, 1, 0]], [[0, 1, 1], [1, 0, 1]], name="asym", actions=("up", "down"),
                  partner_actions=("l", "c", "r"))
    assert (g.n_actions, g.n_partner_actions) == (2, 3)
    ep = play(g, "oracle", make_partner("single", action="c"), horizon=5, seed=0)
    assert ep.total_reward == 5.0 and ep.regret == 0.0
    assert make_game(np.eye(2), np.eye(2)).actions == ("a0", "a1")


def test_expected_payoff_is_A_times_p():
    g = get_game("rps")
    np.testing.assert_allclose(g.expected_payoff([1, 0, 0]), [0, 1, -1])
    np.testing.assert_allclose(g.expected_payoff(np.full(3, 1 / 3)), 0, atol=1e-12)


def test_unknown_game_and_action_names_are_rejected():
    with pytest.raises(ValueError, match="unknown game 'chess'.*bos.*ipd.*rps"):
        get_game("chess")
    with pytest.raises(TypeError, match="game must be a name"):
        get_game(3)
    with pytest.raises(ValueError, match="unknown action 'lizard'.*rock"):
        GAMES["rps"].action_index("lizard")
    with pytest.raises(ValueError, match=r"index must be in \[0, 2\)"):
        GAMES["ipd"].action_index(2)
    with pytest.raises(TypeError, match="got bool"):
        GAMES["ipd"].action_index(True)


@pytest.mark.parametrize(
    "A, B, match",
    [
        ([1, 2, 3], [1, 2, 3], "2-D matrix"),
        ([[1, 2], [3, 4]], [[1, 2, 3], [4, 5, 6]], r"same shape as the first matrix \(2, 2\)"),
        ([[1, np.nan]], [[1, 2]], "finite"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "non-empty"),
    ],
)
def test_bad_payoff_matrices_are_rejected(A, B, match):
    with pytest.raises(ValueError, match=match):
        make_game(A, B)


def test_bad_action_words_are_rejected():
    with pytest.raises(ValueError, match="actions must be 2 non-empty strings"):
        make_game(np.eye(2), np.eye(2), actions=("x",))
    with pytest.raises(ValueError, match="distinct"):
        make_game(np.eye(2), np.eye(2), partner_actions=("x", "X"))
    with pytest.raises(TypeError, match="2-D array of numbers"):
        make_game([["a", "b"]], [[1, 2]])


# ------------------------------------------------------------------------------------ bad input, one way
def test_make_game_rejects_bool_payoffs():
    with pytest.raises(TypeError, match=r"payoff \(A\) must be a 2-D array of numbers"):
        make_game([[True, False]], [[1, 0]])  # was silently the matrix [[1.0, 0.0]]


def test_make_game_rejects_one_string_of_action_words():
    with pytest.raises(TypeError, match="partner_actions must be a sequence of 2 strings"):
        make_game([[1, 0]], [[1, 0]], partner_actions="lr")  # was split into the words ("l", "r")


def test_matrix_game_made_directly_checks_its_shapes():
    from companion.tom import MatrixGame

    with pytest.raises(ValueError, match="partner_actions must be 1 non-empty strings"):
        MatrixGame("g", ("a",), ("b", "c"), np.ones((1, 1)), np.ones((1, 1)))  # was accepted
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        MatrixGame("", ("a",), ("b",), np.ones((1, 1)), np.ones((1, 1)))


def test_reward_rejects_negative_action_indices():
    with pytest.raises(ValueError, match="a must be an int >= 0 and <= 2"):
        get_game("rps").reward(-1, 0)  # was the last row (Python's negative index)


def test_expected_payoff_rejects_nan_and_non_distributions():
    with pytest.raises(ValueError, match="probs must be 3 finite numbers >= 0 summing to 1"):
        get_game("rps").expected_payoff([np.nan, 0, 1])
    with pytest.raises(ValueError, match="probs must be 3 finite numbers >= 0 summing to 1"):
        get_game("rps").expected_payoff([0.5, 0.5, 0.5])
