"""Tables, paired intervals and curves of :mod:`experiments.toy_grpo` runs.

``python -m experiments.rl_report DIR`` reads every ``<arm>-seed<k>.json`` in
``DIR`` and writes ``report.json`` (every number of the tables), ``report.md``
(the tables) and ``curves.png``. The sweep's table (:func:`sweep`) is written by
:mod:`experiments.rl_sweep`.

Why paired: every arm of a seed starts from the same checkpoint, trains on the
same problem stream and is evaluated on the same held-out problems, so a
difference between an arm and GRPO is taken per (seed, problem) first. Two
95% percentile intervals are given for each mean difference, because two
things vary:

* **over problems**: the per-problem differences, averaged over seeds,
  resampled over the held-out problems (is it more than which problems were
  drawn?);
* **over seeds**: the per-seed mean differences resampled over seeds (is it
  more than run-to-run noise? With 3 seeds this interval is coarse: its ends
  are near the smallest and largest seed).

A claim counts as *supported* only when both intervals exclude 0 in the claimed
direction, and *contradicted* only when both exclude 0 in the other one.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ead_vllm.evaluation.metrics import bootstrap_interval, per_problem

BASELINE = "grpo"
# Columns of the arm table: per-problem metrics of the final evaluation, then the
# training rollouts' share of prompts without a correct sample (mean over steps).
TABLE_METRICS = (
    "pass@1",
    "pass@4",
    "pass@32",
    "worst@4",
    "entropy",
    "distinct",
    "train_no_correct",
)
PASS_KS = (1, 2, 4, 8, 16, 32)


def load_runs(folder: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Run logs by arm name, then by seed."""
    runs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(folder.glob("*-seed*.json")):
        doc = json.loads(path.read_text())
        runs[doc["arm"]][doc["seed"]] = doc
    if not runs:
        raise SystemExit(f"no <arm>-seed<k>.json runs in {folder}")
    return dict(runs)


def problem_values(doc: dict[str, Any], evaluation: dict[str, Any], metric: str) -> np.ndarray:
    """Per-problem values [problems] of ``metric`` in one evaluation of a run.

    ``metric``: ``pass@k`` / ``worst@k`` (unbiased estimates from the problem's
    correct count out of ``eval_samples``), ``distinct`` (distinct correct
    chains) or ``entropy`` (nats per token at T = 1).
    """
    if metric == "distinct":
        return np.asarray(evaluation["distinct_correct"], dtype=np.float64)
    if metric == "entropy":
        return np.asarray(evaluation["entropy"], dtype=np.float64)
    kind, k = metric.split("@")
    return per_problem(doc["settings"]["eval_samples"], evaluation["correct"], int(k), kind)


def train_values(doc: dict[str, Any]) -> np.ndarray:
    """Per-step share [steps] of training prompts whose samples were all wrong."""
    return np.asarray([t["no_correct_share"] for t in doc["train"]], dtype=np.float64)


@dataclass(frozen=True)
class Paired:
    """A mean difference [seeds x units] and its two 95% bootstrap intervals."""

    mean: float
    over_units: tuple[float, float]  # units: held-out problems (or training steps)
    over_seeds: tuple[float, float]

    def cell(self, seeds: bool = True) -> str:
        """``+0.012 [-0.004, +0.030] / [+0.001, +0.020]`` (units, then seeds; the seeds'
        interval left out with ``seeds=False``, as for a single seed)."""
        u, s = self.over_units, self.over_seeds
        text = f"{self.mean:+.3f} [{u[0]:+.3f}, {u[1]:+.3f}]"
        return text + f" / [{s[0]:+.3f}, {s[1]:+.3f}]" if seeds else text


def paired(differences: np.ndarray) -> Paired:
    """Mean of ``differences`` [seeds, units] with intervals over units and over seeds."""
    d = np.asarray(differences, dtype=np.float64)
    return Paired(
        mean=float(d.mean()),
        over_units=bootstrap_interval(d.mean(axis=0), seed=0),
        over_seeds=bootstrap_interval(d.mean(axis=1), seed=0),
    )


def _values(doc: dict[str, Any], metric: str, at: int) -> np.ndarray:
    if metric == "train_no_correct":
        return train_values(doc)
    return problem_values(doc, doc["evals"][at], metric)


def arm_difference(
    runs: dict[str, dict[int, dict[str, Any]]], arm: str, metric: str, base: str = BASELINE
) -> Paired:
    """``arm - base`` at the final evaluation, paired by seed and problem (or training step)."""
    seeds = sorted(set(runs[arm]) & set(runs[base]))
    if not seeds:
        raise ValueError(f"{arm} and {base} share no seed")
    return paired(
        np.stack(
            [_values(runs[arm][s], metric, -1) - _values(runs[base][s], metric, -1) for s in seeds]
        )
    )


def improvement(runs: dict[str, dict[int, dict[str, Any]]], arm: str, metric: str) -> Paired:
    """Final minus first evaluation of one arm, paired by seed and problem."""
    docs = [runs[arm][s] for s in sorted(runs[arm])]
    return paired(np.stack([_values(d, metric, -1) - _values(d, metric, 0) for d in docs]))


