"""The EAD sampler of runner V1 (``vllm/v1/sample/sampler.py``'s ``Sampler``, extended).

Per step, with the EAD rows of the batch known from :class:`EADBatchState`:

* no EAD row (or a metadata object that is not the live batch's, as in
  vLLM's dummy sampler runs): the stock ``Sampler.forward``, untouched;
* otherwise one route, whatever else is in the batch:

  1. vLLM's own processing of the whole batch (raw log-probs if asked, then
     allowed tokens, bad words, min-tokens, logit bias, penalties, thinking
     budget), as stock;
  2. EAD rows: min_p, top-k and top-p computed at the row's effective
     temperature ``T * tau_t`` (:mod:`ead_masks`, only for rows that set them),
     then ``ead_vllm.kernels.ead_sample`` with the row's counter-based noise;
  3. the other rows: vLLM's own temperature, min_p, top-k/top-p and sampling,
     with the noise stock vLLM would draw for them in this batch
     (:mod:`v1_stock_rows`), so they get stock's tokens bit for bit;
  4. log-probs assembled as stock does (sampled token, top-n, specific token
     ids, full rows).

A seeded EAD row therefore samples the same tokens whatever its neighbours
(greedy, min_p, top-k/top-p, penalties, logprob_token_ids, unseeded) and in
whatever order. The one exception is engine-wide: a custom argmax-invariant
logits processor (a ``--logits-processors`` plugin) has no per-row meaning
we could reproduce, so such an engine samples EAD rows with stock code at
``T * tau_t`` (same distribution, vLLM's noise).

Log-probs of EAD rows: ``processed_logprobs`` gives the sampled token's
log-prob under the distribution actually sampled: ``softmax(logits / (T *
tau_t))`` after vLLM's processors and the row's min_p/top-k/top-p masks,
renormalised over the kept tokens; ``processed_logits`` the scaled masked
logits; ``raw_*`` vLLM's raw values (the model's own distribution).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from vllm.config.model import LogprobsMode

# vLLM's documented interface for custom logits processors (runner V1)
from vllm.v1.sample.logits_processor import LogitsProcessors, MinPLogitsProcessor

from ead_vllm.vllm_ext.ead_route import sample_ead_rows
from ead_vllm.vllm_ext.request_state import EADBatchView
from ead_vllm.vllm_ext.seams.v1_sampler import internals
from ead_vllm.vllm_ext.v1_batch_state import EADBatchState
from ead_vllm.vllm_ext.v1_stock_rows import draw_stock_noise, sample_stock_rows

# runner V1's internals, through their seam (checked by the start-up gate)
Sampler = internals().Sampler
SamplingMetadata = internals().SamplingMetadata
SamplerOutput = internals().SamplerOutput
LogprobsTensors = internals().LogprobsTensors
batched_count_greater_than = internals().batched_count_greater_than

# vLLM's V1 runner rewinds a seeded row's CUDA generator by this much when it
# discards the row's sample (partial prefill); EAD rows never draw from their
# generator, so they advance it by the same amount to keep the offset valid.
_DISCARD_REWIND = 4


def _owns_batch(logitsprocs: LogitsProcessors, state: EADBatchState) -> bool:
    return any(proc is state for proc in logitsprocs.argmax_invariant)


def with_ead_temperature(
    metadata: SamplingMetadata, view: EADBatchView, taus: torch.Tensor
) -> SamplingMetadata:
    """A copy of ``metadata`` whose EAD rows have temperature ``T * tau_t`` (``taus`` [N] fp32)."""
    assert metadata.temperature is not None
    temperature = metadata.temperature.clone()
    index = torch.from_numpy(view.index).to(temperature.device)
    scale = taus.to(temperature.device, temperature.dtype)
    temperature[index] = temperature[index] * scale
    return dataclasses.replace(metadata, temperature=temperature)


def _ranks(scores: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Rank of each row's token (vLLM's definition: entries >= the token's score)."""
    selected = scores.gather(-1, token_ids.unsqueeze(-1))
    # as in vLLM's gather_logprobs: a symbolic batch size avoids recompiles
    torch._dynamo.decorators.mark_unbacked(scores, 0)
    torch._dynamo.decorators.mark_unbacked(selected, 0)
    return batched_count_greater_than(scores, selected)


