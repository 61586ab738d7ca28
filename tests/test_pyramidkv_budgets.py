import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.pyramidkv import layer_budgets, overspend, regime


def test_official_schedule_matches_the_hand_computed_brief_example():
    # L = 30, C = 128, w = 8, q = 4000: min = 120 // 20 = 6, max = 240 - 6 = 234, steps = 228 // 29 = 7
    b = layer_budgets(128, window=8, num_layers=30, prompt_len=4000)
    assert b[0] == 234 and b[-1] == 234 - 29 * 7 == 31
    assert all(x - y == 7 for x, y in zip(b, b[1:]))
    assert overspend(b, 128, 8) == pytest.approx(132.5 / 120 - 1)  # +10.4%
    b64 = layer_budgets(64, window=8, num_layers=30, prompt_len=4000)  # min 2, max 110, steps 3
    assert (b64[0], b64[-1]) == (110, 23) and overspend(b64, 64, 8) == pytest.approx(66.5 / 56 - 1)  # +18.75%


def test_regimes():
    assert regime(128, window=8, prompt_len=100) == "none"
    assert layer_budgets(128, window=8, num_layers=4, prompt_len=100) == [92] * 4  # keep the whole prompt
    assert regime(128, window=8, prompt_len=200) == "uniform"
    assert layer_budgets(128, window=8, num_layers=4, prompt_len=200) == [120] * 4  # SnapKV
    assert regime(128, window=8, prompt_len=240) == "pyramid"


def test_short_prompts_cap_the_first_layer_at_the_prefix_length():
    # q = 240: max would be 234 but only q - w = 232 prefix tokens exist -> max = 232, min = 240 - 232 = 8
    b = layer_budgets(128, window=8, num_layers=30, prompt_len=240)
    assert b[0] == 232 and b[-1] == 232 - 29 * ((232 - 8) // 29)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(2, 4096), window=st.integers(1, 64), layers=st.integers(1, 80), extra=st.integers(0, 20000),
       beta=st.sampled_from([2, 5, 20, 50]))
def test_exact_schedule_hits_the_target_mean_and_official_never_underspends(capacity, window, layers, extra, beta):
    if window >= capacity:
        return
    q = window + 1 + extra
    official = layer_budgets(capacity, window=window, num_layers=layers, prompt_len=q, beta=beta)
    exact = layer_budgets(capacity, window=window, num_layers=layers, prompt_len=q, beta=beta, schedule="exact")
    assert len(official) == len(exact) == layers
    assert all(0 <= x <= q - window for x in official + exact)
    assert all(x >= y for x, y in zip(exact, exact[1:])) and all(x >= y for x, y in zip(official, official[1:]))
    if regime(capacity, window=window, prompt_len=q) == "pyramid" and layers > 1:
        assert sum(exact) == layers * (capacity - window)  # exactly the budget
        assert sum(official) >= sum(exact)  # integer steps round the slope down: never under budget
        assert exact[0] == official[0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"capacity": 8, "window": 8, "num_layers": 4, "prompt_len": 100}, "smaller than capacity"),
        ({"capacity": 64, "window": 100, "num_layers": 4, "prompt_len": 50}, "smaller than capacity"),
        ({"capacity": 64, "window": 8, "num_layers": 4, "prompt_len": 8}, "shorter than the prompt"),
        ({"capacity": 64, "window": 8, "num_layers": 0, "prompt_len": 100}, "num_layers"),
        ({"capacity": 64, "window": 8, "num_layers": 4, "prompt_len": 100, "beta": 0}, "beta"),
        ({"capacity": 64, "window": 8, "num_layers": 4, "prompt_len": 100, "beta": 0.5}, "beta must be .*>= 1"),
        ({"capacity": 64, "window": 8, "num_layers": 4, "prompt_len": 100, "schedule": "kvcompose"}, "schedule"),
    ],
)
def test_bad_input(kwargs, match):
    capacity = kwargs.pop("capacity")
    with pytest.raises(ValueError, match=match):
        layer_budgets(capacity, **kwargs)


def test_a_float_capacity_is_a_type_error():
    # a float where an int is meant is the wrong type (the shared convention of companion.lab.checks)
    with pytest.raises(TypeError, match="capacity must be an int"):
        layer_budgets(64.5, window=8, num_layers=4, prompt_len=100)


def test_kvpress_schedule_falls_back_to_uniform_below_beta_times_window():
    # C = 128, w = 8, beta = 20: the smallest budget 128 / 20 = 6.4 < w -> uniform 120 prefix tokens per layer
    assert layer_budgets(128, window=8, num_layers=30, prompt_len=1024, schedule="kvpress") == [120] * 30
    # C = 256: low = 12.8 >= 8 -> a pyramid from round(499.2) - 8 down to round(12.8) - 8
    b = layer_budgets(256, window=8, num_layers=30, prompt_len=1024, schedule="kvpress")
    assert b[0] == 499 - 8 and b[-1] == 13 - 8 and sorted(b, reverse=True) == b
    assert sum(x + 8 for x in b) / 30 == pytest.approx(256, abs=0.5)  # mean total (window included) = C
    # kvpress's default window w = 64 needs C >= 1280 for a pyramid
    assert len(set(layer_budgets(1024, window=64, num_layers=30, prompt_len=4000, schedule="kvpress"))) == 1
    assert len(set(layer_budgets(1280, window=64, num_layers=30, prompt_len=4000, schedule="kvpress"))) > 1


def test_a_single_layer_model_gets_the_uniform_budget():
    for schedule in ("official", "exact", "kvpress"):
        assert layer_budgets(64, window=8, num_layers=1, prompt_len=1000, schedule=schedule) == [56]


