"""`ead-vllm eval` end to end on the toy model: table, JSON and PNG (small run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_eval_writes_table_json_and_png(tmp_path: Path) -> None:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cmd = [
        str(Path(sys.executable).parent / "ead-vllm"),
        "eval",
        "--problems", "12",
        "--samples", "4",
        "--max-tokens", "8",
        "--temperatures", "0.6", "1.0",
        "--ead", '{"tau_max": 1.2, "tau_min": 0.1, "decay": 13.5}',
        "--out", str(tmp_path),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    header = next(line for line in res.stdout.splitlines() if line.startswith("strategy"))
    assert "pass@4" in header and "worst@4" in header and "pass@8" not in header

    doc = json.loads((tmp_path / "eval.json").read_text())
    assert [r["name"] for r in doc["results"]] == ["T=0.6", "T=1", "EAD 1.2->0.1 d=13.5"]
    for r in doc["results"]:
        assert len(r["correct"]) == 12 and all(0 <= c <= 4 for c in r["correct"])
        passes, worsts = r["pass_at_k"], r["worst_at_k"]
        assert len(passes) == len(worsts) == 4
        assert passes[0] == pytest.approx(sum(r["correct"]) / 48)
        assert all(a <= b + 1e-12 for a, b in zip(passes, passes[1:], strict=False))
        assert all(a >= b - 1e-12 for a, b in zip(worsts, worsts[1:], strict=False))
    assert doc["results"][2]["ead"] == {
        "tau_max": 1.2,
        "tau_min": 0.1,
        "decay": 13.5,
        "warmup": 0,
        "offset": 0,
    }
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_countdown_intervals_and_distinct_answers(tmp_path: Path) -> None:
    # --task picks the task's model, answer length and EAD settings (ead_vllm.countdown)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cmd = [
        str(Path(sys.executable).parent / "ead-vllm"),
        "eval",
        "--task", "ead_vllm.countdown",
        "--problems", "10",
        "--samples", "8",
        "--temperatures", "1.0",
        "--out", str(tmp_path),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    header = next(line for line in res.stdout.splitlines() if line.startswith("strategy"))
    assert "pass@4" in header and "distinct" in header and "pass@16" not in header

    from ead_vllm.countdown import EVAL_EAD

    doc = json.loads((tmp_path / "eval.json").read_text())
    assert doc["model"].endswith("countdown/model")
    assert len(doc["results"]) == 1 + len(EVAL_EAD)
    assert sum(sum(r["correct"]) for r in doc["results"]) > 0  # the model solves some
    for r in doc["results"]:
        for metric in ("pass", "worst"):
            values, bands = r[f"{metric}_at_k"], r[f"{metric}_at_k_ci95"]
            assert len(bands) == 8
            assert all(
                lo - 1e-9 <= v <= hi + 1e-9 for v, (lo, hi) in zip(values, bands, strict=True)
            )
        assert all(0 <= d <= c for d, c in zip(r["distinct_correct"], r["correct"], strict=True))
        assert all(
            (d == 0) == (c == 0) for d, c in zip(r["distinct_correct"], r["correct"], strict=True)
        )
        assert r["mean_distinct_correct"] == pytest.approx(sum(r["distinct_correct"]) / 10)


def test_eval_rejects_bad_ead_settings() -> None:
    from ead_vllm.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "--ead", '{"tau_min": -1}'])
    assert exc.value.code == 2
