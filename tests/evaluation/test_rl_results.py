"""The committed training evidence reproduces the tables in docs/experiments.md and the README.

Reads the run files under ``experiments/results/`` (no engine, no training): the
sweep that chose the regime and the arms' runs in it. Recomputes every table with
:mod:`experiments.rl_report` and checks the committed ``report.json`` /
``sweep.json`` and the Markdown rows the docs quote against it, so an edited
number, a rerun whose results were not propagated, or a run of other settings
fails here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from experiments.rl_report import load_runs, markdown, report, sweep, sweep_markdown
from experiments.rl_sweep import BASE, SWEEP
from experiments.toy_grpo import ARM_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "experiments" / "results" / "toy_grpo"
SWEEP_DIR = ROOT / "experiments" / "results" / "rl_sweep"
DOCS = [ROOT / "docs" / "experiments.md", ROOT / "README.md"]


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]


def test_the_sweep_files_reproduce_the_sweep_table() -> None:
    rows = sweep(SWEEP_DIR)
    assert set(rows) == set(SWEEP)  # every setting ran
    for name, row in rows.items():
        expected = replace(Settings(), **{**BASE, **SWEEP[name]})
        assert row["settings"] == {k: getattr(expected, k) for k in row["settings"]}, name
    assert json.loads((SWEEP_DIR / "sweep.json").read_text()) == json.loads(json.dumps(rows))
    docs = DOCS[0].read_text()
    for line in _table_rows(sweep_markdown(rows)):
        assert line in docs, line


def test_the_chosen_setting_is_the_sweeps_best_and_grpo_learns_in_it() -> None:
    rows = sweep(SWEEP_DIR)
    best = max(rows, key=lambda name: rows[name]["pass@1_change"]["mean"])
    chosen = Settings()
    assert {k: getattr(chosen, k) for k in rows[best]["settings"]} == rows[best]["settings"]
    assert rows[best]["pass@1_change"]["over_units"][0] > 0


def test_the_runs_reproduce_the_arm_tables() -> None:
    runs = load_runs(RUNS)
    assert set(runs) == set(ARM_NAMES)
    seeds = {arm: sorted(by_seed) for arm, by_seed in runs.items()}
    assert all(s == seeds["grpo"] and len(s) >= 3 for s in seeds.values()), seeds
    settings = asdict(Settings())
    for by_seed in runs.values():
        for doc in by_seed.values():
            assert doc["settings"] == settings  # the documented regime, not another
            assert [e["step"] for e in doc["evals"]] == [0, 20, 40, 60]
    rep = report(runs)
    assert json.loads((RUNS / "report.json").read_text()) == json.loads(json.dumps(rep))
    table = _table_rows(markdown(rep))
    for doc in DOCS:
        text = doc.read_text()
        missing = [line for line in table if line not in text]
        assert not missing, (doc.name, missing)


def test_grpo_improves_in_the_chosen_regime() -> None:
    rep = json.loads((RUNS / "report.json").read_text())
    change = rep["grpo_improvement"]["pass@1"]
    assert change["over_units"][0] > 0 and change["over_seeds"][0] > 0
    quoted = f"{change['mean']:+.3f}"
    assert all(quoted in doc.read_text() for doc in DOCS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_leftover_claim_of_the_old_harness(doc: Path) -> None:
    text = doc.read_text()
    assert "fixed 128-problem pool" not in text and "0.57-0.58 against 0.67" not in text
