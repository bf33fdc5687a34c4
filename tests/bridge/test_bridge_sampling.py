"""The rollout requests the bridge builds: SamplingParams (extra_args, temperature), n per prompt.

Runs OpenRLHF's real ``SamplesGenerator`` code (``generate_samples`` ->
``_generate_vllm`` -> the bridge's ``_dispatch_prompts_to_vllm`` ->
``_process_response_into_experience``) against stand-in engines that record
each request; ``ray.get``/``ray.wait`` are replaced by their identity on
these plain values (no Ray cluster). CPU stub: ``flash_attn`` is stubbed while
OpenRLHF's training modules are imported (``openrlhf_bridge.testing``).
"""

from __future__ import annotations

from typing import Any

import pytest
import ray
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.utils.config import hierarchize

from ead_vllm.controllers import RolloutBudgetAllocator
from ead_vllm.params import EADParams
from ead_vllm.toy import problems
from openrlhf_bridge import train_ppo_ray
from openrlhf_bridge.rollout import EADSamplesGenerator, balance_engines
from openrlhf_bridge.sampling import prompt_key, tag_responses
from openrlhf_bridge.state import BridgeState

N = 8
BATCH = 4
BASE = [
    "--actor.model_name_or_path", "toy",
    "--reward.remote_url", "reward.py",
    "--vllm.num_engines", "2",
    "--algo.advantage.estimator", "group_norm",
    "--rollout.n_samples_per_prompt", str(N),
    "--rollout.batch_size", str(BATCH),
    "--rollout.temperature", "0.9",
    "--rollout.max_new_tokens", "16",
    "--eval.temperature", "0.6",
    "--eval.n_samples_per_prompt", "2",
]  # fmt: skip
EAD_BUDGET = [
    "--ead.enable", "--ead.preset", "reference",
    "--e3.dynamic_budget", "--e3.n_min", "4", "--e3.n_max", "12", "--e3.widen", "2",
]  # fmt: skip


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class FakeEngine:
    """Records each ``generate_responses`` request; answers with toy-task responses.

    ``bridge_generate_responses`` is the bridge engine's method: the same
    request, its responses tagged by the bridge's own ``tag_responses``.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.get_num_unfinished_requests = _Remote(lambda: 0)
        self.generate_responses = _Remote(self._generate)
        self.bridge_generate_responses = _Remote(
            lambda instance, **kwargs: tag_responses(self._generate(**kwargs), instance)
        )

    def _generate(self, *, prompt, label, sampling_params, num_samples, **kwargs):
        self.requests.append(
            dict(prompt=prompt, label=label, params=sampling_params, n=num_samples, **kwargs)
        )
        solved = label.endswith("1")  # a fixed difficulty pattern for the tests
        return [
            {
                "prompt": prompt,
                "label": label,
                "observation_tokens": [1, 2, 3, 4, 5],
                "action_ranges": [(3, 5)],
                "rollout_log_probs": [0.0, 0.0, 0.0, -0.5, -0.25],
                "reward": float(solved),
                "scores": float(solved),
                "truncated": False,
                "extra_logs": {},
            }
            for _ in range(num_samples)
        ]


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setattr(ray, "get", lambda value, **_: value)
    monkeypatch.setattr(ray, "wait", lambda refs, **_: (refs[:1], refs[1:]))


class _Strategy:
    def __init__(self, args: Any) -> None:
        self.args = args


def make_generator(flags: list[str], num_prompts: int = 8):
    namespace, config = train_ppo_ray.parse_args([*BASE, *flags])
    args = hierarchize(namespace)
    bridge = BridgeState(
        config, default_n=N, base_temperature=0.9, vocab_size=20, total_steps=10, seed=0
    )
    items = problems(num_prompts, seed=1, split="train")
    loader = [(["default"], [p.prompt], [p.answer], [None]) for p in items]
    engines = [FakeEngine(), FakeEngine()]
    generator = EADSamplesGenerator(
        strategy=_Strategy(args),
        prompts_dataloader=loader,
        eval_dataloader=loader[:2],
        tokenizer=None,
        vllm_engines=engines,
        bridge=bridge,
    )
    kwargs = dict(
        do_sample=True, max_len=64, max_new_tokens=16, temperature=0.9, top_p=1.0
    )  # what PPOTrainer passes
    return generator, bridge, engines, kwargs, items


def all_requests(engines):
    return [r for e in engines for r in e.requests]


def test_prompt_key_is_stable_and_distinguishes_labels():
    assert prompt_key("1+2=", "3") == prompt_key("1+2=", "3")
    assert prompt_key("1+2=", "3") != prompt_key("1+2=", "4")
    assert prompt_key("1+2=", None) != prompt_key("1+2=", "None")


def test_sampling_params_for_a_step_and_a_prompt():
    generator, bridge, _, kwargs, items = make_generator(EAD_BUDGET)
    bridge.step = 7
    plan = generator.rollout_plan(
        [p.prompt for p in items[:4]], [p.answer for p in items[:4]], **kwargs
    )
    assert [n for _, n in plan] == [N] * 4  # first epoch: n_min = n_max = n
    for params, _ in plan:
        assert params.extra_args == EADParams.reference_recipe(7).to_extra_args()
        assert params.extra_args["ead_decay"] == 20 * (25 + 5 * 7)
        assert params.temperature == pytest.approx(0.9)
        assert params.max_tokens == 16 and params.top_p == 1.0
        # TIS: OpenRLHF's IS correction needs the rollout log-probs, of the sampled token only
        # (logprobs=0; OpenRLHF's logprobs=1 also ranks a top-1 token over the whole vocabulary)
        assert params.logprobs == 0


def reference_allocation(prompts, labels, rewards, epochs):
    """What E3's allocator gives for these records, built independently of the bridge."""
    allocator = RolloutBudgetAllocator(N, n_min_limit=4, n_max_limit=12, widen_per_epoch=2, seed=0)
    for p, label, reward in zip(prompts, labels, rewards, strict=True):
        allocator.record(prompt_key(p, label), [reward] * N)
    for _ in range(epochs):
        allocator.end_epoch()
    return allocator.allocate([prompt_key(p, lab) for p, lab in zip(prompts, labels, strict=True)])


