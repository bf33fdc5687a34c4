"""Runner V1 hook that feeds :class:`EADRowTable` from vLLM's batch updates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from ead_vllm.vllm_ext.config import engine_ead_defaults
from ead_vllm.vllm_ext.request_state import EADBatchView, EADRowTable

if TYPE_CHECKING:
    from vllm.config import VllmConfig


class EADBatchState(LogitsProcessor):
    """A do-nothing V1 logits processor that tracks the batch's EAD rows.

    Installed by the EAD sampler override into the runner's
    ``InputBatch.logitsprocs`` (which survives the runner's input-batch
    re-creation), so ``update_state`` sees every ``BatchUpdate`` before each
    step. Its presence in ``SamplingMetadata.logitsprocs`` also tells the
    sampler that the metadata describes the live batch (vLLM's dummy sampler
    runs build their own, empty processor set).
    """

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        model_config = vllm_config.model_config
        # the sampler override's tracker: the engine's EAD defaults apply
        self.table = EADRowTable(
            model_config.get_vocab_size(), model_config.seed, engine_ead_defaults(vllm_config)
        )

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        self.table.update(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    @property
    def batch_size(self) -> int:
        """Rows in the persistent batch after the last update."""
        return self.table.batch_size

    def view(self) -> EADBatchView | None:
        """The batch's EAD rows with their current positions (``None`` if none)."""
        return self.table.view()
