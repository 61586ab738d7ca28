import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.tom import (
    AGENTS,
    Adaptive,
    Constant,
    Cyclic,
    Mixed,
    Oracle,
    RMax,
    SingleAction,
    Switching,
    TitForTat,
    get_game,
    make_agent,
    make_game,
    oracle_plan,
    play,
)


def _open_loop_value(game, partner, seq):
    """Expected return of playing the fixed sequence ``seq`` (exact, by propagating the partner's state)."""
    dist, total = {partner.initial_state(): 1.0}, 0.0
    for t, a in enumerate(seq):
        new = {}
        for s, w in dist.items():
            p = partner.policy(s, t)
            for b in np.flatnonzero(p > 0):
                total += w * p[b] * game.payoff[a, b]
                s2 = partner.next_state(s, a, int(b), t)
                new[s2] = new.get(s2, 0.0) + w * p[b]
        dist = new
    return total


PARTNERS = [lambda: SingleAction(1), lambda: TitForTat(), lambda: TitForTat(mode="beat"), lambda: Cyclic(),
            lambda: Switching(switch_at=2), lambda: Mixed([0.2, 0.3, 0.5]), lambda: Adaptive()]


@pytest.mark.parametrize("game", ["rps", "ipd", "bos"])
@pytest.mark.parametrize("make", PARTNERS)
def test_oracle_matches_brute_force_over_all_action_sequences(game, make):
    g = get_game(game)
    partner = make()
    if isinstance(partner, Mixed) and g.n_partner_actions != 3:
        partner = Mixed([0.3, 0.7])
    T = 5 if g.n_actions == 2 else 4
    partner.reset(g, horizon=T, rng=np.random.default_rng(0))
    _, value, expected = oracle_plan(g, partner, T)
    # every partner here reacts only to our actions, so an open-loop sequence is as good as any policy
    brute = max(_open_loop_value(g, partner, seq) for seq in itertools.product(range(g.n_actions), repeat=T))
    assert value == pytest.approx(brute)
    assert expected.sum() == pytest.approx(value)


@pytest.mark.parametrize("T", [1, 2, 10, 100])
def test_oracle_cooperates_with_tit_for_tat_until_the_last_round(T):
    ep = play("ipd", "oracle", "tft", horizon=T, seed=0)
    assert ep.actions.tolist() == [0] * (T - 1) + [1]  # cooperate, then defect once at the end
    assert ep.oracle_value == 3 * (T - 1) + 5
    # a myopic best response (fictitious play) defects and pays for it
    assert play("ipd", "fictitious-play", "tft", horizon=T, seed=0).total_reward <= ep.total_reward


def test_oracle_value_scenarios_by_hand():
    assert play("rps", "oracle", "single-rock", horizon=100).oracle_value == 100.0
    assert play("rps", "oracle", "cyclic", horizon=10).actions.tolist() == [1, 2, 0] * 3 + [1]
    assert play("bos", "oracle", "single-football", horizon=7).oracle_value == 7.0
    assert play("rps", "oracle", "mixed", horizon=50).oracle_value == pytest.approx(0.0)


def test_rmax_learns_to_exploit_always_rock_within_bounded_rounds():
    regrets = []
    for seed in range(10):
        ep = play("rps", "rmax", "single-rock", horizon=100, seed=seed)
        # at most one visit to each of the 10 (state, action) pairs before it settles on paper for good
        assert (ep.actions[20:] == 1).all(), ep.actions[:20]
        regrets.append(ep.regret)
    assert 0.03 <= np.mean(regrets) <= 0.13  # the paper's tabular R-max: 0.083


def test_rmax_plans_with_tit_for_tat_in_ipd():
    ep = play("ipd", "rmax", "tft", horizon=100, seed=0)
    assert (ep.actions[20:-1] == 0).all()
    assert ep.regret < 0.2


def test_surrogate_predicts_well_but_does_not_exploit():
    eps = [play("rps", "surrogate", "single-rock", horizon=100, seed=s) for s in range(5)]
    assert np.mean([e.accuracy for e in eps]) > 0.95
    assert np.mean([e.tom_regret for e in eps]) < 0.05
    assert np.mean([e.regret for e in eps]) > 0.7  # the paper's signature: Δ_ToM << Δ_F
    exploiter = play("rps", make_agent("surrogate", exploit=1.0), "single-rock", horizon=100, seed=0)
    assert exploiter.regret < 0.05


