"""Paired differences between strategies of one ``ead-vllm eval`` run, with bootstrap intervals.

``python -m experiments.paired_eval experiments/results/eval_countdown/eval.json``

Every strategy of a run is evaluated on the same problems, so a difference of
two strategies is best judged per problem: for each EAD strategy and each
baseline (``--baselines``), the mean over problems of the per-problem
difference in pass@1, pass@n, worst@4 and distinct correct answers, with a 95%
percentile bootstrap interval over problems (resampling problems, seeded).
Prints a Markdown table and writes ``paired.json`` next to the input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ead_vllm.evaluation.metrics import bootstrap_interval, per_problem


def paired(doc: dict[str, Any], baselines: list[str]) -> list[dict[str, Any]]:
    """One row per (EAD strategy, baseline): mean difference and 95% interval per metric."""
    by_name = {r["name"]: r for r in doc["results"]}
    missing = [b for b in baselines if b not in by_name]
    if missing:
        raise SystemExit(f"no strategy named {missing} in this run: {sorted(by_name)}")
    n = doc["samples"]
    metrics = (("pass", 1), ("pass", n), ("worst", min(4, n)))
    rows = []
    for name, r in by_name.items():
        if r.get("ead") is None:
            continue
        for base in baselines:
            row: dict[str, Any] = {"strategy": name, "baseline": base}
            for metric, k in metrics:
                diff = per_problem(n, r["correct"], k, metric) - per_problem(
                    n, by_name[base]["correct"], k, metric
                )
                row[f"{metric}@{k}"] = [float(diff.mean()), *bootstrap_interval(diff, seed=0)]
            distinct = np.subtract(r["distinct_correct"], by_name[base]["distinct_correct"])
            row["distinct"] = [float(distinct.mean()), *bootstrap_interval(distinct, seed=0)]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the paired table and write ``paired.json`` beside the eval JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_json", type=Path)
    parser.add_argument("--baselines", nargs="+", default=["T=0.8", "T=1"])
    args = parser.parse_args(argv)
    rows = paired(json.loads(args.eval_json.read_text()), args.baselines)
    keys = [k for k in rows[0] if k not in ("strategy", "baseline")]
    print("| EAD - baseline | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 1))
    for row in rows:
        cells = [f"{row[k][0]:+.3f} [{row[k][1]:+.3f}, {row[k][2]:+.3f}]" for k in keys]
        print(f"| {row['strategy']} - {row['baseline']} | " + " | ".join(cells) + " |")
    (args.eval_json.parent / "paired.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
