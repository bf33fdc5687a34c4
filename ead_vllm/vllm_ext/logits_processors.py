"""The no-fork mode: EAD as logits processors, with vLLM's own sampler.

Register with ``--logits-processors`` (or ``LLM(logits_processors=[...])``):

* runner V1: ``ead_vllm.vllm_ext.logits_processors:EADLogitsProcessor``
* runner V2: ``ead_vllm.vllm_ext.logits_processors:EADLogitsProcessorV2``

Both divide each EAD row's logits by ``tau_t`` before vLLM samples, so the row
is drawn from ``softmax(logits / (T * tau_t))`` (V1 applies the processor after
the temperature division, V2 before it; the product is the same), and
``processed_logprobs`` are the annealed log-probs. Requests are selected and
validated exactly as in the sampler override (flat ``ead_*`` keys of
``extra_args``; errors name the key). Differences from the override: vLLM's own
noise (so seeded rows follow vLLM's batch-invariance rules, not the kernel's
counter-based noise), an extra pass over the logits, and on runner V1 min_p is
applied before ``tau_t`` (vLLM runs its built-in min_p first), on V2 after.

``EADLogitsProcessor`` lives in :mod:`.v1_logits_processor` and is imported only
when asked for, and only where vLLM still has runner V1 (0.24.0-0.33.0): vLLM
0.34.0 deleted runner V1's logits-processor package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ead_vllm.vllm_ext.ead_route import RowSchedule
from ead_vllm.vllm_ext.request_state import SAMPLING_EPS

# runner V2's interface: vLLM's from 0.31 on, a stand-in on 0.24-0.30 (see the seam)
from ead_vllm.vllm_ext.seams.v2_logits_processor import (
    LogitsContext,
    LogitsProcessorV2,
    LogitsProcRequestState,
    uva_backed_tensor,
)
from ead_vllm.vllm_ext.validation import parse_ead_params

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.sampling_params import SamplingParams

    from ead_vllm.params import EADParams


class EADLogitsProcessorV2(LogitsProcessorV2):
    """Runner-V2 logits processor: EAD rows' logits divided by ``tau_t``.

    Per request slot it keeps the schedule on the device; per step it computes
    ``t = pos + 1 - prompt_len`` for every logits row from vLLM's device
    positions (exact through preemption, chunked prefill and draft-token rows,
    with no host round trip). Also the annealing stage of the V2 sampler
    override.
    """

    def __init__(self, vllm_config: VllmConfig, req_states: LogitsProcRequestState):
        UvaBackedTensor = uva_backed_tensor()
        n = req_states.max_num_reqs
        self.prompt_len = req_states.prompt_len
        self.is_ead = UvaBackedTensor(n, dtype=torch.bool)
        self.tau_max = UvaBackedTensor(n, dtype=torch.float32)
        self.tau_min = UvaBackedTensor(n, dtype=torch.float32)
        self.decay = UvaBackedTensor(n, dtype=torch.float32)
        self.warmup = UvaBackedTensor(n, dtype=torch.int64)
        self.offset = UvaBackedTensor(n, dtype=torch.int64)
        #: the engine's EAD defaults; set by the sampler override (None in the
        #: logits-processor mode, where defaults are refused at start-up)
        self.defaults: EADParams | None = None
        self._dirty = False

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        parse_ead_params(sampling_params)

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        params = None
        if float(sampling_params.temperature) >= SAMPLING_EPS:
            params = parse_ead_params(sampling_params, self.defaults)
        self.is_ead.np[req_idx] = params is not None
        if params is not None:
            self.tau_max.np[req_idx] = params.tau_max
            self.tau_min.np[req_idx] = params.tau_min
            self.decay.np[req_idx] = params.decay
            self.warmup.np[req_idx] = params.warmup
            self.offset.np[req_idx] = params.offset
        self._dirty = True
        return params is not None

    def apply_staged_writes(self) -> None:
        if self._dirty:
            bufs = (self.is_ead, self.tau_max, self.tau_min, self.decay, self.warmup, self.offset)
            for buf in bufs:
                buf.copy_to_uva()
            self._dirty = False

    def any_ead(self, idx_mapping_np: np.ndarray) -> bool:
        """True if any request of the batch is an EAD request (host side, no sync)."""
        return bool(np.any(self.is_ead.np[idx_mapping_np]))

    def positions(self, pos: torch.Tensor, expanded_idx_mapping: torch.Tensor) -> torch.Tensor:
        """``t`` of every logits row (int64): generated tokens before the one sampled.

        Rows of a partial prefill (whose sample vLLM discards) are clamped to 0. The
        request's ``ead_offset`` is added.
        """
        prompt_len = self.prompt_len.gpu[expanded_idx_mapping].to(torch.int64)
        generated = torch.clamp_min(pos.to(torch.int64) + 1 - prompt_len, 0)
        return generated + self.offset.gpu[expanded_idx_mapping]

    def row_schedule(self, pos: torch.Tensor, expanded_idx_mapping: torch.Tensor) -> RowSchedule:
        """The logits rows' positions ``t`` and schedules ([N] device tensors each)."""
        rows = expanded_idx_mapping
        return RowSchedule(
            positions=self.positions(pos, rows),
            tau_max=self.tau_max.gpu[rows],
            tau_min=self.tau_min.gpu[rows],
            decay=self.decay.gpu[rows],
            warmup=self.warmup.gpu[rows],
        )

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        if not self.any_ead(ctx.idx_mapping_np):
            return logits
        rows = ctx.expanded_idx_mapping
        tau = self.row_schedule(ctx.pos, rows).taus()
        tau = torch.where(self.is_ead.gpu[rows], tau, torch.ones_like(tau))
        logits.div_(tau.to(logits.dtype)[:, None])
        return logits


def __getattr__(name: str) -> Any:
    # runner V1's processor, imported on first use: its vLLM interface is gone in 0.34.0
    if name != "EADLogitsProcessor":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ead_vllm.vllm_ext.seams.versions import RUNNER_V1, installed_vllm_version

    found = installed_vllm_version()
    if not RUNNER_V1.holds(found):
        from ead_vllm.vllm_ext.errors import EADStartupError

        raise EADStartupError(
            f"EADLogitsProcessor is runner V1's processor, and vLLM {found} has no runner "
            "V1 (removed in vLLM 0.34.0).",
            way_out="register ead_vllm.vllm_ext.logits_processors:EADLogitsProcessorV2 instead",
        )
    from ead_vllm.vllm_ext.v1_logits_processor import EADLogitsProcessor

    return EADLogitsProcessor
