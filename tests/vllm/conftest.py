"""Fixtures shared by the vLLM integration's tests (marker ``vllm``: ``make test-matrix``
runs them on every release; the root conftest leaves the folder out without vLLM, and
holds ``model_dir``, which the bridge and trainer tests share)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_engine_support import Oracle


@pytest.fixture(scope="module")
def oracle(model_dir: Path) -> Oracle:
    """A transformers forward of :func:`model_dir`'s model, for log-prob checks."""
    return Oracle(model_dir)
