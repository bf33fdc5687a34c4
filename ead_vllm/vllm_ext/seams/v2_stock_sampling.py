"""Seam: the tail of runner V2's ``Sampler.sample`` (temperature to sampled token).

The V2 override samples the non-EAD rows of a mixed batch with vLLM's own steps
after the processors: ``SamplingStates.apply_temperature`` and ``apply_min_p``,
``get_top_k_top_p``, then vLLM's random sampler (Gumbel-max keyed by the slot
seed and position, or FlashInfer/XPU's fused top-k/top-p sampler where vLLM would
pick it for the whole batch). Three shapes, chosen by capabilities of the version
registry (:mod:`.versions`):

* **inline, 0.24.0-0.29.0**: no ``Sampler._sample_random``: ``apply_top_k_top_p`` then
  ``gumbel_sample`` (or ``flashinfer_sample``), called as ``sample`` calls them;
  fused sampler = FlashInfer only. ``gumbel_sample`` takes ``is_drafting`` from 0.29.0
  (:data:`~.versions.V2_GUMBEL_IS_DRAFTING`: it salts a draft's noise; a target row's,
  ``False``, is 0.24-0.28's noise) and names its cache ``output_processed_logits``
  before 0.28.0 (:data:`~.versions.V2_GUMBEL_LOGITS_CACHE`; ead-vllm never passes it);
* **two-values, 0.30.0-0.32.0**: ``get_top_k_top_p(rows, slots) -> (top_k, top_p)``,
  ``_sample_random(logits, rows, slots, pos, top_k, top_p, use_fused)``; fused
  sampler = FlashInfer (0.30) or FlashInfer/XPU (``use_xpu_sampler``, 0.31 on);
* **topp-only-flag, 0.33.0 and later** (the same in 0.34.0): ``get_top_k_top_p(rows,
  slots, vocab_size) -> (top_k, top_p, has_topp_only_rows)`` and ``_sample_random(...,
  top_k, top_p, has_topp_only_rows, use_fused)``.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np
import torch

from ead_vllm.vllm_ext.seams.signature import Expectation, attr
from ead_vllm.vllm_ext.seams.versions import (
    TOPP_ONLY_FLAG,
    V2_FUSED_FLAG_USE_FLASHINFER,
    V2_GUMBEL_IS_DRAFTING,
    V2_GUMBEL_LOGITS_CACHE,
    V2_SAMPLE_RANDOM,
    installed_release,
)

SAMPLER_MODULE = "vllm.v1.worker.gpu.sample.sampler"
STATES_MODULE = "vllm.v1.worker.gpu.sample.states"
_ROWS = ("self", "logits", "expanded_idx_mapping", "idx_mapping_np")
_RANDOM = ("self", "processed_logits", "expanded_idx_mapping", "idx_mapping_np", "pos")


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
_TOP_K_TOP_P = ("self", "expanded_idx_mapping", "idx_mapping_np")


class Shape:
    """What differs, between releases, in the steps after vLLM's processors."""

    name: str

    def fits(self, version: str) -> bool:
        """True when this shape is the one written for vLLM ``version``."""
        raise NotImplementedError

    def expected(self, version: str) -> tuple[Expectation, ...]:
        """The signatures this shape calls."""
        raise NotImplementedError

    def sample(
        self,
        sampler: Any,
        logits: torch.Tensor,
        rows: torch.Tensor,
        slots: np.ndarray,
        pos: torch.Tensor,
        batch_slots: np.ndarray,
        return_logprobs: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """top-k/top-p and vLLM's random sampler on rows already at temperature and min_p."""
        raise NotImplementedError


class Inline(Shape):
    """vLLM 0.24.0-0.29.0: no ``_sample_random``; ``sample`` calls the steps itself."""

    name = "inline"

    def fits(self, version: str) -> bool:
        return not V2_SAMPLE_RANDOM.holds(version)

    def expected(self, version: str) -> tuple[Expectation, ...]:
        drafting = ("is_drafting",) if V2_GUMBEL_IS_DRAFTING.holds(version) else ()
        cache = (
            ("logits_cache", "logits_cache_col")
            if V2_GUMBEL_LOGITS_CACHE.holds(version)
            else ("output_processed_logits", "output_processed_logits_col")
        )
        params = ("logits", "expanded_idx_mapping", "temperature", "seed", "pos")
        return (
            *_COMMON,
            _states("get_top_k_top_p", _TOP_K_TOP_P),
            Expectation(
                "vllm.v1.worker.gpu.sample.gumbel.gumbel_sample",
                functools.partial(attr, "vllm.v1.worker.gpu.sample.gumbel", "gumbel_sample"),
                (*params, "apply_temperature", *drafting, *cache, "use_fp64"),
            ),
        )

    def sample(self, sampler, logits, rows, slots, pos, batch_slots, return_logprobs):  # type: ignore[no-untyped-def]
        states = sampler.sampling_states
        top_k, top_p = states.get_top_k_top_p(rows, slots)
        fused = _fused_sampler_wanted(sampler, batch_slots, top_k, top_p, return_logprobs)
        # the functions by the names vLLM's own sample() calls them (its module's globals)
        stock = importlib.import_module(SAMPLER_MODULE)
        if fused:
            return stock.flashinfer_sample(logits, top_k, top_p).to(torch.int64), logits
        logits = stock.apply_top_k_top_p(logits, top_k, top_p)
        # a target row's noise (vLLM 0.24-0.28 have only that one)
        drafting = {"is_drafting": False} if _gumbel_takes_is_drafting() else {}
        sampled = stock.gumbel_sample(
            logits,
            rows,
            states.temperature.gpu,
            states.seeds.gpu,
            pos,
            apply_temperature=False,
            **drafting,
            use_fp64=sampler.use_fp64_gumbel,
        )
        return sampled, logits


class TwoValues(Shape):
    """vLLM 0.30.0-0.32.0: ``get_top_k_top_p -> (top_k, top_p)``, ``_sample_random``."""

    name = "two-values"

    def fits(self, version: str) -> bool:
        return V2_SAMPLE_RANDOM.holds(version) and not TOPP_ONLY_FLAG.holds(version)

    def expected(self, version: str) -> tuple[Expectation, ...]:
        flag = (
            "use_flashinfer" if V2_FUSED_FLAG_USE_FLASHINFER.holds(version) else "use_fused_sampler"
        )
        return (
            *_COMMON,
            _states("get_top_k_top_p", _TOP_K_TOP_P),
            _random((*_RANDOM, "top_k", "top_p", flag)),
        )

    def sample(self, sampler, logits, rows, slots, pos, batch_slots, return_logprobs):  # type: ignore[no-untyped-def]
        top_k, top_p = sampler.sampling_states.get_top_k_top_p(rows, slots)
        fused = _fused_sampler_wanted(sampler, batch_slots, top_k, top_p, return_logprobs)
        return sampler._sample_random(logits, rows, slots, pos, top_k, top_p, fused)


class ToppOnlyFlag(Shape):
    """vLLM 0.33.0 and later: a third value, ``has_topp_only_rows``, passed on."""

    name = "topp-only-flag"

    def fits(self, version: str) -> bool:
        return TOPP_ONLY_FLAG.holds(version)

    def expected(self, version: str) -> tuple[Expectation, ...]:
        return (
            *_COMMON,
            _states("get_top_k_top_p", (*_TOP_K_TOP_P, "vocab_size")),
            _random((*_RANDOM, "top_k", "top_p", "has_topp_only_rows", "use_fused_sampler")),
        )

    def sample(self, sampler, logits, rows, slots, pos, batch_slots, return_logprobs):  # type: ignore[no-untyped-def]
        states = sampler.sampling_states
        top_k, top_p, topp_only = states.get_top_k_top_p(rows, slots, logits.shape[-1])
        fused = _fused_sampler_wanted(sampler, batch_slots, top_k, top_p, return_logprobs)
        return sampler._sample_random(logits, rows, slots, pos, top_k, top_p, topp_only, fused)


SHAPES: tuple[Shape, ...] = (Inline(), TwoValues(), ToppOnlyFlag())


def shape_for(version: str) -> Shape:
    """The shape written for vLLM release ``version``."""
    return next(shape for shape in SHAPES if shape.fits(version))


def expected(version: str) -> tuple[Expectation, ...]:
    """The signatures this seam's adapter for vLLM release ``version`` relies on."""
    return shape_for(version).expected(version)


@functools.cache
def _current() -> Shape:
    return shape_for(installed_release())


@functools.cache
def _gumbel_takes_is_drafting() -> bool:
    return V2_GUMBEL_IS_DRAFTING.holds(installed_release())


def _fused_sampler_wanted(
    sampler: Any, batch_slots: np.ndarray, top_k: Any, top_p: Any, return_logprobs: bool
) -> bool:
    # vLLM's rule, decided for the whole batch as a stock batch would decide it:
    # a fused top-k/top-p sampler only with top-k/top-p in use, no greedy or seeded
    # row and no processed log-probs
    from ead_vllm.vllm_ext.seams.v2_sampler import PROCESSED_LOGPROBS_MODES

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
    return _current().sample(sampler, logits, rows, slots, pos, batch_slots, return_logprobs)
