"""The EAD sampler of runner V1 (``vllm/v1/sample/sampler.py``'s ``Sampler``, extended).

Per step, with the EAD rows of the batch known from :class:`EADBatchState`:

* no EAD row (or a metadata object that is not the live batch's, as in
  vLLM's dummy sampler runs): the stock ``Sampler.forward``, untouched;
* the fused route (the common case): vLLM's own pre-sampling steps on the
  whole batch (allowed tokens, bad words, min-tokens, logit bias, penalties,
  thinking budget), then ``ead_vllm.kernels.ead_sample`` on the EAD rows
  without top-k/top-p, and vLLM's stock ``Sampler.sample`` on the other rows
  (non-EAD rows, and EAD rows with top-k/top-p, whose temperature is
  multiplied by ``tau_t``);
* the unfused route (min_p or another custom argmax-invariant processor in
  the batch, logprob_token_ids, or a ``*_logits`` logprobs mode): the stock
  ``Sampler.forward`` on the whole batch with each EAD row's temperature
  replaced by ``temperature * tau_t``. Exact for every sampling option,
  only slower.

Log-probs of EAD rows: ``processed_logprobs`` gives the sampled token's
log-prob under the annealed distribution ``softmax(logits / (T * tau_t))``
(after penalties/bias/masks, as vLLM's processed values are), which is what
an RL trainer needs for importance sampling; ``raw_logprobs`` gives vLLM's raw
value (the model's own distribution), unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from vllm.config.model import LogprobsMode
from vllm.v1.outputs import LogprobsTensors, SamplerOutput
from vllm.v1.sample.logits_processor import LogitsProcessors, MinPLogitsProcessor
from vllm.v1.sample.metadata import SamplingMetadata
from vllm.v1.sample.ops.logprobs import batched_count_greater_than
from vllm.v1.sample.sampler import Sampler

import ead_vllm.kernels as ead_kernels
from ead_vllm.vllm_ext.request_state import SAMPLING_EPS, EADBatchView
from ead_vllm.vllm_ext.v1_batch_state import EADBatchState

_FUSED_LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs")
# vLLM's V1 runner rewinds a seeded row's CUDA generator by this much when it
# discards the row's sample (partial prefill); fused rows never draw from their
# generator, so they advance it by the same amount to keep the offset valid.
_DISCARD_REWIND = 4


def _owns_batch(logitsprocs: LogitsProcessors, state: EADBatchState) -> bool:
    return any(proc is state for proc in logitsprocs.argmax_invariant)


def with_ead_temperature(
    metadata: SamplingMetadata, view: EADBatchView, taus: np.ndarray
) -> SamplingMetadata:
    """A copy of ``metadata`` whose EAD rows have temperature ``T * tau_t``."""
    assert metadata.temperature is not None
    temperature = metadata.temperature.clone()
    index = torch.from_numpy(view.index).to(temperature.device)
    scale = torch.from_numpy(taus).to(temperature.device, temperature.dtype)
    temperature[index] = temperature[index] * scale
    return dataclasses.replace(metadata, temperature=temperature)


def subset_metadata(
    metadata: SamplingMetadata, rows: np.ndarray, temperature: torch.Tensor
) -> SamplingMetadata:
    """Metadata for stock ``Sampler.sample`` on the logits rows ``rows`` only.

    Only valid after ``apply_logits_processors`` ran on the whole batch and
    when no argmax-invariant processor is active (so nothing in ``sample``
    needs the whole batch's shape).
    """
    index = torch.from_numpy(rows).to(temperature.device)
    position = np.full(int(rows.max()) + 1, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    generators = {
        int(position[i]): gen
        for i, gen in metadata.generators.items()
        if i < len(position) and position[i] >= 0
    }
    num_greedy = int((temperature < SAMPLING_EPS).sum())
    return SamplingMetadata(
        temperature=temperature,
        all_greedy=num_greedy == len(rows),
        all_random=num_greedy == 0,
        top_p=None if metadata.top_p is None else metadata.top_p.index_select(0, index),
        top_k=None if metadata.top_k is None else metadata.top_k.index_select(0, index),
        generators=generators,
        max_num_logprobs=metadata.max_num_logprobs,
        no_penalties=True,
        prompt_token_ids=None,
        frequency_penalties=metadata.frequency_penalties,
        presence_penalties=metadata.presence_penalties,
        repetition_penalties=metadata.repetition_penalties,
        output_token_ids=[],
        allowed_token_ids_mask=None,
        bad_words_token_ids={},
        logitsprocs=LogitsProcessors(),
    )


def _ranks(scores: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Rank of each row's token (vLLM's definition: entries >= the token's score)."""
    selected = scores.gather(-1, token_ids.unsqueeze(-1))
    # as in vLLM's gather_logprobs: a symbolic batch size avoids recompiles
    torch._dynamo.decorators.mark_unbacked(scores, 0)
    torch._dynamo.decorators.mark_unbacked(selected, 0)
    return batched_count_greater_than(scores, selected)


class EADSamplerV1(Sampler):
    """Runner V1's ``Sampler`` with EAD rows sampled at ``T * tau_t``.

    ``state`` is the :class:`EADBatchState` installed in the same runner's
    input batch; ``backend`` is passed to ``ead_vllm.kernels.ead_sample``.
    """

    def __init__(
        self,
        state: EADBatchState,
        logprobs_mode: LogprobsMode = "raw_logprobs",
        use_fp64_gumbel: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(logprobs_mode=logprobs_mode, use_fp64_gumbel=use_fp64_gumbel)
        self.ead_state = state
        self.backend = backend

    def forward(
        self,
        logits: torch.Tensor,
        sampling_metadata: SamplingMetadata,
        predict_bonus_token: bool = False,
        logprobs_mode_override: LogprobsMode | None = None,
    ) -> SamplerOutput:
        view = None
        if not predict_bonus_token and _owns_batch(sampling_metadata.logitsprocs, self.ead_state):
            view = self.ead_state.view()
        if view is None:
            return super().forward(
                logits, sampling_metadata, predict_bonus_token, logprobs_mode_override
            )
        if logits.shape[0] != self.ead_state.batch_size:
            raise RuntimeError(
                f"EAD sampler: {logits.shape[0]} logits rows for a batch of "
                f"{self.ead_state.batch_size} requests"
            )
        mode = logprobs_mode_override or self.logprobs_mode
        taus = view.taus()
        if self._can_fuse(sampling_metadata, view, mode):
            return self._forward_fused(logits, sampling_metadata, view, taus, mode)
        return super().forward(
            logits,
            with_ead_temperature(sampling_metadata, view, taus),
            predict_bonus_token,
            logprobs_mode_override,
        )

    def _can_fuse(self, metadata: SamplingMetadata, view: EADBatchView, mode: str) -> bool:
        if not view.fusable.any() or metadata.logprob_token_ids:
            return False
        if metadata.max_num_logprobs is not None and mode not in _FUSED_LOGPROBS_MODES:
            return False
        for proc in metadata.logitsprocs.argmax_invariant:
            if proc is self.ead_state:
                continue
            if isinstance(proc, MinPLogitsProcessor) and proc.min_p_count == 0:
                continue
            return False
        return True

    def _forward_fused(
        self,
        logits: torch.Tensor,
        metadata: SamplingMetadata,
        view: EADBatchView,
        taus: np.ndarray,
        mode: str,
    ) -> SamplerOutput:
        num_logprobs = metadata.max_num_logprobs
        raw_logprobs = None
        if num_logprobs is not None and mode == "raw_logprobs":
            raw_logprobs = self.compute_logprobs(logits)
        logits = self.apply_logits_processors(logits.to(torch.float32), metadata, False)
        temperature = metadata.temperature
        assert temperature is not None
        batch, device = logits.shape[0], logits.device

        fused = view.fusable
        f_rows = view.index[fused]
        whole = len(f_rows) == batch
        f_index = torch.from_numpy(f_rows).to(device)
        f_logits = logits if whole else logits.index_select(0, f_index)
        out = ead_kernels.ead_sample(
            f_logits,
            positions=torch.from_numpy(view.positions[fused]).to(device),
            seeds=torch.from_numpy(view.seeds[fused]).to(device),
            tau_max=torch.from_numpy(view.tau_max[fused]).to(device),
            tau_min=torch.from_numpy(view.tau_min[fused]).to(device),
            decay=torch.from_numpy(view.decay[fused]).to(device),
            warmup=torch.from_numpy(view.warmup[fused]).to(device),
            base_temperature=temperature if whole else temperature.index_select(0, f_index),
            backend=self.backend,
            # positions are lengths and the schedule was validated at admission;
            # skipping the checks avoids a device sync per step
            validate=False,
        )
        self._keep_generators_balanced(metadata, f_rows)
        sampled = torch.empty(batch, dtype=torch.int64, device=device)
        sampled[f_index] = out.token_ids.to(torch.int64)

        r_rows = np.setdiff1d(np.arange(batch, dtype=np.int64), f_rows, assume_unique=True)
        r_index = r_sampled = r_processed = None
        if len(r_rows):
            r_index = torch.from_numpy(r_rows).to(device)
            r_temperature = temperature.index_select(0, r_index)
            # EAD rows with top-k/top-p take stock sampling at T * tau_t
            slow = view.index[~fused]
            if len(slow):
                at = torch.from_numpy(np.searchsorted(r_rows, slow)).to(device)
                scale = torch.from_numpy(taus[~fused]).to(device, r_temperature.dtype)
                r_temperature[at] = r_temperature[at] * scale
            r_metadata = subset_metadata(metadata, r_rows, r_temperature)
            r_sampled, r_processed = self.sample(
                logits.index_select(0, r_index), r_metadata, logprobs_mode_override=mode
            )
            r_sampled = r_sampled.to(torch.int64)
            sampled[r_index] = r_sampled

        logprobs_tensors = None
        if num_logprobs is not None:
            if raw_logprobs is not None:
                logprobs_tensors = self._gather(raw_logprobs, num_logprobs, sampled)
            elif num_logprobs == 0:
                token_logprobs = torch.empty(batch, dtype=torch.float32, device=device)
                ranks = torch.empty(batch, dtype=torch.int64, device=device)
                f_tokens = out.token_ids.to(torch.int64)
                token_logprobs[f_index] = out.logprobs.to(torch.float32)
                ranks[f_index] = _ranks(f_logits, f_tokens)
                if r_index is not None:
                    assert r_processed is not None and r_sampled is not None
                    token_logprobs[r_index] = r_processed.gather(-1, r_sampled[:, None])[:, 0]
                    ranks[r_index] = _ranks(r_processed, r_sampled)
                logprobs_tensors = LogprobsTensors(
                    sampled.to(torch.int32)[:, None], token_logprobs[:, None], ranks
                )
            else:
                processed = torch.empty_like(logits)
                processed[f_index] = torch.log_softmax(
                    f_logits / out.temperatures.to(torch.float32)[:, None], dim=-1
                )
                if r_index is not None:
                    processed[r_index] = r_processed
                logprobs_tensors = self._gather(processed, num_logprobs, sampled)

        return SamplerOutput(
            sampled_token_ids=sampled.to(torch.int32).unsqueeze(-1),
            logprobs_tensors=logprobs_tensors,
        )

    def _gather(
        self, logprobs: torch.Tensor, num_logprobs: int, sampled: torch.Tensor
    ) -> LogprobsTensors:
        if num_logprobs == -1:
            return LogprobsTensors(torch.empty(0), logprobs, torch.empty(0))
        return self.gather_logprobs(logprobs, num_logprobs, token_ids=sampled)

    @staticmethod
    def _keep_generators_balanced(metadata: SamplingMetadata, rows: np.ndarray) -> None:
        for i in rows.tolist():
            gen = metadata.generators.get(i)
            if gen is not None and gen.device.type != "cpu":
                gen.set_offset(gen.get_offset() + _DISCARD_REWIND)
