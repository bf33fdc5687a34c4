"""experiments/rl_report.py on made-up runs: paired differences, intervals, verdicts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from experiments.rl_report import Claim, improvement, paired, report, verdict


def _run(arm: str, seed: int, correct: list[int], start: list[int]) -> dict[str, Any]:
    def evaluation(counts: list[int]) -> dict[str, Any]:
        return {
            "correct": counts,
            "distinct_correct": [min(c, 2) for c in counts],
            "entropy": [0.1] * len(counts),
        }

    return {
        "arm": arm,
        "seed": seed,
        "settings": {"eval_samples": 32},
        "evals": [evaluation(start), evaluation(correct)],
        "train": [{"no_correct_share": 0.5}, {"no_correct_share": 0.25}],
        "wall_s": 1.0,
    }


def _runs(shift: int) -> dict[str, dict[int, dict[str, Any]]]:
    # 60 problems x 32 samples, 3 seeds; "better" solves every problem 4 * ``shift``
    # samples more often than GRPO, GRPO itself 8 more than at the start.
    runs: dict[str, dict[int, dict[str, Any]]] = {"grpo": {}, "better": {}}
    for seed in range(3):
        start = [4 * ((i + seed) % 5) for i in range(60)]
        base = [c + 8 for c in start]
        runs["grpo"][seed] = _run("grpo", seed, base, start)
        runs["better"][seed] = _run("better", seed, [c + 4 * shift for c in base], start)
    return runs


def test_a_real_shift_is_supported_and_no_shift_is_not() -> None:
    up = report(_runs(1))
    pass1 = up["differences"]["better"]["pass@1"]
    assert pass1["mean"] == pytest.approx(1 / 8)
    assert pass1["over_units"] == pytest.approx((1 / 8, 1 / 8))  # the same shift everywhere
    assert up["grpo_improvement"]["pass@1"]["mean"] == pytest.approx(2 / 8)
    same = report(_runs(0))["differences"]["better"]["pass@1"]
    assert same["mean"] == 0 and same["over_units"] == (0, 0)
    result = paired(np.array([[0.0, 1.0, -1.0, 0.5]] * 3))
    assert verdict(result, +1) == verdict(result, -1) == "not supported"


def test_verdict_needs_both_intervals() -> None:
    # Clear over problems, but one seed goes the other way: not supported.
    d = np.array([[0.1] * 50, [0.1] * 50, [-0.05] * 50])
    result = paired(d)
    assert result.over_units[0] > 0 and result.over_seeds[0] < 0
    assert verdict(result, +1) == "not supported"
    down = paired(-np.abs(np.random.default_rng(0).normal(0.2, 0.05, size=(3, 50))))
    assert verdict(down, +1) == "contradicted" and verdict(down, -1) == "supported"


def test_claims_use_the_claimed_direction() -> None:
    # fewer no-correct training prompts is the E3 budget's claim (sign -1)
    runs = _runs(1)
    runs["e3_budget"] = {
        s: {**d, "arm": "e3_budget", "train": [{"no_correct_share": 0.1}] * 2}
        for s, d in runs["better"].items()
    }
    runs["grpo"] = {
        s: {**d, "train": [{"no_correct_share": 0.3 + 0.01 * s}, {"no_correct_share": 0.3}]}
        for s, d in runs["grpo"].items()
    }
    rep = report(runs)
    (budget,) = [
        c for c in rep["claims"] if c["arm"] == "e3_budget" and c["metric"] == "train_no_correct"
    ]
    assert budget["difference"]["mean"] < 0 and budget["verdict"] == "supported"
    assert Claim("E3", "x", "e3_budget", "pass@1", 1) in [
        Claim(c["paper"], "x", c["arm"], c["metric"], c["sign"]) for c in rep["claims"]
    ]
    assert improvement(runs, "grpo", "pass@1").mean == pytest.approx(2 / 8)
