"""pass@k / worst@k estimators against exhaustive enumeration; bootstrap intervals."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ead_vllm.evaluation.metrics import (
    bootstrap_interval,
    curve_intervals,
    mean_curves,
    pass_at_k,
    per_problem,
    worst_at_k,
)


def brute(n: int, c: int, k: int) -> tuple[float, float]:
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    any_ok = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    all_ok = sum(all(samples[i] for i in s) for s in subsets) / len(subsets)
    return any_ok, all_ok


@given(
    st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n)))
)
def test_matches_enumeration(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    want_pass, want_worst = brute(n, c, k)
    assert pass_at_k(n, c, k) == pytest.approx(want_pass, abs=1e-12)
    assert worst_at_k(n, c, k) == pytest.approx(want_worst, abs=1e-12)


def test_closed_forms_at_large_n() -> None:
    n, c = 200, 37
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    assert worst_at_k(n, c, 1) == pytest.approx(c / n)
    assert pass_at_k(n, c, 10) == pytest.approx(1 - math.comb(n - c, 10) / math.comb(n, 10))
    assert worst_at_k(n, c, 10) == pytest.approx(math.comb(c, 10) / math.comb(n, 10))


def test_curves_are_monotone() -> None:
    curves = mean_curves(16, [0, 3, 8, 16, 1])
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(curves["pass"]))
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(curves["worst"]))
    assert curves["pass"][0] == pytest.approx(curves["worst"][0])


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="need 0 <= c <= n"):
        pass_at_k(n, c, k)


def test_bootstrap_interval_contains_mean_and_is_seeded() -> None:
    values = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_interval(values, seed=3)
    assert low < 0.3 < high
    assert (low, high) == bootstrap_interval(values, seed=3)
    # the normal approximation's 95% half-width for p = 0.3, n = 100 is 0.090
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.3 * 0.7 / 100), rel=0.15)
    assert bootstrap_interval([0.5] * 10) == (0.5, 0.5)


def test_bootstrap_coverage() -> None:
    """95% intervals of a Bernoulli(0.3) mean over 150 problems cover 0.3 in about 95% of
    400 replications (seeded). The percentile bootstrap runs slightly narrow at this size;
    a binomial test at 1% rejects coverage below 0.90 (or above 0.99): 0.93 needs >= 360."""
    rng = np.random.default_rng(11)
    covered = 0
    for rep in range(400):
        data = (rng.random(150) < 0.3).astype(float)
        low, high = bootstrap_interval(data, resamples=1000, seed=rep)
        covered += low <= 0.3 <= high
    assert 360 <= covered <= 396


@pytest.mark.parametrize(
    "bad",
    [dict(values=[]), dict(values=[1.0], level=1.0), dict(values=[1.0], resamples=0)],
)
def test_bootstrap_bad_arguments(bad: dict) -> None:
    with pytest.raises(ValueError):
        bootstrap_interval(**bad)


def test_curve_intervals_bracket_the_curves() -> None:
    correct = [0, 3, 8, 16, 1, 5, 12, 0, 16, 7]
    curves = mean_curves(16, correct)
    bands = curve_intervals(16, correct, seed=1, resamples=500)
    for metric in ("pass", "worst"):
        assert len(bands[metric]) == 16
        for value, (low, high) in zip(curves[metric], bands[metric], strict=True):
            assert low - 1e-12 <= value <= high + 1e-12
    assert per_problem(16, correct, 1, "pass").tolist() == [c / 16 for c in correct]