def _min_p_processor(metadata: SamplingMetadata) -> MinPLogitsProcessor | None:
    for proc in metadata.logitsprocs.argmax_invariant:
        if isinstance(proc, MinPLogitsProcessor) and proc.min_p_count:
            return proc
    return None


def _rows_of(t: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[index]


@dataclasses.dataclass(slots=True)
class _EADRows:
    """What the fused kernel returned for the EAD rows of a step."""

    index: torch.Tensor  # [N] int64 rows of the batch
    logits: torch.Tensor  # [N, V] fp32 processed, masked, unscaled
    tokens: torch.Tensor  # [N] int64
    logprobs: torch.Tensor  # [N] fp32, under the sampled distribution
    temperatures: torch.Tensor  # [N] fp32, T * tau_t


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
                f"ead-vllm: the EAD sampler got {logits.shape[0]} logits rows for a batch of "
                f"{self.ead_state.batch_size} requests"
            )
        if self._custom_argmax_invariant(sampling_metadata):
            taus = view.taus(logits.device)
            return super().forward(
                logits,
                with_ead_temperature(sampling_metadata, view, taus),
                predict_bonus_token,
                logprobs_mode_override,
            )
        return self._forward_ead(
            logits, sampling_metadata, view, logprobs_mode_override or self.logprobs_mode
        )

    def _custom_argmax_invariant(self, metadata: SamplingMetadata) -> bool:
        return any(
            proc is not self.ead_state and not isinstance(proc, MinPLogitsProcessor)
            for proc in metadata.logitsprocs.argmax_invariant
        )

    def _forward_ead(
        self, logits: torch.Tensor, metadata: SamplingMetadata, view: EADBatchView, mode: str
    ) -> SamplerOutput:
        num_logprobs = metadata.max_num_logprobs
        wants_logprobs = num_logprobs is not None or bool(metadata.logprob_token_ids)
        raw_logprobs = None
        if wants_logprobs and mode == "raw_logprobs":
            raw_logprobs = self.compute_logprobs(logits)
        elif wants_logprobs and mode == "raw_logits":
            raw_logprobs = logits.clone() if logits.dtype == torch.float32 else logits.float()
        logits = self.apply_logits_processors(logits.to(torch.float32), metadata, False)
        batch, device = logits.shape[0], logits.device
        min_p = _min_p_processor(metadata)

        ead = self._sample_ead_rows(logits, metadata, view, min_p)
        whole = ead.index.shape[0] == batch
        sampled = ead.tokens if whole else torch.empty(batch, dtype=torch.int64, device=device)
        r_index = r_sampled = r_processed = None
        if whole:
            draw_stock_noise(self, metadata, logits)
        else:
            sampled[ead.index] = ead.tokens
            mask = np.ones(batch, dtype=bool)
            mask[view.index] = False
            r_index = torch.from_numpy(np.flatnonzero(mask)).to(device)
            r_min_p = None if min_p is None else min_p.min_p[:, 0][r_index]
            r_sampled, r_processed = sample_stock_rows(self, logits, metadata, r_index, r_min_p)
            sampled[r_index] = r_sampled

        logprobs_tensors = None
        if wants_logprobs:
            if raw_logprobs is None and num_logprobs == 0 and not metadata.logprob_token_ids:
                logprobs_tensors = self._token_logprobs(
                    ead, sampled, mode, r_index, r_sampled, r_processed
                )
            else:
                scores = raw_logprobs
                if scores is None:
                    scores = self._processed_rows(ead, mode, batch, r_index, r_processed)
                logprobs_tensors = self._gather_like_stock(scores, metadata, sampled)

        return SamplerOutput(
            sampled_token_ids=sampled.to(torch.int32).unsqueeze(-1),
            logprobs_tensors=logprobs_tensors,
        )

    def _sample_ead_rows(
        self,
        logits: torch.Tensor,
        metadata: SamplingMetadata,
        view: EADBatchView,
        min_p: MinPLogitsProcessor | None,
    ) -> _EADRows:
        """Masks (at ``T * tau_t``) and the fused kernel for the EAD rows of the batch."""
        temperature = metadata.temperature
        assert temperature is not None
        batch, device = logits.shape[0], logits.device
        index = torch.from_numpy(view.index).to(device)
        whole = len(view.index) == batch
        # the kernel reads the EAD rows only; a copy when other rows share the batch.
        # Row gathers here use x[rows]: on this CPU, torch's index_select of a
        # [256, 151936] fp32 tensor took 0.5-1.5 s against 0.17 s for x[rows].
        e_logits = logits if whole else logits[index]
        out = sample_ead_rows(
            e_logits,
            view.schedule(device),
            seeds=torch.from_numpy(view.seeds).to(device),
            base_temperature=temperature if whole else temperature[index],
            needs_mask=view.needs_mask,
            top_k=_rows_of(metadata.top_k, index),
            top_p=_rows_of(metadata.top_p, index),
            min_p=None if min_p is None else min_p.min_p[:, 0][index],
            backend=self.backend,
        )
        self._keep_generators_balanced(metadata, view.index)
        return _EADRows(
            index, e_logits, out.token_ids.to(torch.int64), out.logprobs, out.temperatures
        )

    def _token_logprobs(
        self,
        ead: _EADRows,
        sampled: torch.Tensor,
        mode: str,
        r_index: torch.Tensor | None,
        r_sampled: torch.Tensor | None,
        r_processed: torch.Tensor | None,
    ) -> LogprobsTensors:
        """The sampled token's processed log-prob (or logit) and rank, without a [B, V] pass.

        EAD rows take the kernel's log-prob; their rank (vLLM's Logprob.rank)
        costs one comparison pass over their logits. Degenerate rows (no
        allowed token) report a NaN log-prob and rank 0, as stock does.
        """
        batch = sampled.shape[0]
        values = torch.empty(batch, dtype=torch.float32, device=sampled.device)
        ranks = torch.empty(batch, dtype=torch.int64, device=sampled.device)
        if mode == "processed_logits":
            picked = ead.logits.gather(-1, ead.tokens[:, None])[:, 0] / ead.temperatures
            values[ead.index] = torch.where(torch.isnan(ead.logprobs), ead.logprobs, picked)
        else:
            values[ead.index] = ead.logprobs.to(torch.float32)
        ead_ranks = _ranks(ead.logits, ead.tokens)
        ranks[ead.index] = torch.where(torch.isnan(ead.logprobs), 0, ead_ranks)
        if r_index is not None:
            assert r_processed is not None and r_sampled is not None
            values[r_index] = r_processed.gather(-1, r_sampled[:, None])[:, 0]
            ranks[r_index] = _ranks(r_processed, r_sampled)
        return LogprobsTensors(sampled.to(torch.int32)[:, None], values[:, None], ranks)

    @staticmethod
    def _processed_rows(
        ead: _EADRows,
        mode: str,
        batch: int,
        r_index: torch.Tensor | None,
        r_processed: torch.Tensor | None,
    ) -> torch.Tensor:
        """[B, V] processed log-probs (or logits) of every row, as stock would report them."""
        scaled = ead.logits / ead.temperatures[:, None]
        ead_rows = scaled if mode == "processed_logits" else torch.log_softmax(scaled, dim=-1)
        if r_index is None:
            return ead_rows
        assert r_processed is not None
        full = ead_rows.new_empty((batch, ead_rows.shape[1]))
        full[ead.index] = ead_rows
        full[r_index] = r_processed
        return full

    def _gather_like_stock(
        self, scores: torch.Tensor, metadata: SamplingMetadata, sampled: torch.Tensor
    ) -> LogprobsTensors | None:
        """Stock ``forward``'s log-prob tail: specific token ids, full rows or the top n."""
        if metadata.logprob_token_ids:
            return self.gather_specific_token_logprobs(scores, metadata.logprob_token_ids, sampled)
        num_logprobs = metadata.max_num_logprobs
        if num_logprobs == -1:
            return LogprobsTensors(torch.empty(0), scores, torch.empty(0))
        assert num_logprobs is not None
        return self.gather_logprobs(scores, num_logprobs, token_ids=sampled)

    @staticmethod
    def _keep_generators_balanced(metadata: SamplingMetadata, rows: np.ndarray) -> None:
        for i in rows.tolist():
            gen = metadata.generators.get(i)
            if gen is not None and gen.device.type != "cpu":
                gen.set_offset(gen.get_offset() + _DISCARD_REWIND)
