"""Installing the EAD sampler into a runner-V2 model runner."""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

from ead_vllm.vllm_ext.config import check_ead_config, ead_sampler_enabled

V2_RUNNER_MODULE = "vllm.v1.worker.gpu.model_runner"


def patch_v2_runner(module: ModuleType) -> None:
    """Wrap runner V2's ``load_model`` so that it builds :class:`EADSamplerV2` when enabled.

    Runner V2 builds its sampler inside ``load_model`` from the name
    ``Sampler`` of its module; while an EAD-enabled runner loads, that name
    points at the EAD subclass. A runner that ends up with another sampler
    (watermarking, a model-specific sampler) is refused at start-up.
    """
    cls = module.GPUModelRunner
    original = cls.load_model
    if getattr(original, "_ead_patched", False):
        return

    @functools.wraps(original)
    def load_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not ead_sampler_enabled(self.vllm_config):
            return original(self, *args, **kwargs)
        check_ead_config(self.vllm_config, runner="v2")
        from ead_vllm.vllm_ext.v2_sampler import EADSamplerV2

        stock = module.Sampler
        module.Sampler = EADSamplerV2
        try:
            result = original(self, *args, **kwargs)
        finally:
            module.Sampler = stock
        if self.sampler is not None and not isinstance(self.sampler, EADSamplerV2):
            raise ValueError(
                f"the EAD sampler cannot replace {type(self.sampler).__name__} "
                "(watermarking or a model-specific sampler is configured)"
            )
        if self.sampler is not None:
            # compile the kernel variants now, not on the first EAD request (the
            # EAD route hands the kernel a float32 copy of the logits)
            import torch

            import ead_vllm.kernels as ead_kernels

            ead_kernels.prepare(self.device, torch.float32, self.vocab_size)
        return result

    load_model._ead_patched = True  # type: ignore[attr-defined]
    cls.load_model = load_model
