"""The no-fork mode on runner V1: :class:`EADLogitsProcessor` (see :mod:`.logits_processors`).

Runner V1 exists up to vLLM 0.33.0 only (:data:`~.seams.versions.RUNNER_V1`);
this module imports its logits-processor interface, so nothing imports it on
vLLM 0.34.0 and later (``logits_processors.EADLogitsProcessor`` refuses there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from ead_vllm.vllm_ext.request_state import EADRowTable
from ead_vllm.vllm_ext.validation import parse_ead_params

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.sampling_params import SamplingParams


class EADLogitsProcessor(LogitsProcessor):
    """Runner-V1 logits processor: EAD rows' logits divided by ``tau_t``.

    Argmax-invariant, so vLLM applies it after the temperature division and
    before top-k/top-p. Position ``t`` is tracked exactly as by the sampler
    override (``len`` of the row's live output list, see
    :mod:`ead_vllm.vllm_ext.request_state`).
    """

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        model_config = vllm_config.model_config
        self.table = EADRowTable(model_config.get_vocab_size(), model_config.seed)
        self.device = device

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        parse_ead_params(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        self.table.update(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        view = self.table.view()
        if view is None:
            return logits
        scale = torch.ones(logits.shape[0], dtype=torch.float32, device=logits.device)
        scale[torch.from_numpy(view.index).to(logits.device)] = view.taus(logits.device)
        # one in-place pass over the batch; non-EAD rows are divided by 1
        logits.div_(scale[:, None])
        return logits
