"""Engine-wide EAD defaults on a live engine (both runners): requests that cannot carry
``ead_*`` keys are annealed with the engine's defaults, keys go over them, and
``ead_enabled: 0`` opts a request out. Every token is checked against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from vllm import SamplingParams
from vllm_engine_support import (
    Oracle,
    make_llm,
    reported_logprobs,
    shutdown_llm,
)

from ead_vllm.params import EADParams

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.live_engine]

DEFAULTS = EADParams(tau_max=1.6, tau_min=0.4, decay=9.0, warmup=1)


@pytest.fixture(scope="module")
def llm(model_dir):
    engine = make_llm(
        model_dir,
        additional_config={"sampler": "ead", "ead_defaults": DEFAULTS.model_dump()},
    )
    yield engine
    shutdown_llm(engine)


def test_defaults_anneal_requests_without_keys_and_a_request_can_opt_out(llm, model_dir):
    common = dict(max_tokens=24, ignore_eos=True, logprobs=0, temperature=0.9)
    sent = [
        SamplingParams(seed=1, **common),  # no keys: the defaults
        SamplingParams(seed=2, extra_args={"ead_decay": 30.0}, **common),  # over them
        SamplingParams(seed=3, extra_args={"ead_enabled": 0}, **common),  # opted out
        SamplingParams(seed=4, extra_args={"other": "x"}, **common),  # no ead_* key
    ]
    # what the oracle must assume for each
    meant = [
        DEFAULTS.to_extra_args(),
        DEFAULTS.model_copy(update={"decay": 30.0}).to_extra_args(),
        None,
        DEFAULTS.to_extra_args(),
    ]
    outs = llm.generate(["4+", "hello ", "7+8=", "x"], sent, use_tqdm=False)
    oracle = Oracle(model_dir)
    for out, params, extra in zip(outs, sent, meant, strict=True):
        got = reported_logprobs(out.outputs[0])
        want = SamplingParams(**common, extra_args=extra)
        ref = oracle.logprobs(out.prompt_token_ids, out.outputs[0].token_ids, want)
        assert np.abs(got - ref).max() < 1e-3, params
        if extra is not None:  # and not the unannealed distribution
            plain = oracle.logprobs(
                out.prompt_token_ids, out.outputs[0].token_ids, SamplingParams(**common)
            )
            assert np.abs(got - plain).max() > 0.05, params
