"""The no-fork mode: EAD as a runner-V1 logits processor on a live engine.

Same checks as the sampler override: exact per-position log-probs (oracle)
and, statistically, the same sampling distribution (chi-square against the
exact annealed distribution, which the fused path is held to as well in
``test_vllm_engine.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm_engine_support import (  # noqa: E402
    Oracle,
    engine_model_dir,
    first_token_pvalue,
    make_llm,
    model_runner,
    reported_logprobs,
    shutdown_llm,
)

pytestmark = pytest.mark.slow

LP = "ead_vllm.vllm_ext.logits_processors:EADLogitsProcessor"
EAD = {"ead_tau_max": 1.5, "ead_tau_min": 0.3, "ead_decay": 12.0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return engine_model_dir(tmp_path_factory.mktemp("vllm-lp-model"))


@pytest.fixture(scope="module")
def llm(model_dir):
    engine = make_llm(model_dir, logits_processors=[LP])
    yield engine
    shutdown_llm(engine)


@pytest.fixture(scope="module")
def oracle(model_dir):
    return Oracle(model_dir)


def test_processor_is_loaded_and_the_sampler_is_stock(llm):
    from vllm.v1.sample.sampler import Sampler

    from ead_vllm.vllm_ext.logits_processors import EADLogitsProcessor

    runner = model_runner(llm)
    assert type(runner.sampler) is Sampler
    assert any(isinstance(p, EADLogitsProcessor) for p in runner.input_batch.logitsprocs.all)


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
