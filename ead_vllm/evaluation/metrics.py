"""Unbiased pass@k and worst@k estimators from n samples with c correct.

pass@k is the probability that at least one of k samples drawn without
replacement from the n is correct, ``1 - C(n - c, k) / C(n, k)`` (Chen et al.,
2021); worst@k is the probability that all k are correct, ``C(c, k) / C(n, k)``.
Both are averaged over problems. Computed as running products, so no huge
binomials appear.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")


def _all_drawn_from(pool: int, n: int, k: int) -> float:
    """C(pool, k) / C(n, k): the chance that k draws without replacement all land in a pool."""
    if pool < k:
        return 0.0
    return float(np.prod((pool - np.arange(k)) / (n - np.arange(k))))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct."""
    _check(n, c, k)
    return 1.0 - _all_drawn_from(n - c, n, k)


def worst_at_k(n: int, c: int, k: int) -> float:
    """Unbiased worst@k (all k samples correct) for one problem, ``n`` samples, ``c`` correct."""
    _check(n, c, k)
    return _all_drawn_from(c, n, k)


def mean_curves(n: int, correct: Sequence[int]) -> dict[str, list[float]]:
    """pass@k and worst@k for k = 1..n, averaged over problems (``correct[i]`` = c of problem i)."""
    if not correct:
        raise ValueError("no problems")
    ks = range(1, n + 1)
    return {
        "pass": [float(np.mean([pass_at_k(n, c, k) for c in correct])) for k in ks],
        "worst": [float(np.mean([worst_at_k(n, c, k) for c in correct])) for k in ks],
    }


def per_problem(n: int, correct: Sequence[int], k: int, metric: str) -> np.ndarray:
    """Per-problem unbiased ``metric`` ("pass" or "worst") at ``k``, float64 [problems]."""
    fn = {"pass": pass_at_k, "worst": worst_at_k}[metric]
    return np.array([fn(n, c, k) for c in correct], dtype=np.float64)


def bootstrap_interval(
    values: Sequence[float], *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement).

    Seeded (``numpy.random.default_rng(seed)``), so a rerun gives the same
    interval. ``level`` in (0, 1); needs at least one value.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("need a non-empty 1-D sequence of values")
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got {level}, {resamples}")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def curve_intervals(
    n: int, correct: Sequence[int], *, seed: int = 0, resamples: int = 2000
) -> dict[str, list[tuple[float, float]]]:
    """95% bootstrap intervals of the pass@k and worst@k curves (k = 1..n), resampling problems."""
    return {
        metric: [
            bootstrap_interval(per_problem(n, correct, k, metric), seed=seed, resamples=resamples)
            for k in range(1, n + 1)
        ]
        for metric in ("pass", "worst")
    }
