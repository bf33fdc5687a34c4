"""pass@k / worst@k estimators against exhaustive enumeration of k-subsets."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ead_vllm.evaluation.metrics import mean_curves, pass_at_k, worst_at_k


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
