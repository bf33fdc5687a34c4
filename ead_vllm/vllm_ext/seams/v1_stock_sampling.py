"""Seam: the pieces of runner V1's stock sampling that the EAD route calls for non-EAD rows.

Handles every release with runner V1 (0.24.0-0.33.0); ``apply_top_k_top_p`` (both
runners) in every supported release.
:mod:`ead_vllm.vllm_ext.v1_stock_rows` samples the non-EAD rows of a batch with
vLLM's own temperature, min_p, top-k/top-p and noise (``Sampler.greedy_sample``,
``Sampler.apply_temperature``, ``apply_top_k_top_p``, ``TopKTopPSampler``'s
``forward_cpu``/``forward_native`` and their noise helpers), and
:mod:`ead_vllm.vllm_ext.ead_masks` applies ``apply_top_k_top_p`` to EAD rows
(both runners). What differs between the versions:

* vLLM's CPU sampler (``forward_cpu``) draws unseeded noise as one 31-bit seed
  per row (``torch.randint``) and a per-token SplitMix64 stream from 0.32.0 on
  (:data:`~.versions.CPU_SPLITMIX_NOISE`); 0.24.0-0.31.0 draw an exponential [B, V]
  tensor, inside a compiled graph when no row is seeded (0.29.0-0.31.0) or when not
  every row is (0.24.0-0.28.0: a partly seeded batch is sampled in the graph and its
  seeds go unused; :data:`~.versions.CPU_NOISE_ANY_SEEDED_ROW`), see
  :func:`cpu_draws_exponential`;
* from 0.33.0 ``apply_top_k_top_p`` takes a fourth parameter with a default
  (``has_topp_only_rows=True``, :data:`~.versions.TOPP_ONLY_FLAG`); ead-vllm passes
  the first three.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ead_vllm.vllm_ext.seams.signature import Expectation, attr
from ead_vllm.vllm_ext.seams.versions import (
    CPU_NOISE_ANY_SEEDED_ROW,
    CPU_SPLITMIX_NOISE,
    TOPP_ONLY_FLAG,
)

OPS_MODULE = "vllm.v1.sample.ops.topk_topp_sampler"
SAMPLER_MODULE = "vllm.v1.sample.sampler"


@functools.cache
def internals() -> SimpleNamespace:
    """Runner V1's stock-sampling pieces, imported on first use (gone from vLLM 0.34.0):
    ``TopKTopPSampler``, ``empty_exponential_noise_like``, ``sample_with_exponential_noise``
    and vLLM's CPU op ``fused_gumbel_argmax`` (``None`` where vLLM's C++ extension does
    not register it: GPU builds, whose sampler never takes the SplitMix64 route)."""
    import torch

    return SimpleNamespace(
        TopKTopPSampler=attr(OPS_MODULE, "TopKTopPSampler"),
        empty_exponential_noise_like=attr(OPS_MODULE, "empty_exponential_noise_like"),
        sample_with_exponential_noise=attr(OPS_MODULE, "sample_with_exponential_noise"),
        fused_gumbel_argmax=getattr(torch.ops._C, "fused_gumbel_argmax", None),
    )


@functools.cache
def apply_top_k_top_p() -> Callable[..., Any]:
    """vLLM's ``apply_top_k_top_p(logits, k, p)`` (both runners' EAD masks call it; present
    in every supported release, 0.34.0 included)."""
    return attr(OPS_MODULE, "apply_top_k_top_p")


def cpu_noise_is_splitmix(version: str) -> bool:
    """True when vLLM release ``version``'s CPU sampler draws one seed per row (SplitMix64)."""
    return CPU_SPLITMIX_NOISE.holds(version)


def cpu_draws_exponential(
    version: str, seeded_rows: int, batch_size: int, use_fp64_gumbel: bool
) -> bool:
    """True when vLLM release ``version``'s CPU sampler, before SplitMix64 noise (0.24.0-0.31.0,
    or any release with fp64 noise), draws a [B, V] exponential from the global generator
    for a batch of ``batch_size`` rows of which ``seeded_rows`` are seeded, rather than
    sampling inside its compiled graph (``TopKTopPSampler.forward_cpu``)."""
    if use_fp64_gumbel:
        return True
    if CPU_NOISE_ANY_SEEDED_ROW.holds(version):
        return seeded_rows > 0
    return seeded_rows == batch_size


def _op(name: str, params: tuple[str, ...], *owner: str) -> Expectation:
    path = ".".join((OPS_MODULE, *owner, name))
    return Expectation(path, functools.partial(attr, OPS_MODULE, *owner, name), params)


def _sampler(name: str, params: tuple[str, ...]) -> Expectation:
    return Expectation(
        f"{SAMPLER_MODULE}.Sampler.{name}",
        functools.partial(attr, SAMPLER_MODULE, "Sampler", name),
        params,
    )


def top_k_top_p_expectation(version: str) -> Expectation:
    """``apply_top_k_top_p``'s parameters in vLLM release ``version`` (both runners call it)."""
    params = ("logits", "k", "p")
    if TOPP_ONLY_FLAG.holds(version):
        params = (*params, "has_topp_only_rows")
    return _op("apply_top_k_top_p", params)


def expected(version: str) -> tuple[Expectation, ...]:
    """The signatures the V1 stock-rows path relies on, for vLLM release ``version``."""
    forward = ("self", "logits", "generators", "k", "p")
    return (
        top_k_top_p_expectation(version),
        _op("empty_exponential_noise_like", ("probs", "use_fp64_gumbel")),
        _op("sample_with_exponential_noise", ("probs", "q")),
        _op("forward_cpu", forward, "TopKTopPSampler"),
        _op("forward_native", forward, "TopKTopPSampler"),
        _sampler("greedy_sample", ("logits",)),
        _sampler("apply_temperature", ("logits", "temp", "all_random")),
        _sampler(
            "gather_specific_token_logprobs", ("self", "logprobs", "logprob_token_ids", "sampled")
        ),
        Expectation(
            "vllm.v1.sample.ops.logprobs.batched_count_greater_than",
            functools.partial(attr, "vllm.v1.sample.ops.logprobs", "batched_count_greater_than"),
            ("x", "values"),
        ),
    )