def arm_means(runs: dict[str, dict[int, dict[str, Any]]], arm: str) -> dict[str, float]:
    """Mean over seeds (and problems) of every table metric at the final evaluation, and
    of pass@1 at the first one (``start_pass@1``: the checkpoint)."""
    docs = list(runs[arm].values())
    out = {m: float(np.mean([_values(d, m, -1).mean() for d in docs])) for m in TABLE_METRICS}
    out["start_pass@1"] = float(np.mean([_values(d, "pass@1", 0).mean() for d in docs]))
    return out


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, and the paired difference (``arm - base``) that decides it."""

    paper: str
    claim: str
    arm: str
    metric: str
    sign: int  # +1: the claim says arm > base; -1: arm < base
    base: str = BASELINE


# The claims the arms can test. EAD's paper trains EAD with its off-policy correction,
# so ead_tis stands for "EAD" in its claims; E3's two mechanisms have an arm each.
CLAIMS = (
    Claim("EAD", "higher pass@1 than fixed-temperature GRPO", "ead_tis", "pass@1", 1),
    Claim("EAD", "higher Pass@k during RLVR training (k = 32 here)", "ead_tis", "pass@32", 1),
    Claim("EAD", "less entropy collapse (policy entropy at T = 1)", "ead_tis", "entropy", 1),
    Claim("EAD", "more distinct correct solutions", "ead_tis", "distinct", 1),
    Claim("EAD", "the correction helps: EAD+TIS above plain EAD", "ead_tis", "pass@1", 1, "ead"),
    Claim(
        "E3",
        "budget: fewer training prompts with no correct sample",
        "e3_budget",
        "train_no_correct",
        -1,
    ),
    Claim("E3", "budget: higher pass@1", "e3_budget", "pass@1", 1),
    Claim(
        "E3",
        "temperature: the policy's own entropy (T = 1) above GRPO's",
        "e3_temperature",
        "entropy",
        1,
    ),
    Claim("E3", "temperature: higher pass@k at large k (k = 32)", "e3_temperature", "pass@32", 1),
    Claim("E3", "temperature: higher pass@1", "e3_temperature", "pass@1", 1),
)


def verdict(result: Paired, sign: int) -> str:
    """``supported`` / ``contradicted`` when both intervals exclude 0 (in / against the
    claimed direction), else ``not supported`` (the data cannot tell it from no effect)."""
    lows = (result.over_units[0], result.over_seeds[0])
    highs = (result.over_units[1], result.over_seeds[1])
    if sign > 0:
        above, below = min(lows) > 0, max(highs) < 0
    else:
        above, below = max(highs) < 0, min(lows) > 0
    return "supported" if above else "contradicted" if below else "not supported"


def report(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Every number the tables show: per-arm means, paired differences against GRPO,
    GRPO's own improvement, the pass@k curve differences and the claims' verdicts."""
    arms = sorted(runs, key=lambda a: (a != BASELINE, a))
    diff = {
        arm: {m: arm_difference(runs, arm, m).__dict__ for m in TABLE_METRICS}
        for arm in arms
        if arm != BASELINE
    }
    curves = {
        arm: {f"pass@{k}": arm_difference(runs, arm, f"pass@{k}").__dict__ for k in PASS_KS}
        for arm in arms
        if arm != BASELINE
    }
    claims = []
    for c in CLAIMS:
        if c.arm not in runs or c.base not in runs:
            continue
        result = arm_difference(runs, c.arm, c.metric, c.base)
        claims.append(
            {**c.__dict__, "difference": result.__dict__, "verdict": verdict(result, c.sign)}
        )
    return {
        "seeds": {arm: sorted(runs[arm]) for arm in arms},
        "means": {arm: arm_means(runs, arm) for arm in arms},
        "differences": diff,
        "pass_at_k_differences": curves,
        "grpo_improvement": {
            m: improvement(runs, BASELINE, m).__dict__ for m in ("pass@1", "pass@32", "entropy")
        }
        if BASELINE in runs
        else {},
        "claims": claims,
        "wall_s": {arm: sum(d["wall_s"] for d in runs[arm].values()) for arm in arms},
    }


def _from_dict(d: dict[str, Any]) -> Paired:
    return Paired(d["mean"], tuple(d["over_units"]), tuple(d["over_seeds"]))


