"""Print, save and plot evaluation results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ead_vllm.evaluation.run import StrategyResult

TABLE_KS = (1, 4, 16, 32)


def _cell(r: StrategyResult, metric: str, k: int) -> str:
    value = f"{r.curves[metric][k - 1]:.3f}"
    if not r.intervals:
        return value
    low, high = r.intervals[metric][k - 1]
    return f"{value} [{low:.3f}, {high:.3f}]"


def mean_distinct(r: StrategyResult) -> float:
    """Mean over problems of the number of distinct correct completions."""
    return sum(r.distinct) / len(r.distinct) if r.distinct else 0.0


def table(results: Sequence[StrategyResult], ks: Sequence[int] = TABLE_KS) -> str:
    """A plain-text table: one row per strategy, pass@k and worst@k for ``ks`` (with 95%
    bootstrap intervals when computed) and the mean count of distinct correct completions."""
    ks = [k for k in ks if k <= min(r.n for r in results)]
    head = ["strategy"] + [f"pass@{k}" for k in ks] + [f"worst@{k}" for k in ks] + ["distinct"]
    rows = [
        [r.strategy.name]
        + [_cell(r, "pass", k) for k in ks]
        + [_cell(r, "worst", k) for k in ks]
        + [f"{mean_distinct(r):.2f}"]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*row) for row in [head, *rows])


def to_json(results: Sequence[StrategyResult], meta: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly document: ``meta`` plus each strategy's counts and curves."""
    return {
        **meta,
        "results": [
            {
                **r.strategy.describe(),
                "n": r.n,
                "correct": r.correct,
                "pass_at_k": r.curves["pass"],
                "worst_at_k": r.curves["worst"],
                "pass_at_k_ci95": r.intervals.get("pass"),
                "worst_at_k_ci95": r.intervals.get("worst"),
                "distinct_correct": r.distinct,
                "mean_distinct_correct": mean_distinct(r),
            }
            for r in results
        ],
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    """Write ``doc`` as indented JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def plot(results: Sequence[StrategyResult], path: Path, title: str = "") -> None:
    """Write a PNG with pass@k (left) and worst@k (right) against k for each strategy,
    with the 95% bootstrap intervals as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for metric, ax in zip(("pass", "worst"), axes, strict=True):
        for r in results:
            ks = range(1, r.n + 1)
            style = "-" if r.strategy.ead else "--"
            (line,) = ax.plot(
                ks, r.curves[metric], style, marker="o", markersize=3, label=r.strategy.name
            )
            if r.intervals:
                low, high = zip(*r.intervals[metric], strict=True)
                ax.fill_between(ks, low, high, color=line.get_color(), alpha=0.12)
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric}@k")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