def test_n_per_prompt_follows_difficulty_and_keeps_the_batch_total():
    generator, bridge, _, kwargs, items = make_generator(EAD_BUDGET)
    prompts, labels = [p.prompt for p in items[:4]], [p.answer for p in items[:4]]
    rewards = [1.0, 0.0, 1.0, 0.0]
    for p, label, reward in zip(prompts, labels, rewards, strict=True):
        bridge.record(prompt_key(p, label), [reward] * N)
    bridge.end_epoch()  # epoch 1: [n_min, n_max] = [6, 10]
    counts = [n for _, n in generator.rollout_plan(prompts, labels, **kwargs)]
    assert counts == reference_allocation(prompts, labels, rewards, 1) == [7, 9, 7, 9]
    assert sum(counts) == BATCH * N
    for _ in range(3):
        bridge.end_epoch()
    assert (bridge.allocator.n_min, bridge.allocator.n_max) == (4, 12)  # limits reached
    counts = [n for _, n in generator.rollout_plan(prompts, labels, **kwargs)]
    assert counts == reference_allocation(prompts, labels, rewards, 4)
    assert sum(counts) == BATCH * N and counts[1] > counts[0] and counts[3] > counts[2]


def test_dispatch_sends_each_prompt_its_params_and_n(no_ray):
    generator, bridge, engines, kwargs, items = make_generator(EAD_BUDGET)
    prompts, labels = [p.prompt for p in items[:4]], [p.answer for p in items[:4]]
    for p, label, reward in zip(prompts, labels, [1.0, 0.0, 1.0, 0.0], strict=True):
        bridge.record(prompt_key(p, label), [reward] * N)
    bridge.end_epoch()
    bridge.step = 3
    refs = generator._dispatch_prompts_to_vllm(prompts, labels, **kwargs)
    requests = all_requests(engines)
    assert len(refs) == 4 and sorted(r["prompt"] for r in requests) == sorted(prompts)
    by_prompt = {r["prompt"]: r for r in requests}
    assert [by_prompt[p]["n"] for p in prompts] == [7, 9, 7, 9]
    for r in requests:
        assert r["params"].extra_args == EADParams.reference_recipe(3).to_extra_args()
        assert r["max_length"] == 64
    # engines are balanced by samples, not by prompts
    assert [sum(r["n"] for r in e.requests) for e in engines] == [14, 18]


