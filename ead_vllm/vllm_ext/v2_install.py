"""Installing the EAD sampler into a runner-V2 model runner; refusing runners it cannot serve."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ead_vllm.vllm_ext.config import check_ead_config, ead_sampler_enabled
from ead_vllm.vllm_ext.errors import EADConfigError, log_installed
from ead_vllm.vllm_ext.seams import v2_runner
from ead_vllm.vllm_ext.seams.patching import wrap_once

V2_RUNNER_MODULE = v2_runner.RUNNER_MODULE
STANDALONE_CPU_RUNNER_MODULE = v2_runner.STANDALONE_CPU_RUNNER_MODULE


def patch_v2_runner(module: ModuleType) -> None:
    """Wrap runner V2's ``load_model`` so that it builds :class:`EADSamplerV2` when enabled.

    Runner V2 builds its sampler inside ``load_model`` from the name ``Sampler`` of
    its module (:mod:`.seams.v2_runner`); while an EAD-enabled runner loads, that
    name points at the EAD subclass. A runner that ends up with another sampler
    (watermarking, a model-specific sampler) is refused at start-up.
    """

    def wrap(original: Any) -> Any:
        def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not ead_sampler_enabled(self.vllm_config):
                return original(self, *args, **kwargs)
            check_ead_config(self.vllm_config, runner="v2")
            _check_runner_seams()
            from ead_vllm.vllm_ext.v2_sampler import EADSamplerV2

            with v2_runner.sampler_class_replaced(module, EADSamplerV2):
                result = original(self, *args, **kwargs)
            if self.sampler is not None and not isinstance(self.sampler, EADSamplerV2):
                raise EADConfigError(
                    f"the EAD sampler cannot replace {type(self.sampler).__name__} "
                    "(watermarking or a model-specific sampler is configured)"
                )
            if self.sampler is not None:
                from ead_vllm.vllm_ext.config import engine_ead_defaults

                self.sampler.ead.defaults = engine_ead_defaults(self.vllm_config)
                # compile the kernel variants now, not on the first EAD request (the
                # EAD route hands the kernel a float32 copy of the logits)
                import torch

                import ead_vllm.kernels as ead_kernels

                ead_kernels.prepare(self.device, torch.float32, self.vocab_size)
                log_installed("v2", self.sampler)
            return result

        return load_model

    wrap_once(v2_runner.runner_class(module), "load_model", wrap)


def _check_runner_seams() -> None:
    # what the install itself relies on; checked here, where the runner module is loaded
    from ead_vllm.vllm_ext.seams.gate import require_seams
    from ead_vllm.vllm_ext.seams.versions import installed_release, installed_vllm_version

    require_seams("v2", installed_vllm_version(), v2_runner.expected(installed_release()))


def patch_standalone_cpu_runner(module: ModuleType) -> None:
    """Refuse ``sampler="ead"`` on vLLM's standalone CPU runner (vLLM 0.34.0 and later).

    On CPUs without Triton other than x86 (Arm, POWER, ...) vLLM 0.34.0 runs
    ``StandaloneCPUModelRunner`` with its own ``CPUSampler``, which the override does
    not replace: without this refusal EAD requests would be sampled stock, silently.
    """

    def wrap(original: Any) -> Any:
        def __init__(self: Any, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
            if ead_sampler_enabled(vllm_config):
                raise EADConfigError(
                    "sampler='ead' does not run on vLLM's standalone CPU model runner "
                    "(non-x86 CPUs without Triton, vLLM 0.34.0 and later): its CPUSampler "
                    "would sample EAD requests without the schedule",
                    way_out="serve on a GPU, or on an x86 CPU, or start without "
                    "--sampler ead (stock sampling)",
                )
            original(self, vllm_config, *args, **kwargs)

        return __init__

    wrap_once(v2_runner.standalone_runner_class(module), "__init__", wrap)
