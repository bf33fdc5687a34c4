"""benchmarks/gpu_check.py's CPU-checkable parts: arguments, the cost-model lookup, helpers.

The GPU checks themselves need a CUDA device (none here); ``--dry-run``
exercises everything up to the first CUDA call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
import kernel_sass  # noqa: E402


def test_dry_run_writes_the_cost_model_table(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["dry_run"] is True
    rows = res["timings"]
    assert len(rows) == 2 * len(gpu_check.VOCABS) * len(gpu_check.BATCHES) * 2
    for r in rows:
        # Never below one read of the logits; the extra outputs never make it cheaper.
        assert r["estimate_base0_ent0_us"] >= r["hbm_floor_model_us"]
        assert r["estimate_base1_ent1_us"] >= r["estimate_base0_ent0_us"] - 1e-9
    assert "est" in capsys.readouterr().out


def test_estimate_matches_the_report_at_its_own_shape():
    report = json.loads(gpu_check.DEFAULT_REPORT.read_text())
    for e in report["estimates"]:
        got = gpu_check.estimate_us(report, e["dtype"], e["flags"], e["logits"], 256, 151936)
        assert got == pytest.approx(e["estimated_us"], rel=1e-9)
    small = gpu_check.estimate_us(report, "bf16", "base0_ent0", "peaked", 32, 151936)
    big = gpu_check.estimate_us(report, "bf16", "base0_ent0", "peaked", 4096, 151936)
    assert small < big
    # fp16 uses bf16's counts (same bytes per logit).
    assert gpu_check.estimate_us(report, "fp16", "base0_ent0", "normal", 256, 32000) == (
        gpu_check.estimate_us(report, "bf16", "base0_ent0", "normal", 256, 32000)
    )


def test_bad_arguments_and_no_device(tmp_path):
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run"])  # --out is required
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--out", str(tmp_path), "--iters", "0"])
    if not torch.cuda.is_available():
        assert gpu_check.main(["--out", str(tmp_path), "--quick"]) == 2


def test_helpers_on_cpu():
    from scipy import stats

    counts = torch.tensor([30.0, 50.0, 20.0], dtype=torch.float64)
    probs = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    want = stats.chisquare(counts.numpy(), (probs * 100).numpy()).pvalue
    assert gpu_check.chi_square_pvalue(counts, probs) == pytest.approx(want, rel=1e-9)

    logits = torch.randn(4, 50)
    temps = torch.tensor([0.5, 1.0, 1.5, 2.0])
    tok, lp = gpu_check.vllm_like_chain(logits, temps, torch.Generator().manual_seed(0))
    want_lp = torch.log_softmax(logits / temps[:, None], -1).gather(1, tok[:, None])
    assert torch.allclose(lp, want_lp)
    k = gpu_check.load_kernels()
    assert hasattr(k, "ead_tau") and hasattr(k, "prepare")
    x = gpu_check.make_logits("peaked", 3, 1000, torch.bfloat16, "cpu", seed=0)
    assert x.dtype == torch.bfloat16 and x.shape == (3, 1000)


def test_hbm_floor_is_one_read():
    assert kernel_sass.hbm_floor_us(256, 151936, "fp32") == pytest.approx(32.4, abs=0.1)
    assert kernel_sass.hbm_floor_us(256, 151936, "bf16") == pytest.approx(16.2, abs=0.1)
