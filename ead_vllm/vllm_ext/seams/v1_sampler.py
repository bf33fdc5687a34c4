"""Seam: runner V1's ``Sampler`` (``vllm/v1/sample/sampler.py``) and its runner.

Handles every release with runner V1 (:data:`~.versions.RUNNER_V1`: 0.24.0-0.33.0),
one shape in all of them (0.33.0 adds a ROCm-only fast path inside ``forward``, which
the override replaces). ``LogprobsTensors`` gained a fifth field with a default in
0.29.0 (``cu_num_generated_tokens_tensor``, :data:`~.versions.V1_LOGPROBS_CU_TENSOR`);
the override builds it from the first three fields only, so 0.24.0-0.28.0's four
fields serve it the same way.
:class:`~ead_vllm.vllm_ext.v1_sampler.EADSamplerV1` subclasses ``Sampler``, overrides
``forward`` with the same parameters, calls ``sample``, ``apply_logits_processors``,
``compute_logprobs`` and ``gather_logprobs``, and builds ``SamplingMetadata`` for a
sub-batch. (The V1 install wraps ``GPUModelRunner.__init__`` with ``*args,
**kwargs``; checking it would import the runner module into API-server processes.)
"""

from __future__ import annotations

import functools
from types import ModuleType, SimpleNamespace
from typing import Any

from ead_vllm.vllm_ext.seams.signature import Expectation, attr
from ead_vllm.vllm_ext.seams.versions import V1_LOGPROBS_CU_TENSOR

SAMPLER_MODULE = "vllm.v1.sample.sampler"
METADATA_MODULE = "vllm.v1.sample.metadata"
OUTPUTS_MODULE = "vllm.v1.outputs"
LOGPROBS_OPS_MODULE = "vllm.v1.sample.ops.logprobs"
TORCH_UTILS_MODULE = "vllm.utils.torch_utils"
RUNNER_MODULE = "vllm.v1.worker.gpu_model_runner"


def runner_class(module: ModuleType) -> Any:
    """Runner V1's ``GPUModelRunner`` from its (imported) module (the CPU runner subclasses
    it); its ``__init__`` is wrapped with ``*args, **kwargs``."""
    return module.GPUModelRunner


@functools.cache
def internals() -> SimpleNamespace:
    """Runner V1's sampler-side classes and helpers, imported on first use (they do not
    exist from vLLM 0.34.0 on, so nothing imports them at module level):
    ``Sampler``, ``SamplingMetadata``, ``SamplerOutput``, ``LogprobsTensors``,
    ``batched_count_greater_than`` and ``PIN_MEMORY``."""
    return SimpleNamespace(
        Sampler=attr(SAMPLER_MODULE, "Sampler"),
        SamplingMetadata=attr(METADATA_MODULE, "SamplingMetadata"),
        SamplerOutput=attr(OUTPUTS_MODULE, "SamplerOutput"),
        LogprobsTensors=attr(OUTPUTS_MODULE, "LogprobsTensors"),
        batched_count_greater_than=attr(LOGPROBS_OPS_MODULE, "batched_count_greater_than"),
        PIN_MEMORY=attr(TORCH_UTILS_MODULE, "PIN_MEMORY"),
    )


_COMMON: tuple[Expectation, ...] = (
    Expectation(
        f"{SAMPLER_MODULE}.Sampler.__init__",
        lambda: attr(SAMPLER_MODULE, "Sampler", "__init__"),
        ("self", "logprobs_mode", "use_fp64_gumbel"),
    ),
    Expectation(
        f"{SAMPLER_MODULE}.Sampler.forward",
        lambda: attr(SAMPLER_MODULE, "Sampler", "forward"),
        ("self", "logits", "sampling_metadata", "predict_bonus_token", "logprobs_mode_override"),
    ),
    Expectation(
        f"{SAMPLER_MODULE}.Sampler.sample",
        lambda: attr(SAMPLER_MODULE, "Sampler", "sample"),
        ("self", "logits", "sampling_metadata", "logprobs_mode_override"),
    ),
    Expectation(
        f"{SAMPLER_MODULE}.Sampler.apply_logits_processors",
        lambda: attr(SAMPLER_MODULE, "Sampler", "apply_logits_processors"),
        ("self", "logits", "sampling_metadata", "predict_bonus_token"),
    ),
    Expectation(
        f"{SAMPLER_MODULE}.Sampler.compute_logprobs",
        lambda: attr(SAMPLER_MODULE, "Sampler", "compute_logprobs"),
        ("logits",),
    ),
    Expectation(
        f"{SAMPLER_MODULE}.Sampler.gather_logprobs",
        lambda: attr(SAMPLER_MODULE, "Sampler", "gather_logprobs"),
        ("logprobs", "num_logprobs", "token_ids"),
    ),
    Expectation(
        f"{METADATA_MODULE}.SamplingMetadata",
        lambda: attr(METADATA_MODULE, "SamplingMetadata"),
        (
            "temperature",
            "all_greedy",
            "all_random",
            "top_p",
            "top_k",
            "generators",
            "max_num_logprobs",
            "no_penalties",
            "prompt_token_ids",
            "frequency_penalties",
            "presence_penalties",
            "repetition_penalties",
            "output_token_ids",
            "allowed_token_ids_mask",
            "bad_words_token_ids",
            "logitsprocs",
            "logprob_token_ids",
            "spec_token_ids",
            "thinking_budget_state_holder",
        ),
        fields=True,
    ),
    Expectation(
        f"{TORCH_UTILS_MODULE}.PIN_MEMORY", lambda: attr(TORCH_UTILS_MODULE, "PIN_MEMORY"), None
    ),
    Expectation(
        "vllm.v1.outputs.SamplerOutput",
        lambda: attr("vllm.v1.outputs", "SamplerOutput"),
        ("sampled_token_ids", "logprobs_tensors"),
        fields=True,
    ),
)


def expected(version: str) -> tuple[Expectation, ...]:
    """The signatures the V1 override relies on, for vLLM release ``version``."""
    # built positionally from the first three fields; the later ones have defaults
    fields = ("logprob_token_ids", "logprobs", "selected_token_ranks", "cu_num_generated_tokens")
    if V1_LOGPROBS_CU_TENSOR.holds(version):
        fields = (*fields, "cu_num_generated_tokens_tensor")
    return (
        *_COMMON,
        Expectation(
            f"{OUTPUTS_MODULE}.LogprobsTensors",
            lambda: attr(OUTPUTS_MODULE, "LogprobsTensors"),
            fields,
            fields=True,
        ),
    )
