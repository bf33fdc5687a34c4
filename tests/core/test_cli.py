"""The ``ead-vllm`` console script answers --help and --version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import ead_vllm


def _script() -> str:
    return shutil.which("ead-vllm", path=str(Path(sys.executable).parent)) or "ead-vllm"


def test_version() -> None:
    out = subprocess.run([_script(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"ead-vllm {ead_vllm.__version__}"


def test_help_lists_usage() -> None:
    out = subprocess.run([_script(), "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: ead-vllm")


def test_unknown_subcommand_fails() -> None:
    out = subprocess.run([_script(), "no-such-command"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr
