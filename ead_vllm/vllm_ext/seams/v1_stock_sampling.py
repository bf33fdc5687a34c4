"""Seam: the pieces of runner V1's stock sampling that the EAD route calls for non-EAD rows.

Handles vLLM 0.29.0, 0.30.0, 0.31.0, 0.32.0 and 0.33.0.
:mod:`ead_vllm.vllm_ext.v1_stock_rows` samples the non-EAD rows of a batch with
vLLM's own temperature, min_p, top-k/top-p and noise (``Sampler.greedy_sample``,
``Sampler.apply_temperature``, ``apply_top_k_top_p``, ``TopKTopPSampler``'s
``forward_cpu``/``forward_native`` and their noise helpers), and
:mod:`ead_vllm.vllm_ext.ead_masks` applies ``apply_top_k_top_p`` to EAD rows
(both runners). What differs between the versions:

* vLLM's CPU sampler (``forward_cpu``) draws unseeded noise as one 31-bit seed
  per row (``torch.randint``) and a per-token SplitMix64 stream from 0.32.0 on
  (:data:`VERSIONS_SPLITMIX`); 0.29.0-0.31.0 draw an exponential [B, V] tensor,
  inside a compiled graph when no row is seeded;
* 0.33.0's ``apply_top_k_top_p`` takes a fourth parameter with a default
  (``has_topp_only_rows=True``); ead-vllm passes the first three.
"""

from __future__ import annotations

import functools

from ead_vllm.vllm_ext.seams.signature import Expectation, attr

VERSIONS: tuple[str, ...] = ("0.29.0", "0.30.0", "0.31.0", "0.32.0", "0.33.0")
VERSIONS_SPLITMIX: tuple[str, ...] = ("0.32.0", "0.33.0")
VERSIONS_TOPP_ONLY_FLAG: tuple[str, ...] = ("0.33.0",)

OPS_MODULE = "vllm.v1.sample.ops.topk_topp_sampler"
SAMPLER_MODULE = "vllm.v1.sample.sampler"


def cpu_noise_is_splitmix(version: str) -> bool:
    """True when vLLM release ``version``'s CPU sampler draws one seed per row (SplitMix64)."""
    return version in VERSIONS_SPLITMIX


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
    if version in VERSIONS_TOPP_ONLY_FLAG:
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
