"""The EAD sampler of runner V2 (``vllm/v1/worker/gpu/sample/sampler.py``'s ``Sampler``, extended).

Built by the runner in place of vLLM's ``Sampler`` (same constructor). Two
routes, chosen per step on the host without a device sync:

* unfused (any batch): :class:`EADLogitsProcessorV2` sits last in the
  sampler's processor chain, so vLLM's own pipeline runs with EAD rows'
  logits divided by ``tau_t`` before its temperature, min_p, top-k/top-p,
  Gumbel sampling (keyed by the row's seed and position) and processed
  log-probs. Non-EAD rows pass through untouched.
* fused (every row of the batch is an EAD request without top-k/top-p/min_p,
  no trace replay or sampling-mask output): vLLM's processors other than
  ours (bias, penalties, bad words, custom) and the thinking budget, then
  ``ead_vllm.kernels.ead_sample`` with ``t = pos + 1 - prompt_len`` and the
  slot's vLLM seed. vLLM's ``__call__`` then computes log-probs and counts.

In processed-log-prob modes the fused route also returns
``logits / (T * tau_t)`` (one extra pass, only when log-probs are requested),
so vLLM's log-prob code reports annealed values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from vllm.config.model import PROCESSED_LOGPROBS_MODES
from vllm.sampling_params import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsContext,
    LogitsProcRequestState,
)
from vllm.v1.worker.gpu.sample.sampler import Sampler

import ead_vllm.kernels as ead_kernels
from ead_vllm.vllm_ext.logits_processors import EADLogitsProcessorV2


class EADSamplerV2(Sampler):
    """Runner V2's ``Sampler`` with EAD rows sampled at ``T * tau_t``."""

    def __init__(self, *args: Any, backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        vllm_config = kwargs["vllm_config"] if "vllm_config" in kwargs else args[0]
        req_states = kwargs["req_states"] if "req_states" in kwargs else args[4]
        self.ead = EADLogitsProcessorV2(
            vllm_config, LogitsProcRequestState.from_request_state(req_states)
        )
        # last in the chain: after bias/penalties/bad words/custom, before temperature
        self.logits_processors.append(self.ead)
        max_num_reqs = self.sampling_states.max_num_reqs
        self.stock_processing = np.zeros(max_num_reqs, dtype=bool)
        self.backend = backend

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> None:
        chain = self.logits_processors
        self.logits_processors = [proc for proc in chain if proc is not self.ead]
        try:
            super().add_request(req_idx, sampling_params)
        finally:
            self.logits_processors = chain
        # whether vLLM's own stages may change this row (a temperature other than
        # 1 also sets it: the fused route then pays one copy it could skip)
        self.stock_processing[req_idx] = self.needs_logits_processing[req_idx]
        if self.ead.add_request(req_idx, sampling_params):
            self.needs_logits_processing[req_idx] = True

    def _fusable(self, idx_mapping_np: np.ndarray, return_logprobs: bool) -> bool:
        if not self.ead.all_ead(idx_mapping_np):
            return False
        if self.trace_replay_state is not None or self.return_sampling_mask:
            return False
        if return_logprobs and self.logprobs_mode in ("raw_logits", "processed_logits"):
            return False
        states = self.sampling_states
        return bool(
            np.all(states.top_k.np[idx_mapping_np] == states.vocab_size)
            and np.all(states.top_p.np[idx_mapping_np] == 1.0)
            and np.all(states.min_p.np[idx_mapping_np] == 0.0)
        )

    def sample(
        self,
        logits: torch.Tensor,
        expanded_idx_mapping: torch.Tensor,
        idx_mapping: torch.Tensor,
        idx_mapping_np: np.ndarray,
        pos: torch.Tensor,
        input_ids: torch.Tensor,
        expanded_local_pos: torch.Tensor,
        seq_lens_upper_bound_np: np.ndarray,
        return_logprobs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._fusable(idx_mapping_np, return_logprobs):
            return super().sample(
                logits,
                expanded_idx_mapping,
                idx_mapping,
                idx_mapping_np,
                pos,
                input_ids,
                expanded_local_pos,
                seq_lens_upper_bound_np,
                return_logprobs=return_logprobs,
            )
        ctx = LogitsContext(
            expanded_idx_mapping=expanded_idx_mapping,
            idx_mapping=idx_mapping,
            idx_mapping_np=idx_mapping_np,
            expanded_local_pos=expanded_local_pos,
            input_ids=input_ids,
            pos=pos,
            seq_lens_upper_bound_np=seq_lens_upper_bound_np,
        )
        if np.any(self.stock_processing[idx_mapping_np]):
            # vLLM's own stages, on a float32 copy (the raw logits feed raw log-probs)
            logits = torch.empty_like(logits, dtype=torch.float32).copy_(logits)
            for proc in self.logits_processors:
                if proc is not self.ead:
                    logits = proc.apply(logits, ctx)
            self.thinking_budget_state.apply(logits, ctx)
        rows = expanded_idx_mapping
        out = ead_kernels.ead_sample(
            logits,
            positions=self.ead.positions(pos, rows),
            seeds=self.sampling_states.seeds.gpu[rows],
            base_temperature=self.sampling_states.temperature.gpu[rows],
            backend=self.backend,
            validate=False,
            **self.ead.schedule(rows),
        )
        processed = logits
        if return_logprobs and self.logprobs_mode in PROCESSED_LOGPROBS_MODES:
            processed = logits.to(torch.float32) / out.temperatures[:, None]
        return out.token_ids, processed
