"""Summarise and plot :mod:`experiments.toy_grpo` runs: ``python -m experiments.plot_rl DIR``.

Reads every ``<arm>-seed<k>.json`` in ``DIR``, writes ``summary.json`` (the
final evaluation of each arm: mean, min and max over seeds) and ``curves.png``
(pass@16, worst@16, policy entropy at T = 1 on the evaluation samples, and the
share of training prompts with no correct sample, against training steps; lines
are seed means, bands the range over seeds), and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

FINAL_KEYS = ("pass@1", "pass@16", "worst@16", "no_correct_share", "entropy_t1")
TRAIN_WINDOW = 5  # training-step metrics are averaged over this many last steps


def load_runs(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Run logs by arm name, seeds in file-name order."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("*-seed*.json")):
        doc = json.loads(path.read_text())
        runs[doc["arm"]].append(doc)
    if not runs:
        raise SystemExit(f"no <arm>-seed<k>.json runs in {folder}")
    return dict(runs)


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per arm: seeds, and mean/min/max over seeds of the final evaluation and of the
    last steps' training metrics (reward, share of prompts without a correct sample)."""
    out: dict[str, Any] = {}
    for arm, docs in runs.items():
        finals = [d["evals"][-1] for d in docs]
        first = [d["evals"][0] for d in docs]
        tail = [d["train"][-TRAIN_WINDOW:] for d in docs]
        out[arm] = {
            "seeds": [d["seed"] for d in docs],
            "final_step": finals[0]["step"],
            "initial": {k: _spread([f[k] for f in first]) for k in FINAL_KEYS},
            "final": {k: _spread([f[k] for f in finals]) for k in FINAL_KEYS},
            "train_last_steps": {
                k: _spread([statistics.fmean(s[k] for s in t) for t in tail])
                for k in ("reward", "no_correct_share", "temperature")
            },
            "wall_s": sum(d["wall_s"] for d in docs),
        }
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table: mean [min, max] over seeds per final metric."""
    head = ["arm", "seeds", *FINAL_KEYS, "train no-correct share (last 5 steps)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for arm, s in summary.items():

        def cell(d: dict[str, float]) -> str:
            return f"{d['mean']:.3f} [{d['min']:.3f}, {d['max']:.3f}]"

        row = [arm, str(len(s["seeds"]))]
        row += [cell(s["final"][k]) for k in FINAL_KEYS]
        row.append(cell(s["train_last_steps"]["no_correct_share"]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Write the four-panel PNG of the curves (seed mean, range band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("evals", "pass@16", "pass@16 (T = 1, held-out)"),
        ("evals", "worst@16", "worst@16 (T = 1, held-out)"),
        ("evals", "entropy_t1", "policy entropy at T = 1 (nats/token)"),
        ("train", "no_correct_share", "training prompts with no correct sample"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for ax, (part, key, title) in zip(axes.flat, panels, strict=True):
        for arm, docs in runs.items():
            steps = [e["step"] for e in docs[0][part]]
            series = [[e[key] for e in d[part]] for d in docs]
            width = min(len(s) for s in series)
            steps, series = steps[:width], [s[:width] for s in series]
            if part == "train":  # noisy per step: a running mean over TRAIN_WINDOW steps
                series = [
                    [
                        statistics.fmean(s[max(0, i - TRAIN_WINDOW + 1) : i + 1])
                        for i in range(width)
                    ]
                    for s in series
                ]
            mean = [statistics.fmean(col) for col in zip(*series, strict=True)]
            low = [min(col) for col in zip(*series, strict=True)]
            high = [max(col) for col in zip(*series, strict=True)]
            (line,) = ax.plot(steps, mean, label=arm)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Summarise the runs in a folder: summary.json, curves.png, a printed table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", type=Path, nargs="?", default=Path("experiments/results/toy_grpo")
    )
    args = parser.parse_args(argv)
    runs = load_runs(args.folder)
    summary = summarise(runs)
    (args.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(runs, args.folder / "curves.png")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