def markdown(rep: dict[str, Any]) -> str:
    """The report's two tables (arm means; paired differences) and the claims table."""
    head = ["arm", "seeds", *TABLE_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for arm, means in rep["means"].items():
        cells = [f"{means[m]:.3f}" for m in TABLE_METRICS]
        lines.append(f"| {arm} | {len(rep['seeds'][arm])} | " + " | ".join(cells) + " |")
    lines += ["", "| arm - grpo | " + " | ".join(TABLE_METRICS) + " |"]
    lines.append("|" + " --- |" * (len(TABLE_METRICS) + 1))
    for arm, by_metric in rep["differences"].items():
        cells = [_from_dict(by_metric[m]).cell() for m in TABLE_METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "| paper | claim | arm - base | metric | difference | verdict |"]
    lines.append("|" + " --- |" * 6)
    for c in rep["claims"]:
        cell = _from_dict(c["difference"]).cell()
        pair = f"{c['arm']} - {c['base']}"
        row = (c["paper"], c["claim"], pair, c["metric"], cell, c["verdict"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, dict[int, dict[str, Any]]], rep: dict[str, Any], path: Path) -> None:
    """Curves against training step (seed mean, band = seed range), and the final pass@k
    difference to GRPO against k (from ``rep``, the :func:`report` of ``runs``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def evals(metric: str) -> Callable[[dict[str, Any]], tuple[list[int], list[float]]]:
        return lambda d: (
            [e["step"] for e in d["evals"]],
            [float(problem_values(d, e, metric).mean()) for e in d["evals"]],
        )

    def train_share(d: dict[str, Any]) -> tuple[list[int], list[float]]:
        v = train_values(d)
        window = 5  # per-step shares are noisy: a running mean over 5 steps
        return list(range(len(v))), [
            float(v[max(0, i - window + 1) : i + 1].mean()) for i in range(len(v))
        ]

    panels = (
        ("pass@1 (held-out, T = 1)", evals("pass@1")),
        ("pass@32 (held-out, T = 1)", evals("pass@32")),
        ("worst@4 (held-out, T = 1)", evals("worst@4")),
        ("policy entropy at T = 1 (nats/token)", evals("entropy")),
        ("distinct correct chains per problem (of 32)", evals("distinct")),
        ("training prompts with no correct sample", train_share),
    )
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5), constrained_layout=True)
    flat = list(axes.flat)
    for ax, (title, series_of) in zip(flat, panels, strict=False):
        for arm, by_seed in runs.items():
            series = [series_of(d) for d in by_seed.values()]
            width = min(len(s[1]) for s in series)
            steps = series[0][0][:width]
            cols = list(zip(*(s[1][:width] for s in series), strict=True))
            (line,) = ax.plot(steps, [statistics.fmean(c) for c in cols], label=arm)
            ax.fill_between(
                steps,
                [min(c) for c in cols],
                [max(c) for c in cols],
                color=line.get_color(),
                alpha=0.15,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    ax = flat[len(panels)]
    for arm, by_k in rep["pass_at_k_differences"].items():
        results = [_from_dict(by_k[f"pass@{k}"]) for k in PASS_KS]
        (line,) = ax.plot(PASS_KS, [r.mean for r in results], marker="o", label=arm)
        ax.fill_between(
            PASS_KS,
            [r.over_units[0] for r in results],
            [r.over_units[1] for r in results],
            color=line.get_color(),
            alpha=0.12,
        )
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_title("final pass@k - GRPO's (band: 95% over problems)", fontsize=10)
    ax.set_xlabel("k")
    ax.grid(alpha=0.3)
    flat[-1].axis("off")
    flat[0].legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep(folder: Path) -> dict[str, Any]:
    """GRPO's held-out improvement (final - first evaluation) in every setting of a sweep:
    one sub-folder per setting, each with ``grpo-seed<k>.json`` runs."""
    rows = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not any(sub.glob(f"{BASELINE}-seed*.json")):
            continue  # a setting not run yet
        runs = load_runs(sub)
        doc = next(iter(runs[BASELINE].values()))
        rows[sub.name] = {
            "settings": {
                k: doc["settings"][k]
                for k in ("lr", "steps", "train_problems", "prompts_per_step", "samples_per_prompt")
            },
            "seeds": sorted(runs[BASELINE]),
            "start_pass@1": arm_means(runs, BASELINE)["start_pass@1"],
            **{
                f"{m}_change": improvement(runs, BASELINE, m).__dict__
                for m in ("pass@1", "pass@32", "entropy")
            },
            "wall_s": sum(d["wall_s"] for d in runs[BASELINE].values()),
        }
    return rows


def sweep_markdown(rows: dict[str, Any]) -> str:
    """The sweep as a table: GRPO's change of pass@1, pass@32 and entropy per setting."""
    head = ("setting", "lr", "steps", "train problems", "seeds", "pass@1 at start")
    head += ("pass@1 change", "pass@32 change", "entropy change")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in rows.items():
        s = r["settings"]
        pool = s["train_problems"] or "stream"
        several = len(r["seeds"]) > 1
        changes = ("pass@1", "pass@32", "entropy")
        cells = [_from_dict(r[f"{m}_change"]).cell(seeds=several) for m in changes]
        lines.append(
            f"| {name} | {s['lr']:g} | {s['steps']} | {pool} | {len(r['seeds'])} | "
            f"{r['start_pass@1']:.3f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write ``report.json``, ``report.md`` and ``curves.png`` of a folder of runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    runs = load_runs(args.folder)
    rep = report(runs)
    (args.folder / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    text = markdown(rep)
    (args.folder / "report.md").write_text(text + "\n")
    plot(runs, rep, args.folder / "curves.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
