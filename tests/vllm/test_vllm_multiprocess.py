"""The plugin activates the EAD sampler in a freshly spawned engine-core process.

Everything else runs the engine in-process; here vLLM's default multi-process
engine is started with the ``spawn`` method, so the engine core (and its
worker) is a new interpreter that must load ead-vllm through the
``vllm.general_plugins`` entry point on its own. Proof that it did: the
returned processed log-probs are the annealed ones at every position.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from vllm import SamplingParams
from vllm_engine_support import (
    MP_EAD,
    MP_TEMPERATURES,
    RUNNER,
    Oracle,
    engine_model_dir,
    run_support_script,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.live_engine,
]


def test_spawned_engine_core_uses_the_ead_sampler(tmp_path_factory):
    model = engine_model_dir(tmp_path_factory.mktemp("vllm-mp-model"))
    env = {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    rows, log = run_support_script("ead-multiprocess", model, env, with_log=True)
    # the spawned engine core built the EAD sampler on the runner the tests asked for
    assert f"EAD sampler installed on model runner {RUNNER.upper()}" in log, log[-3000:]
    oracle = Oracle(model)
    for row, temperature in zip(rows, MP_TEMPERATURES, strict=True):
        params = SamplingParams(temperature=temperature, extra_args=MP_EAD)
        ref = oracle.logprobs(row["prompt_token_ids"], row["token_ids"], params)
        assert np.abs(np.array(row["logprobs"]) - ref).max() < 1e-3
        # and not the plain temperature-T distribution a stock sampler would report
        plain = oracle.logprobs(
            row["prompt_token_ids"], row["token_ids"], SamplingParams(temperature=temperature)
        )
        assert np.abs(np.array(row["logprobs"]) - plain).max() > 1e-2
