"""The launcher on a machine without CUDA and flash-attn, as a user runs it (fresh interpreters).

No stub here: each test runs ``python -m openrlhf_bridge.train_ppo_ray`` in a
subprocess of this CPU environment, where flash-attn is not installed (the
in-process tests stub it; these must not). ``--help`` and the flag checks
must work; a real launch must stop with one message naming what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openrlhf_bridge.testing import GRPO_ARGS

ROOT = Path(__file__).resolve().parents[2]
GRPO = list(GRPO_ARGS)


def launcher(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "openrlhf_bridge.train_ppo_ray", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module", autouse=True)
def no_flash_attn():
    # What these tests are about; a CUDA machine with flash-attn has nothing to show here.
    if "flash_attn" in sys.modules or importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_help_works_without_flash_attn():
    done = launcher("--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "--ead.correction" in done.stdout and "--e3.dynamic_budget" in done.stdout
    assert "--rollout.n_samples_per_prompt" in done.stdout  # OpenRLHF's own flags
    assert "1/tau_t" in done.stdout  # the positional correction's gradient scale


def test_bad_flag_and_real_launch_without_flash_attn():
    done = launcher(*GRPO, "--ead.enable", "--ead.d0", "100", "--ead.tau_min", "5")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert errors(done.stderr) == [
        "python -m openrlhf_bridge.train_ppo_ray: error: "
        "--ead.tau_min (5.0) must be <= --ead.tau_max (1.2)"
    ]

    # A good command line: OpenRLHF's and the bridge's checks pass, then the launch stops.
    done = launcher(*GRPO, "--ead.enable", "--ead.preset", "reference")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    (line,) = errors(done.stderr)
    assert line.startswith("python -m openrlhf_bridge.train_ppo_ray: error: cannot start training")
    assert "flash-attn (module flash_attn) is not installed" in line
    assert "imports it at module level" in line and "no CUDA device" in line
    assert "passed OpenRLHF's and the bridge's checks" in line

    # OpenRLHF's own post-parse checks ran (an assertion in its main block), on one line.
    done = launcher(*GRPO, "--ead.enable", "--ead.preset", "reference",
                    "--rollout.vllm_generate_batch_size", "4096")  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = errors(done.stderr)
    assert "OpenRLHF's argument checks refused the command line" in line
    assert "--rollout.vllm_generate_batch_size > --rollout.batch_size requires" in line
