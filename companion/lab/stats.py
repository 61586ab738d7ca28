"""The book's rule for "detectable": small, standard statistics shared by every chapter.

A difference is reported as a finding only when its 95% interval excludes zero; otherwise the book says "no
detectable difference" and gives the interval, so a reader can see how large an effect the sample could have
missed. Three situations occur:

- a quantity measured once per seed (a loss, an error): the mean, the sample standard deviation (ddof 1) and a
  Student-t interval for the mean (:func:`spread`);
- a success rate over independent trials (a retrieval accuracy): the Wilson score interval
  (:func:`wilson_interval`);
- two methods scored on the same trials (paired yes/no outcomes): the exact McNemar test (:func:`mcnemar_exact`).

The t and binomial quantiles come from SciPy (``scipy.stats``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .checks import check_float, check_int, check_sequence

__all__ = ["Spread", "mcnemar_exact", "spread", "wilson_interval"]


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (ddof 1) and ``n`` of a few measurements, with the two-sided
    ``confidence`` Student-t interval of the mean (``low``, ``high``; both equal to the mean when ``n == 1``,
    where no spread can be estimated)."""
    mean: float
    sd: float
    n: int
    low: float
    high: float

    @property
    def detectable(self) -> bool:
        """True when the interval excludes zero (and ``n > 1``): a difference the sample can tell from noise."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def text(self, fmt: str = ".3f", unit: str = "") -> str:
        """``"mean ± sd (n = 3)"``, the book's way of writing a spread."""
        if self.n == 1:
            return f"{self.mean:{fmt}}{unit} (n = 1, no spread)"
        return f"{self.mean:{fmt}}{unit} ± {self.sd:{fmt}}{unit} (n = {self.n})"


def spread(values: Sequence[float], *, confidence: float = 0.95) -> Spread:
    """The :class:`Spread` of ``values`` (one per seed or run; at least one finite number).

    Raises:
        TypeError / ValueError: ``values`` not a non-empty sequence of finite numbers, ``confidence`` not in (0, 1).
    """
    from scipy import stats

    values = check_sequence("values", values, "numbers")
    xs = [check_float(f"values[{i}]", v) for i, v in enumerate(values)]
    confidence = check_float("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Spread(mean, 0.0, 1, mean, mean)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Spread(mean, sd, n, mean - half, mean + half)


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of a success rate ``successes / n`` (both in [0, 1]).

    Raises:
        TypeError / ValueError: ``n`` not an int >= 1, ``successes`` not an int in [0, n], ``confidence`` not in
        (0, 1).
    """
    from scipy import stats

    n = check_int("n", n, low=1)
    successes = check_int("successes", successes, low=0, high=n)
    confidence = check_float("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for paired yes/no outcomes: ``b`` trials where only the first method
    succeeded, ``c`` where only the second did (a binomial test of ``b`` successes in ``b + c`` at 1/2; 1.0 when
    ``b + c == 0``).

    Raises:
        TypeError / ValueError: ``b`` or ``c`` not an int >= 0.
    """
    from scipy import stats

    b = check_int("b", b, low=0)
    c = check_int("c", c, low=0)
    if b + c == 0:
        return 1.0
    return float(min(1.0, stats.binomtest(b, b + c, 0.5).pvalue))