def test_fictitious_play_and_q_learning_beat_random_against_a_constant():
    rnd = np.mean([play("rps", "random", "single-scissors", horizon=100, seed=s).regret for s in range(5)])
    assert 0.7 < rnd < 1.3  # uniform play: 1.0 per round in expectation
    for name in ("fictitious-play", "q-learning"):
        assert np.mean([play("rps", name, "single-scissors", horizon=100, seed=s).regret for s in range(5)]) < 0.3


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_play_is_deterministic_per_seed(agent):
    a = play("rps", agent, "switching", horizon=60, seed=7)
    b = play("rps", agent, "switching", horizon=60, seed=7)
    for field in ("actions", "partner_actions", "rewards", "oracle_rewards"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(np.isnan(a.predictions), np.isnan(b.predictions))


def test_different_seeds_give_different_random_play():
    assert not np.array_equal(play("rps", "random", "tft", horizon=50, seed=0).actions,
                              play("rps", "random", "tft", horizon=50, seed=1).actions)


small_game = st.integers(2, 3).flatmap(lambda n: st.integers(2, 3).flatmap(lambda m: st.tuples(
    st.lists(st.lists(st.integers(-3, 5), min_size=m, max_size=m), min_size=n, max_size=n),
    st.lists(st.lists(st.integers(-3, 5), min_size=m, max_size=m), min_size=n, max_size=n))))


@settings(max_examples=40, deadline=None)
@given(small_game, st.sampled_from(["single", "cyclic", "switching", "mixed", "adaptive", "tft-beat"]),
       st.sampled_from(sorted(AGENTS)), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_no_agent_beats_the_oracle_and_metrics_stay_in_range(mats, partner, agent, T, seed):
    g = make_game(*mats)
    p = {"single": lambda: SingleAction(0), "cyclic": lambda: Cyclic(), "switching": lambda: Switching(),
         "mixed": lambda: Mixed(), "adaptive": lambda: Adaptive(), "tft-beat": lambda: TitForTat(mode="beat")}
    ep = play(g, agent, p[partner](), horizon=T, seed=seed)
    assert ep.regret >= -1e-9  # partners react only to our actions, so Σ expected rewards <= V*
    if agent == "constant":  # no literal probe: the metrics that need one are undefined
        assert np.isnan(ep.tom_regret) and np.isnan(ep.accuracy)
    else:
        assert ep.tom_regret >= -1e-9
        assert 0.0 <= ep.accuracy <= 1.0
    assert ep.regret_curve[-1] / T == pytest.approx(ep.regret)
    assert ep.oracle_rewards.sum() == pytest.approx(ep.oracle_value)
    assert set(ep.actions.tolist()) <= set(range(g.n_actions))


def test_bad_agent_input_is_rejected():
    with pytest.raises(ValueError, match="unknown agent 'llama'"):
        make_agent("llama")
    with pytest.raises(ValueError, match="known-ness threshold"):
        RMax(m=0)
    with pytest.raises(ValueError, match=r"gamma must be a number >= 0.0 and < 1.0"):
        RMax(gamma=1.0)
    with pytest.raises(ValueError, match=r"epsilon must be a number >= 0.0 and <= 1.0"):
        make_agent("q-learning", epsilon=2)
    with pytest.raises(ValueError, match="rule must be"):
        make_agent("surrogate", rule="greedy")
    with pytest.raises(ValueError, match="needs the partner"):
        Oracle().reset(get_game("rps"), horizon=3, rng=np.random.default_rng(0))


def test_oracle_plans_are_reused_only_for_identical_partners():
    g = get_game("rps")
    a, b, c = Switching(switch_at=3), Switching(switch_at=3), Switching(switch_at=4)
    for p in (a, b, c):
        p.reset(g, horizon=8, rng=np.random.default_rng(0))
    assert oracle_plan(g, a, 8) is oracle_plan(g, b, 8)
    plan_c = oracle_plan(g, c, 8)
    assert plan_c is not oracle_plan(g, a, 8)
    assert plan_c[2].tolist() == [1.0] * 8


@pytest.mark.parametrize("kwargs", [{"gamma": 0.95}, {"explore_ties": True}, {"m": 3, "predict_backoff": True}])
def test_rmax_variants_also_settle_on_the_best_response(kwargs):
    ep = play("rps", RMax(**kwargs), "single-scissors", horizon=150, seed=1)
    assert (ep.actions[-50:] == 0).all()  # rock breaks scissors


# ------------------------------------------------------------------------------------ bad input, one way
def test_rmax_rejects_bool_m():
    with pytest.raises(TypeError, match=r"m \(the known-ness threshold\) must be an int"):
        RMax(m=True)


@pytest.mark.parametrize("kwargs, name", [({"r_max": np.nan}, "r_max"), ({"gamma": np.nan}, "gamma")])
def test_rmax_rejects_nan_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        RMax(**kwargs)  # r_max=nan was an IndexError deep in the planner


def test_fictitious_play_rejects_nan_prior():
    with pytest.raises(ValueError, match="prior .* must be a finite number"):
        make_agent("fictitious-play", prior=np.nan)  # was accepted: NaN counts, an arbitrary best response


def test_agent_reset_rejects_a_float_horizon():
    with pytest.raises(TypeError, match="horizon must be an int"):
        RMax().reset("rps", horizon=3.5, rng=np.random.default_rng(0))  # was a TypeError from numpy


def test_oracle_rejects_a_partner_it_cannot_plan_against():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="partner must be a Partner"):
        Oracle().reset("rps", horizon=3, rng=rng, partner="tft")  # was AttributeError
    with pytest.raises(ValueError, match="partner .* must be reset"):
        oracle_plan(get_game("rps"), SingleAction(0), 3)  # was AttributeError: no attribute '_k'
    ipd_partner = SingleAction(0)
    ipd_partner.reset("ipd", horizon=3)
    with pytest.raises(ValueError, match="partner .* was reset for .*ipd.* not for game .*rps"):
        oracle_plan(get_game("rps"), ipd_partner, 3)


def test_game_names_work_wherever_a_game_is_expected():
    from companion.tom import CountPredictor, best_response

    assert best_response("rps", [1, 0, 0]).tolist() == [False, True, False]  # was AttributeError for a name
    assert CountPredictor("ipd").counts.shape == (5, 2, 2)
    p = TitForTat()
    p.reset("ipd", horizon=4)
    assert oracle_plan("ipd", p, 4)[1] == 3 * 3 + 5


def test_best_response_rejects_nan_probabilities():
    from companion.tom import best_response

    with pytest.raises(ValueError, match="probs must be 3 finite numbers"):
        best_response("rps", [np.nan, 0, 1])  # was an all-False mask


def test_constant_agent_scores_by_hand_in_ipd_against_tit_for_tat():
    # IPD (R, S, T, P) = (3, 0, 5, 1) vs TFT over T = 10: cooperating throughout earns 10 x 3 = 30; defecting
    # earns T once, then P: 5 + 9 x 1 = 14; the oracle cooperates and defects in the last round: 9 x 3 + 5 = 32
    oracle = play("ipd", Oracle(), "tft", horizon=10, seed=0)
    assert oracle.rewards.sum() == 32
    for agent, action, total in ((Constant("cooperate"), 0, 30), (make_agent("constant", action="defect"), 1, 14)):
        ep = play("ipd", agent, "tft", horizon=10, seed=0)
        assert ep.actions.tolist() == [action] * 10 and ep.rewards.sum() == total
        assert ep.regret == pytest.approx((32 - total) / 10)
        assert np.isnan(ep.predictions).all()  # no literal probe
    assert agent.name == "constant-defect"


def test_constant_agent_by_name_index_or_shorthand():
    for agent in (make_agent("constant-Paper"), make_agent("constant", action=1), Constant("PAPER"),
                  make_agent("constant-1")):
        ep = play("rps", agent, "single-rock", horizon=6, seed=3)
        assert ep.actions.tolist() == [1] * 6 and ep.regret == 0.0  # paper beats rock: the best response
        assert agent.name == "constant-paper"
    assert make_agent("constant").name == "constant-0"  # the game's first action, named once reset
    assert "constant" in AGENTS and AGENTS["constant"] is Constant


def test_constant_agent_rejects_bad_actions():
    with pytest.raises(ValueError, match="action must be a non-empty action word"):
        Constant("")
    with pytest.raises(ValueError, match="action must be an int >= 0, got -1"):
        Constant(-1)
    with pytest.raises(TypeError, match="action must be an action word"):
        Constant(2.5)
    with pytest.raises(ValueError, match="action: unknown action 'lizard' for rps"):
        play("rps", Constant("lizard"), "tft", horizon=2, seed=0)
    with pytest.raises(ValueError, match=r"action: action index must be in \[0, 2\)"):
        play("ipd", Constant(2), "tft", horizon=2, seed=0)
    with pytest.raises(ValueError, match="name the action after 'constant-'"):
        make_agent("constant-")
