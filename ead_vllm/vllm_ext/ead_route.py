"""The EAD route, one definition for both runners: masks at ``T * tau_t``, then the kernel.

Runner V1 (:mod:`.v1_sampler`) and runner V2 (:mod:`.v2_sampler`) find their EAD rows
and read the rows' parameters from different vLLM state, but what happens to those
rows must be bit-identical on both (the tests compare them). So both call
:func:`sample_ead_rows` with a :class:`RowSchedule` and the rows' sampling options.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

import ead_vllm.kernels as ead_kernels
from ead_vllm.kernels.schedule import ead_tau
from ead_vllm.vllm_ext.ead_masks import mask_ead_rows_


class RowSchedule(NamedTuple):
    """Position and schedule of N EAD rows, each an [N] tensor on the logits' device."""

    positions: torch.Tensor  # int64: t, tokens this request generated before this one
    tau_max: torch.Tensor  # float32
    tau_min: torch.Tensor  # float32
    decay: torch.Tensor  # float32, tokens
    warmup: torch.Tensor  # int64, tokens kept at tau = 1

    def taus(self) -> torch.Tensor:
        """``tau_t`` of each row, [N] fp32, by the kernels' one definition (``ead_tau``)."""
        return ead_tau(**self._asdict())


def sample_ead_rows(
    logits: torch.Tensor,
    schedule: RowSchedule,
    *,
    seeds: torch.Tensor,
    base_temperature: torch.Tensor,
    needs_mask: np.ndarray,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    min_p: torch.Tensor | None,
    backend: str,
) -> ead_kernels.EADSample:
    """Sample N EAD rows: their min_p/top-k/top-p at ``T * tau_t``, then ``ead_sample``.

    ``logits`` [N, V] float32, vLLM's processed logits of the EAD rows only (masked in
    place); ``seeds`` [N] int64 (the rows' noise keys); ``base_temperature`` [N] fp32,
    each request's ``T``; ``needs_mask`` [N] bool (host), the rows that set min_p,
    top-k or top-p; ``top_k`` [N] integer (V or 0 = off), ``top_p`` [N] fp32 (1 = off),
    ``min_p`` [N] fp32 (0 = off), each optional. Returns the kernel's ``EADSample``
    (token ids, log-probs under the annealed masked distribution, temperatures).
    """
    if needs_mask.any():
        m = torch.from_numpy(np.flatnonzero(needs_mask)).to(logits.device)
        mask_ead_rows_(
            logits,
            m,
            taus=schedule.taus(),
            base_temperature=base_temperature,
            top_k=None if top_k is None else top_k[m],
            top_p=None if top_p is None else top_p[m],
            min_p=None if min_p is None else min_p[m],
        )
    return ead_kernels.ead_sample(
        logits,
        seeds=seeds,
        base_temperature=base_temperature,
        backend=backend,
        # positions are lengths and the schedule was validated at admission; skipping
        # the checks avoids a device sync per step
        validate=False,
        return_base_logprobs=False,
        return_entropy=False,
        **schedule._asdict(),
    )