def test_balance_engines_counts_samples():
    assert balance_engines([0, 0], [10, 6, 6, 10]) == [0, 1, 1, 0]
    assert balance_engines([5, 0, 0], [1, 1, 1]) == [1, 2, 1]


def test_temperature_comes_from_the_controller():
    generator, bridge, _, kwargs, items = make_generator(["--e3.temperature_controller"])
    bridge.controller.update(2.0)  # warm-up step: H_init = 2; Eq. (4) applied with alpha = 1
    bridge.controller.update(1.0)  # entropy halved: temperature goes up
    assert bridge.temperature > 0.9
    ((params, n),) = generator.rollout_plan([items[0].prompt], [items[0].answer], **kwargs)
    assert params.temperature == pytest.approx(bridge.temperature)
    assert params.extra_args is None and params.logprobs is None and n == N


def test_training_rollouts_make_experiences_and_close_each_pass(no_ray):
    generator, bridge, engines, kwargs, _ = make_generator(EAD_BUDGET, num_prompts=8)
    samples, _, consumed, exhausted = generator.generate_samples(**kwargs)
    assert (consumed, exhausted, len(samples)) == (BATCH, False, BATCH * N)
    assert all(isinstance(s, Experience) for s in samples)
    assert samples[0].rollout_log_probs.tolist() == [[0.0, 0.0, -0.5, -0.25]]
    samples, _, consumed, exhausted = generator.generate_samples(**kwargs)
    assert (consumed, exhausted, len(samples)) == (BATCH, False, BATCH * N)
    assert bridge.allocator.epoch == 0
    # OpenRLHF notices the end of the pass on the next call, which has no samples
    # (PPOTrainer.fit then leaves the episode without a train step): the epoch ends now.
    samples, _, consumed, exhausted = generator.generate_samples(**kwargs)
    assert (consumed, exhausted, samples) == (0, True, [])
    assert bridge.allocator.epoch == 1 and not bridge.pending_epoch_end
    # the next pass starts over the dataset
    samples, _, consumed, exhausted = generator.generate_samples(**kwargs)
    assert (consumed, exhausted, len(samples)) == (BATCH, False, BATCH * N)


def test_a_partial_last_batch_ends_the_pass_after_its_step(no_ray):
    generator, bridge, engines, kwargs, _ = make_generator(EAD_BUDGET, num_prompts=6)
    generator.generate_samples(**kwargs)
    samples, _, consumed, exhausted = generator.generate_samples(**kwargs)
    assert (consumed, exhausted, len(samples)) == (2, True, 2 * N)
    assert bridge.pending_epoch_end and bridge.allocator.epoch == 0
    bridge.finish_step()  # the trainer closes the step after training on that batch
    assert bridge.allocator.epoch == 1 and not bridge.pending_epoch_end


def test_evaluation_uses_openrlhf_stock_requests(no_ray):
    generator, bridge, engines, kwargs, _ = make_generator(EAD_BUDGET)
    eval_kwargs = dict(kwargs, temperature=0.6, n_samples_per_prompt=2)
    samples = generator.generate_eval_samples(**eval_kwargs)
    assert len(samples) == 2 * 2
    for r in all_requests(engines):
        assert r["n"] == 2
        assert r["params"].temperature == pytest.approx(0.6)
        assert not r["params"].extra_args  # no EAD at evaluation
    assert bridge.allocator.stats(reset=False)["prompts_recorded"] == 0
