"""The no-fork mode: EAD as a logits processor on a live engine (``EADLogitsProcessor``
on runner V1, ``EADLogitsProcessorV2`` on runner V2 with ``EAD_VLLM_TEST_RUNNER=v2``).

Same checks as the sampler override: exact per-position log-probs (oracle)
and, statistically, the same sampling distribution (chi-square against the
exact annealed distribution, which the fused path is held to as well in
``test_vllm_engine.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from vllm import SamplingParams
from vllm_engine_support import (
    RUNNER,
    first_token_pvalue,
    make_llm,
    model_runner,
    reported_logprobs,
    shutdown_llm,
    stock_sampler_class,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.live_engine,
    pytest.mark.v2_every_release,
]

if RUNNER == "v2":
    from ead_vllm.vllm_ext.seams.versions import V2_LOGITS_PROCESSORS, installed_release

    if not V2_LOGITS_PROCESSORS.holds(installed_release()):
        pytest.skip(
            f"runner V2 of vLLM {installed_release()} has no logits-processor API (0.31.0 "
            "added it; before, runner V2 ignores --logits-processors)",
            allow_module_level=True,
        )

LP = "ead_vllm.vllm_ext.logits_processors:EADLogitsProcessor" + ("V2" if RUNNER == "v2" else "")
EAD = {"ead_tau_max": 1.5, "ead_tau_min": 0.3, "ead_decay": 12.0}


@pytest.fixture(scope="module")
def llm(model_dir):
    engine = make_llm(model_dir, logits_processors=[LP])
    yield engine
    shutdown_llm(engine)


def test_processor_is_loaded_and_the_sampler_is_stock(llm):
    import ead_vllm.vllm_ext.logits_processors as lps

    runner = model_runner(llm)
    assert type(runner.sampler) is stock_sampler_class()
    if RUNNER == "v2":
        processors = runner.sampler.logits_processors
        assert any(isinstance(p, lps.EADLogitsProcessorV2) for p in processors)
    else:
        processors = runner.input_batch.logitsprocs.all
        assert any(isinstance(p, lps.EADLogitsProcessor) for p in processors)


def test_logprob_oracle_every_position(llm, oracle):
    prompts = ["4+", "5", "hello ", "x", "7+8="]
    common = dict(max_tokens=40, ignore_eos=True, logprobs=0)
    params = [
        SamplingParams(extra_args=EAD, **common),
        SamplingParams(temperature=0.7, extra_args={**EAD, "ead_warmup": 4}, **common),
        SamplingParams(temperature=0.8, **common),
        SamplingParams(temperature=0.9, top_k=6, extra_args=EAD, **common),
        SamplingParams(temperature=0.0, **common),
    ]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    for out, sp in zip(outputs, params, strict=True):
        got = reported_logprobs(out.outputs[0])
        ref = oracle.logprobs(out.prompt_token_ids, out.outputs[0].token_ids, sp)
        assert np.abs(got - ref).max() < 1e-3, sp


def test_sampling_distribution_matches_the_annealed_one(llm, oracle):
    pvalue = first_token_pvalue(llm, oracle, "5", {"ead_tau_max": 2.0, "ead_decay": 10.0}, 600)
    assert pvalue > 1e-3


def test_bad_extra_args_are_rejected_by_the_processor(llm):
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="ead_tau_min"):
        llm.generate(["5"], [SamplingParams(max_tokens=3, extra_args={"ead_tau_min": -2})])