def test_mean_by_groups_rows_and_accuracy_table_is_the_share_found():
    from companion.pyramidkv.experiments import accuracy_table, mean_by

    rows = [{"method": "snapkv", "capacity": 64, "found": True, "kept_tokens": 64, "depth": 0.0},
            {"method": "snapkv", "capacity": 64, "found": False, "kept_tokens": 64, "depth": 1.0},
            {"method": "pyramidkv", "capacity": 64, "found": True, "kept_tokens": 74.5, "depth": 0.0}]
    assert accuracy_table(rows) == {("snapkv", 64): 0.5, ("pyramidkv", 64): 1.0}
    assert mean_by(rows, "kept_tokens")[("pyramidkv", 64)] == 74.5
    assert mean_by(rows, "found", by=("method", "depth")) == {("snapkv", 0.0): 1.0, ("snapkv", 1.0): 0.0,
                                                              ("pyramidkv", 0.0): 1.0}


# ------------------------------------------------------------------------------------------ bad input, one way
def test_regime_rejects_what_layer_budgets_rejects():
    # before: regime(8, window=8, prompt_len=100) answered "pyramid" for budgets layer_budgets refuses to compute
    for kwargs, exc, match in [
        ({"capacity": 8, "window": 8, "prompt_len": 100}, ValueError, "window .* must be smaller than capacity"),
        ({"capacity": 64, "window": 8, "prompt_len": 8}, ValueError, "window .* must be shorter than the prompt"),
        ({"capacity": 0, "window": 8, "prompt_len": 100}, ValueError, "capacity must be an int >= 1"),
        ({"capacity": 64.5, "window": 8, "prompt_len": 100}, TypeError, "capacity must be an int"),
        ({"capacity": 64, "window": True, "prompt_len": 100}, TypeError, "window must be an int"),
    ]:
        capacity = kwargs.pop("capacity")
        with pytest.raises(exc, match=match):
            layer_budgets(capacity, num_layers=4, **kwargs)
        with pytest.raises(exc, match=match):
            regime(capacity, **kwargs)


def test_budget_functions_accept_numpy_ints_and_return_plain_ints():
    import numpy as np

    b = layer_budgets(np.int64(128), window=np.int64(8), num_layers=np.int64(30), prompt_len=np.int64(4000))
    assert b == layer_budgets(128, window=8, num_layers=30, prompt_len=4000)
    assert all(type(x) is int for x in b)
    assert regime(np.int64(128), window=8, prompt_len=np.int64(240)) == "pyramid"
    assert overspend(np.array(b), np.int64(128), 8) == pytest.approx(overspend(b, 128, 8))


def test_overspend_rejects_a_zero_target_and_bad_budgets():
    with pytest.raises(ValueError, match="window .* must be smaller than capacity"):
        overspend([1, 2], 8, 8)  # before: ZeroDivisionError
    with pytest.raises(ValueError, match="budgets must not be empty"):
        overspend([], 64, 8)  # before: nan (and a numpy warning)
    with pytest.raises(ValueError, match=r"budgets\[1\] must be an int >= 0"):
        overspend([3, -1], 64, 8)


def _kvpress_get_layer_budget(compression_ratio, window_size, beta, q_len, num_hidden_layers, layer_idx):
    """``PyramidKVPress.get_layer_budget`` of NVIDIA kvpress (kvpress/presses/pyramidkv_press.py), transcribed."""
    assert beta >= 1, "Beta should >= 1"
    max_capacity_prompt = window_size + q_len * (1 - compression_ratio)
    min_num = (max_capacity_prompt - window_size) / beta
    max_num = (max_capacity_prompt - window_size) * 2 - min_num
    if max_num >= q_len - window_size:
        max_num = q_len - window_size
        min_num = (max_capacity_prompt - window_size) * 2 - max_num
    if not (q_len >= max_num >= min_num >= window_size):
        return round(q_len * (1 - compression_ratio))
    steps = (max_num - min_num) / (num_hidden_layers - 1)
    return round(max_num - layer_idx * steps)


@pytest.mark.parametrize("capacity, window, layers", [(160, 8, 30), (128, 8, 30), (256, 8, 30), (1280, 64, 32),
                                                     (200, 8, 24), (96, 4, 16)])
def test_kvpress_schedule_equals_the_transcription_over_a_sweep_of_prompt_lengths(capacity, window, layers):
    for q in range(capacity + 1, 4097, 3 if capacity < 1000 else 17):
        ratio = 1 - capacity / q  # how a capacity C is asked of kvpress
        theirs = [_kvpress_get_layer_budget(ratio, window, 20, q, layers, i) - window for i in range(layers)]
        assert layer_budgets(capacity, window=window, num_layers=layers, prompt_len=q, schedule="kvpress") == theirs, q


def test_kvpress_floating_point_falls_back_where_exact_arithmetic_would_not():
    # q (1 - (1 - 160/2000)) = 159.99999999999991: min = 7.99... < w = 8, so kvpress keeps 152 + 8 everywhere
    assert layer_budgets(160, window=8, num_layers=30, prompt_len=2000, schedule="kvpress") == [152] * 30
    # q = 1000: the float total is 160.00000000000003 and the pyramid stands (304 ... 0 prefix tokens)
    b = layer_budgets(160, window=8, num_layers=30, prompt_len=1000, schedule="kvpress")
    assert b[0] == 304 and b[-1] == 0 and sorted(b, reverse=True) == b


@pytest.mark.parametrize("beta", [0.5, 0.999])
def test_beta_below_one_is_rejected(beta):
    with pytest.raises(ValueError, match="beta must be .*>= 1"):
        layer_budgets(64, window=8, num_layers=30, prompt_len=1000, beta=beta)
    assert layer_budgets(64, window=8, num_layers=30, prompt_len=1000, beta=1)[0] == 56  # β = 1: flat
