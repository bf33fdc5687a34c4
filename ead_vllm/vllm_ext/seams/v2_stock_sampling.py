"""Seam: the tail of runner V2's ``Sampler.sample`` (temperature to sampled token).

The V2 override samples the non-EAD rows of a mixed batch with vLLM's own steps
after the processors: ``SamplingStates.apply_temperature`` and ``apply_min_p``,
``get_top_k_top_p``, then vLLM's random sampler (Gumbel-max keyed by the slot
seed and position, or FlashInfer/XPU's fused top-k/top-p sampler where vLLM would
pick it for the whole batch). Three shapes, each naming the versions it handles:

* **0.29.0**: no ``Sampler._sample_random``: ``apply_top_k_top_p`` then
  ``gumbel_sample`` (or ``flashinfer_sample``), called as ``sample`` calls them;
  fused sampler = FlashInfer only;
* **0.30.0, 0.31.0, 0.32.0**: ``get_top_k_top_p(rows, slots) -> (top_k, top_p)``,
  ``_sample_random(logits, rows, slots, pos, top_k, top_p, use_fused)``; fused
  sampler = FlashInfer (0.30) or FlashInfer/XPU (``use_xpu_sampler``, 0.31 on);
* **0.33.0**: ``get_top_k_top_p(rows, slots, vocab_size) -> (top_k, top_p,
  has_topp_only_rows)`` and ``_sample_random(..., top_k, top_p, has_topp_only_rows,
  use_fused)``.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np
import torch

from ead_vllm.vllm_ext.seams.signature import Expectation, attr
from ead_vllm.vllm_ext.seams.versions import installed_vllm_version, release

SAMPLER_MODULE = "vllm.v1.worker.gpu.sample.sampler"
STATES_MODULE = "vllm.v1.worker.gpu.sample.states"
_ROWS = ("self", "logits", "expanded_idx_mapping", "idx_mapping_np")
_RANDOM = ("self", "processed_logits", "expanded_idx_mapping", "idx_mapping_np", "pos")

VERSIONS_INLINE: tuple[str, ...] = ("0.29.0",)
VERSIONS_TWO_VALUES: tuple[str, ...] = ("0.30.0", "0.31.0", "0.32.0")
VERSIONS_TOPP_ONLY_FLAG: tuple[str, ...] = ("0.33.0",)


def _states(method: str, params: tuple[str, ...]) -> Expectation:
    return Expectation(
        f"{STATES_MODULE}.SamplingStates.{method}",
        functools.partial(attr, STATES_MODULE, "SamplingStates", method),
        params,
    )


def _random(params: tuple[str, ...]) -> Expectation:
    return Expectation(
        f"{SAMPLER_MODULE}.Sampler._sample_random",
        functools.partial(attr, SAMPLER_MODULE, "Sampler", "_sample_random"),
        params,
    )


_COMMON = (
    _states("apply_temperature", _ROWS),
    _states("apply_min_p", _ROWS),
    _states("any_greedy", ("self", "idx_mapping_np")),
    _states("any_explicit_seed", ("self", "idx_mapping_np")),
)


def expected(version: str) -> tuple[Expectation, ...]:
    """The signatures this seam's adapter for vLLM release ``version`` relies on."""
    top_k_top_p = ("self", "expanded_idx_mapping", "idx_mapping_np")
    if version in VERSIONS_INLINE:
        return (
            *_COMMON,
            _states("get_top_k_top_p", top_k_top_p),
            Expectation(
                "vllm.v1.worker.gpu.sample.gumbel.gumbel_sample",
                functools.partial(attr, "vllm.v1.worker.gpu.sample.gumbel", "gumbel_sample"),
                (
                    "logits",
                    "expanded_idx_mapping",
                    "temperature",
                    "seed",
                    "pos",
                    "apply_temperature",
                    "is_drafting",
                    "logits_cache",
                    "logits_cache_col",
                    "use_fp64",
                ),
            ),
        )
    if version in VERSIONS_TOPP_ONLY_FLAG:
        return (
            *_COMMON,
            _states("get_top_k_top_p", (*top_k_top_p, "vocab_size")),
            _random((*_RANDOM, "top_k", "top_p", "has_topp_only_rows", "use_fused_sampler")),
        )
    flag = "use_flashinfer" if version == "0.30.0" else "use_fused_sampler"
    return (
        *_COMMON,
        _states("get_top_k_top_p", top_k_top_p),
        _random((*_RANDOM, "top_k", "top_p", flag)),
    )


@functools.cache
def _version() -> str:
    return release(installed_vllm_version())


def _fused_sampler_wanted(
    sampler: Any, batch_slots: np.ndarray, top_k: Any, top_p: Any, return_logprobs: bool
) -> bool:
    # vLLM's rule, decided for the whole batch as a stock batch would decide it:
    # a fused top-k/top-p sampler only with top-k/top-p in use, no greedy or seeded
    # row and no processed log-probs
    from vllm.config.model import PROCESSED_LOGPROBS_MODES

    states = sampler.sampling_states
    eligible = not (
        (top_k is None and top_p is None)
        or (return_logprobs and sampler.logprobs_mode in PROCESSED_LOGPROBS_MODES)
        or states.any_greedy(batch_slots)
        or states.any_explicit_seed(batch_slots)
    )
    # use_xpu_sampler exists from 0.31.0 on
    available = sampler.use_flashinfer or getattr(sampler, "use_xpu_sampler", False)
    return bool(eligible and available)


def sample_rows(
    sampler: Any,
    logits: torch.Tensor,
    rows: torch.Tensor,
    slots: np.ndarray,
    pos: torch.Tensor,
    batch_slots: np.ndarray,
    return_logprobs: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's temperature, min_p, top-k/top-p and random sampler on some logits rows.

    ``logits`` are those rows (float32, vLLM's processors already applied; changed in
    place), ``rows``/``slots``/``pos`` their expanded slot mapping, slots (host) and
    positions; ``batch_slots`` the whole batch's slots (the fused-sampler choice is
    the batch's). Returns ``(sampled token ids, processed logits)`` as vLLM's
    ``sample`` does.
    """
    states = sampler.sampling_states
    states.apply_temperature(logits, rows, slots)
    states.apply_min_p(logits, rows, slots)
    version = _version()
    if version in VERSIONS_TOPP_ONLY_FLAG:
        top_k, top_p, topp_only = states.get_top_k_top_p(rows, slots, logits.shape[-1])
        fused = _fused_sampler_wanted(sampler, batch_slots, top_k, top_p, return_logprobs)
        return sampler._sample_random(logits, rows, slots, pos, top_k, top_p, topp_only, fused)
    top_k, top_p = states.get_top_k_top_p(rows, slots)
    fused = _fused_sampler_wanted(sampler, batch_slots, top_k, top_p, return_logprobs)
    if version not in VERSIONS_INLINE:
        return sampler._sample_random(logits, rows, slots, pos, top_k, top_p, fused)
    # the functions by the names vLLM's own sample() calls them (its module's globals)
    stock = importlib.import_module(SAMPLER_MODULE)
    if fused:
        return stock.flashinfer_sample(logits, top_k, top_p).to(torch.int64), logits
    logits = stock.apply_top_k_top_p(logits, top_k, top_p)
    sampled = stock.gumbel_sample(
        logits,
        rows,
        states.temperature.gpu,
        states.seeds.gpu,
        pos,
        apply_temperature=False,
        is_drafting=False,
        use_fp64=sampler.use_fp64_gumbel,
    )
    return sampled, logits
