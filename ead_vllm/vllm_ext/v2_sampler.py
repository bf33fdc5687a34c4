"""The EAD sampler of runner V2 (``vllm/v1/worker/gpu/sample/sampler.py``'s ``Sampler``, extended).

Built by the runner in place of vLLM's ``Sampler`` (same constructor). A batch
without EAD rows takes vLLM's ``sample`` untouched. A batch with EAD rows,
whatever else it holds, takes one route:

1. a copy of the logits as vLLM makes it (float32; on vLLM 0.26 the model's
   dtype, see :func:`~.seams.v2_sampler.working_logits`) and vLLM's processors on
   every row: logit bias, penalties, bad words, custom processors, thinking
   budget;
2. EAD rows: min_p, top-k and top-p at the row's effective temperature
   ``T * tau_t`` (:mod:`ead_masks`, only for rows that set them), then
   ``ead_vllm.kernels.ead_sample`` with ``t = pos + 1 - prompt_len`` and the
   slot's vLLM seed, always on float32 logits;
3. the other rows: vLLM's temperature, min_p, top-k/top-p and sampler on
   those rows only. vLLM's V2 noise is keyed by (slot seed, position, token),
   so a row's token does not depend on its neighbours: the same as in a
   stock batch (bit for bit with its Gumbel sampler; its FlashInfer sampler
   is not reproducible even in stock vLLM).

The processed logits returned (for vLLM's log-probs and sampling masks) are
``masked logits / (T * tau_t)`` for EAD rows, so processed log-probs are those
of the distribution actually sampled; vLLM's own for the other rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ead_vllm.vllm_ext.ead_route import sample_ead_rows
from ead_vllm.vllm_ext.logits_processors import EADLogitsProcessorV2

# what differs between vLLM versions (see the modules' docstrings)
from ead_vllm.vllm_ext.seams import v2_sampler as v2_seam
from ead_vllm.vllm_ext.seams import v2_stock_sampling
from ead_vllm.vllm_ext.seams.v2_logits_processor import LogitsContext, request_state_view
from ead_vllm.vllm_ext.seams.v2_sampler import PROCESSED_LOGPROBS_MODES, working_logits

Sampler = v2_seam.sampler_class()


class EADSamplerV2(Sampler):
    """Runner V2's ``Sampler`` with EAD rows sampled at ``T * tau_t``."""

    def __init__(self, *args: Any, backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ead_shape = v2_seam.current()
        init = self.ead_shape.init_arguments(args, kwargs)
        # the per-slot EAD schedule; not in vLLM's processor chain (step 2 above)
        self.ead = EADLogitsProcessorV2(init["vllm_config"], request_state_view(init["req_states"]))
        self.backend = backend

    def add_request(self, *args: Any, **kwargs: Any) -> None:
        # (req_idx, sampling_params); vLLM 0.24-0.30 pass (req_idx, prompt_len, sampling_params)
        super().add_request(*args, **kwargs)
        self.ead.add_request(*self.ead_shape.add_request_arguments(args, kwargs))

    def apply_staged_writes(self) -> None:
        super().apply_staged_writes()
        self.ead.apply_staged_writes()

    def sample(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # vLLM's arguments (logits, expanded_idx_mapping, [idx_mapping from 0.28,]
        # idx_mapping_np, pos, input_ids, expanded_local_pos, [seq_lens_upper_bound_np
        # from 0.31,] return_logprobs), read by name through the seam
        call = self.ead_shape.sample_call(args, kwargs)
        return_logprobs = call.return_logprobs
        is_ead = self.ead.is_ead.np[call.idx_mapping_np]
        if not is_ead.any():
            return super().sample(*args, **kwargs)
        ctx = call.context()
        # vLLM's own stages, on a copy as vLLM makes it (float32; the model's dtype on
        # vLLM 0.26); the raw logits feed raw log-probs
        logits = working_logits(call.logits)
        logits = self.ead_shape.processors(self, logits, call)

        want_processed = v2_seam.returns_sampling_mask(self) or (
            return_logprobs and self.logprobs_mode in PROCESSED_LOGPROBS_MODES
        )
        batch, device = logits.shape[0], logits.device
        e_rows = np.flatnonzero(is_ead)
        if len(e_rows) == batch:
            return self._sample_ead(logits.float(), ctx, want_processed)
        e_index = torch.from_numpy(e_rows).to(device)
        r_rows = np.flatnonzero(~is_ead)
        r_index = torch.from_numpy(r_rows).to(device)
        e_tokens, e_processed = self._sample_ead(
            logits[e_index].float(), _subset(ctx, e_rows, e_index), want_processed
        )
        r_tokens, r_processed = self._sample_stock(
            logits[r_index], _subset(ctx, r_rows, r_index), ctx, return_logprobs
        )
        sampled = torch.empty(batch, dtype=torch.int64, device=device)
        sampled[e_index] = e_tokens
        sampled[r_index] = r_tokens.to(torch.int64)
        processed = logits
        if want_processed:
            # (in the model's dtype on vLLM 0.26, as vLLM's own processed logits)
            processed[e_index] = e_processed.to(processed.dtype)
            processed[r_index] = r_processed
        return sampled, processed

    def _sample_ead(
        self, logits: torch.Tensor, ctx: LogitsContext, want_processed: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks at ``T * tau_t`` and the fused kernel for a batch of EAD rows only."""
        rows = ctx.expanded_idx_mapping
        states = self.sampling_states
        slots = ctx.idx_mapping_np
        needs_mask = (
            (states.top_k.np[slots] != states.vocab_size)
            | (states.top_p.np[slots] != 1.0)
            | (states.min_p.np[slots] != 0.0)
        )
        masked = bool(needs_mask.any())
        out = sample_ead_rows(
            logits,
            self.ead.row_schedule(ctx.pos, rows),
            seeds=states.seeds.gpu[rows],
            base_temperature=states.temperature.gpu[rows],
            needs_mask=needs_mask,
            top_k=states.top_k.gpu[rows] if masked else None,
            top_p=states.top_p.gpu[rows] if masked else None,
            min_p=states.min_p.gpu[rows] if masked else None,
            backend=self.backend,
        )
        processed = logits
        if want_processed:
            # the distribution sampled: masked logits / (T * tau_t); one extra pass
            processed = logits / out.temperatures[:, None]
        return out.token_ids, processed

    def _sample_stock(
        self,
        logits: torch.Tensor,
        ctx: LogitsContext,
        batch_ctx: LogitsContext,
        return_logprobs: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """vLLM's temperature, min_p, top-k/top-p and sampler on the non-EAD rows ``ctx``.

        vLLM's fused-sampler choice is the whole batch's (``batch_ctx``), as in a stock batch.
        """
        return v2_stock_sampling.sample_rows(
            self,
            logits,
            ctx.expanded_idx_mapping,
            ctx.idx_mapping_np,
            ctx.pos,
            batch_ctx.idx_mapping_np,
            return_logprobs,
        )


def _subset(ctx: LogitsContext, rows_np: np.ndarray, rows: torch.Tensor) -> LogitsContext:
    """The context of the logits rows ``rows`` (one logits row per request: no drafts)."""
    return LogitsContext(
        expanded_idx_mapping=ctx.expanded_idx_mapping[rows],
        # vLLM 0.24-0.27 have none
        idx_mapping=None if ctx.idx_mapping is None else ctx.idx_mapping[rows],
        idx_mapping_np=ctx.idx_mapping_np[rows_np],
        expanded_local_pos=ctx.expanded_local_pos[rows],
        input_ids=ctx.input_ids[rows],
        pos=ctx.pos[rows],
        # vLLM 0.24-0.30 have none
        seq_lens_upper_bound_np=None
        if ctx.seq_lens_upper_bound_np is None
        else ctx.seq_lens_upper_bound_np[rows_np],
    )
