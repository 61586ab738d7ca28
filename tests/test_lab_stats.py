"""The shared rule for "detectable" (companion.lab.stats), on hand-computed cases."""

import math

import pytest

from companion.lab import mcnemar_exact, spread, wilson_interval


def test_spread_is_mean_sample_sd_and_student_t_interval():
    s = spread([1.0, 2.0, 3.0])
    assert (s.mean, s.sd, s.n) == (2.0, 1.0, 3)
    half = 4.302652729911275 / math.sqrt(3)            # t(0.975, 2 degrees of freedom) · sd / √n
    assert (s.low, s.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert not s.detectable                            # the interval holds 0
    assert spread([1.0, 1.1, 0.9]).detectable          # mean 1, sd 0.1: far from 0
    assert spread([-1.0, -1.1, -0.9]).detectable
    assert s.text() == "2.000 ± 1.000 (n = 3)"


def test_one_value_has_no_spread_and_is_never_detectable():
    s = spread([5.0])
    assert (s.mean, s.sd, s.n, s.low, s.high) == (5.0, 0.0, 1, 5.0, 5.0)
    assert not s.detectable
    assert s.text(".1f", " Å") == "5.0 Å (n = 1, no spread)"


def test_wilson_interval_by_hand():
    z = 1.959963984540054
    for k, n in ((0, 30), (8, 10), (10, 10), (15, 40)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        low, high = wilson_interval(k, n)
        assert low == pytest.approx(max(0.0, centre - half), abs=1e-12)
        assert high == pytest.approx(min(1.0, centre + half), abs=1e-12)


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)          # 2 · (1/2)^6
    assert mcnemar_exact(4, 1) == pytest.approx(2 * 6 / 32)      # 2 · (C(5,0) + C(5,1)) / 2^5
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(1, 4) == mcnemar_exact(4, 1)
