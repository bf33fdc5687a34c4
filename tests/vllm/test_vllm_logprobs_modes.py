"""Every log-probs mode on a live engine with the EAD sampler (both runners).

``processed_logprobs`` (the RL mode) is checked against the oracle everywhere else;
here the other three modes, one engine each:

* seeded non-EAD rows of a mixed batch are bit-identical to the same rows in a batch
  without EAD rows (so to stock vLLM: ``test_vllm_default_off.py`` ties that batch,
  unseeded rows included, to an engine without the plugin; unseeded rows are left out
  here because the two batches run one after the other, from different generator
  states);
* seeded EAD rows draw the same tokens in every mode (the noise does not depend on
  what is reported);
* EAD rows report what the mode promises: ``raw_logprobs`` the model's own
  log-probs and ``raw_logits`` its logits, before any processing (so not annealed);
  ``processed_logits`` the logits the token was drawn from, ``logits / (T * tau_t)``
  (the transformers oracle's logits, divided by the schedule).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vllm import SamplingParams
from vllm_engine_support import (
    EAD_KEYS,
    Oracle,
    make_llm,
    reported_logprobs,
    shutdown_llm,
)

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.live_engine]

MODES = ("raw_logprobs", "raw_logits", "processed_logits")
PROMPTS = ["4+", "hello ", "7+8=", "x"]


def requests(with_ead: bool) -> list[SamplingParams]:
    common = dict(max_tokens=16, ignore_eos=True, logprobs=0)
    params = [
        SamplingParams(temperature=1.0, seed=11, **common),
        SamplingParams(temperature=0.9, seed=12, **common),
        SamplingParams(temperature=1.1, seed=13, min_p=0.05, **common),
        SamplingParams(temperature=0.8, seed=14, top_k=20, **common),
    ]
    if with_ead:
        params[1].extra_args = dict(EAD_KEYS)
        params[3].extra_args = dict(EAD_KEYS)
    return params


def run(llm, params):
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    return [
        (
            list(o.prompt_token_ids),
            list(o.outputs[0].token_ids),
            reported_logprobs(o.outputs[0]).tolist(),
        )
        for o in outs
    ]


@pytest.fixture(scope="module")
def results(model_dir):
    out = {}
    for mode in MODES:
        llm = make_llm(model_dir, additional_config={"sampler": "ead"}, logprobs_mode=mode)
        try:
            out[mode] = {"plain": run(llm, requests(False)), "mixed": run(llm, requests(True))}
        finally:
            shutdown_llm(llm)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_non_ead_rows_are_untouched_in_every_mode(results, mode):
    plain, mixed = results[mode]["plain"], results[mode]["mixed"]
    for i, params in enumerate(requests(True)):
        if not params.extra_args:
            assert mixed[i] == plain[i], (mode, i)


def test_seeded_ead_tokens_do_not_depend_on_the_mode(results):
    tokens = {mode: [results[mode]["mixed"][i][1] for i in (1, 3)] for mode in MODES}
    assert tokens["raw_logprobs"] == tokens["raw_logits"] == tokens["processed_logits"]


def test_ead_rows_report_what_the_mode_promises(results, model_dir):
    oracle = Oracle(model_dir)
    params = requests(True)
    for i in (1, 3):
        prompt, out, raw_lp = results["raw_logprobs"]["mixed"][i]
        logits = oracle.logits(prompt + out)[len(prompt) - 1 : -1]
        picked = logits.gather(-1, torch.tensor(out)[:, None])[:, 0]
        want_lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out)[:, None])[:, 0]
        np.testing.assert_allclose(raw_lp, want_lp.numpy(), atol=1e-3)
        _, out_l, raw_logits = results["raw_logits"]["mixed"][i]
        assert out_l == out
        np.testing.assert_allclose(raw_logits, picked.numpy(), atol=1e-3)
        # processed logits: the sampled distribution's logits, logits / (T * tau_t) (the
        # masks leave a kept token's logit as it is)
        _, out_p, processed = results["processed_logits"]["mixed"][i]
        assert out_p == out
        temperature = np.array([params[i].temperature * _tau(t) for t in range(len(out))])
        np.testing.assert_allclose(processed, picked.numpy() / temperature, atol=1e-3)


def _tau(t: int) -> float:
    from ead_vllm.params import EADParams

    return EADParams.from_extra_args(EAD_KEYS).temperature_at(float(t))
