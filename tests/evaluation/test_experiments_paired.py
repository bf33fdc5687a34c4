"""experiments/paired_eval.py: per-problem paired differences of two eval strategies."""

from __future__ import annotations

import pytest

from experiments.paired_eval import paired


def _doc() -> dict:
    # 40 problems, 8 samples; EAD solves every problem one sample more often than T=1
    base = [i % 8 for i in range(40)]
    ead = [min(c + 1, 8) for c in base]
    return {
        "samples": 8,
        "results": [
            {"name": "T=1", "ead": None, "correct": base, "distinct_correct": [1] * 40},
            {"name": "EAD", "ead": {"decay": 16}, "correct": ead, "distinct_correct": [2] * 40},
        ],
    }


def test_paired_differences_and_intervals() -> None:
    (row,) = paired(_doc(), ["T=1"])
    assert (row["strategy"], row["baseline"]) == ("EAD", "T=1")
    mean, low, high = row["pass@1"]
    assert mean == pytest.approx(sum(min(i % 8 + 1, 8) - i % 8 for i in range(40)) / 320)
    assert 0 < low <= mean <= high
    assert row["distinct"] == [1.0, 1.0, 1.0]
    assert row["pass@8"][0] >= 0 and row["worst@4"][0] > 0


def test_unknown_baseline_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="no strategy named"):
        paired(_doc(), ["T=0.7"])
