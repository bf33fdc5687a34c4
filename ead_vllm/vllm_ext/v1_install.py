"""Installing the EAD sampler into a runner-V1 model runner."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ead_vllm.vllm_ext.config import check_ead_config, ead_sampler_enabled
from ead_vllm.vllm_ext.errors import log_installed
from ead_vllm.vllm_ext.seams import v1_sampler as v1_seam
from ead_vllm.vllm_ext.seams.patching import wrap_once

V1_RUNNER_MODULE = v1_seam.RUNNER_MODULE


def install_v1_sampler(runner: Any) -> None:
    """Swap ``runner.sampler`` for :class:`EADSamplerV1` and add its batch tracker.

    ``runner`` is a constructed runner-V1 ``GPUModelRunner`` (or subclass, such
    as the CPU runner). Raises ``ValueError`` for configurations the EAD
    sampler refuses (see :func:`check_ead_config`).
    """
    from ead_vllm.vllm_ext.seams.v1_sampler import internals
    from ead_vllm.vllm_ext.v1_batch_state import EADBatchState
    from ead_vllm.vllm_ext.v1_sampler import EADSamplerV1

    check_ead_config(runner.vllm_config, runner="v1")
    if runner.is_pooling_model:
        return
    state = EADBatchState(runner.vllm_config, runner.device, internals().PIN_MEMORY)
    # the processor set is carried over when the runner re-creates its input batch
    runner.input_batch.logitsprocs.argmax_invariant.append(state)
    stock = runner.sampler
    runner.sampler = EADSamplerV1(
        state, logprobs_mode=stock.logprobs_mode, use_fp64_gumbel=stock.use_fp64_gumbel
    )
    # compile the kernel at start-up, not on the first EAD request (runner V1
    # hands the sampler float32 logits whatever the model's dtype)
    import torch

    import ead_vllm.kernels as ead_kernels

    ead_kernels.prepare(runner.device, torch.float32, runner.input_batch.vocab_size)
    log_installed("v1", runner.sampler)


def patch_v1_runner(module: ModuleType) -> None:
    """Wrap ``GPUModelRunner.__init__`` of runner V1 to install the EAD sampler when enabled."""

    def wrap(original: Any) -> Any:
        def __init__(self: Any, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
            original(self, vllm_config, *args, **kwargs)
            if ead_sampler_enabled(vllm_config):
                install_v1_sampler(self)

        return __init__

    wrap_once(v1_seam.runner_class(module), "__init__", wrap)
