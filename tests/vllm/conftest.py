"""Fixtures shared by the vLLM integration's tests (marker ``vllm``: ``make test-matrix``
runs them on every release; the root conftest leaves the folder out without vLLM)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_engine_support import Oracle, engine_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model every live engine here serves (the embedded toy model)."""
    return engine_model_dir(tmp_path_factory.mktemp("vllm-model"))


@pytest.fixture(scope="module")
def oracle(model_dir: Path) -> Oracle:
    """A transformers forward of :func:`model_dir`'s model, for log-prob checks."""
    return Oracle(model_dir)
