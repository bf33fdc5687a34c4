"""Groups are rollout instances: duplicate dataset rows in one batch are separate groups.

Rollouts go through OpenRLHF's real ``SamplesGenerator`` code with the
bridge's dispatch (``EADSamplesGenerator``) against stand-in engines that
answer like the bridge's engine (responses tagged by the bridge's own
``tag_responses``); ``ray.get``/``ray.wait`` are replaced by their identity on
these plain values (no Ray cluster). OpenRLHF's ``split_rollout_samples`` sets
``Experience.index``; stock ``RemoteExperienceMaker`` and the bridge's
``GroupedExperienceMaker`` then compute advantages on copies of the same
batch. CPU stub: ``flash_attn`` is stubbed while OpenRLHF's training modules
are imported (``openrlhf_bridge.testing``).
"""

from __future__ import annotations

import copy
import statistics
import types
from typing import Any

import pytest
import ray
import torch
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController
from openrlhf.utils.config import hierarchize

from openrlhf_bridge import train_ppo_ray
from openrlhf_bridge.experience import GroupedExperienceMaker
from openrlhf_bridge.rollout import EADSamplesGenerator
from openrlhf_bridge.sampling import INSTANCE_KEY, prompt_key, tag_responses
from openrlhf_bridge.state import BridgeState, RolloutRecord

N = 4
# Rows 0 and 1 are the same problem (same prompt, same label), as in many RLVR datasets.
ROWS = [("12+34=", "64"), ("12+34=", "64"), ("5+5=", "01")]
# Rewards of each request, in dispatch order: the duplicates' groups differ.
REWARDS = [[1.0, 1.0, 1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.0] * 3]
GRPO = [
    "--actor.model_name_or_path", "toy",
    "--reward.remote_url", "reward.py",
    "--vllm.num_engines", "1",
    "--algo.advantage.estimator", "group_norm",
    "--rollout.n_samples_per_prompt", str(N),
    "--rollout.batch_size", str(len(ROWS)),
    "--rollout.micro_batch_size", "2",
    "--algo.kl.init_coef", "0",
]  # fmt: skip
BUDGET = ["--e3.dynamic_budget", "--e3.n_min", "2", "--e3.n_max", "6"]


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class Engine:
    """Answers like the bridge's engine: each response of a request tagged with its instance."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.get_num_unfinished_requests = _Remote(lambda: 0)
        self.bridge_generate_responses = _Remote(self._generate)

    def _generate(self, *, instance, prompt, label, num_samples, **kwargs):
        rewards = REWARDS[len(self.requests)][:num_samples]
        self.requests.append({"instance": instance, "prompt": prompt, "n": num_samples})
        responses = [
            {
                "prompt": prompt,
                "label": label,
                "observation_tokens": [1, 2, 3, 4, 5, 6],
                "action_ranges": [(3, 6)],
                "rollout_log_probs": None,
                "reward": reward,
                "scores": reward,
                "truncated": False,
                "extra_logs": {},
            }
            for reward in rewards
        ]
        return tag_responses(responses, instance)


class _Strategy:
    def __init__(self, args: Any) -> None:
        self.args = args


@pytest.fixture
def last_first(monkeypatch):
    # requests complete in reverse order (completion order is arbitrary on a real engine)
    monkeypatch.setattr(ray, "get", lambda value, **_: value)
    monkeypatch.setattr(ray, "wait", lambda refs, **_: (refs[-1:], refs[:-1]))


def rollout(*flags: str, estimator: str = "group_norm", difficulty: dict | None = None):
    namespace, config = train_ppo_ray.parse_args(
        [*GRPO, "--algo.advantage.estimator", estimator, *flags]
    )
    args = hierarchize(namespace)
    bridge = BridgeState(config, default_n=N, base_temperature=1.0, seed=0)
    for key, rewards in (difficulty or {}).items():
        bridge.record(key, rewards)
    if difficulty:
        bridge.end_epoch()  # rank the prompts; [n_min, n_max] = [2, 6]
    engine = Engine()
    loader = [(["default"], [p for p, _ in ROWS], [lab for _, lab in ROWS], [None] * len(ROWS))]
    generator = EADSamplesGenerator(
        strategy=_Strategy(args),
        prompts_dataloader=loader,
        eval_dataloader=None,
        tokenizer=None,
        vllm_engines=[engine],
        bridge=bridge,
    )
    samples, _, _, _ = generator.generate_samples(max_len=64, max_new_tokens=8, temperature=1.0)
    return args, bridge, engine, samples


def make(maker_cls, args, bridge=None):
    """``maker_cls`` as OpenRLHF's trainer builds it (no model groups: no forward runs here)."""
    kwargs = {"bridge": bridge} if maker_cls is GroupedExperienceMaker else {}
    tokenizer = types.SimpleNamespace(pad_token_id=0)
    return maker_cls(
        None, None, None, None, FixedKLController(0.0), _Strategy(args), tokenizer, **kwargs
    )


def advantages(maker_cls, args, bridge, samples) -> list[float]:
    """The per-sample advantage by ``maker_cls`` on a copy of the batch, in rollout order."""
    maker = make(maker_cls, args, bridge)
    batch = maker.split_rollout_samples(copy.deepcopy(samples))  # OpenRLHF sets index here
    for exp in batch:
        exp.kl = torch.zeros(exp.action_mask.shape)
        exp.values = torch.zeros(exp.action_mask.shape)
    out: dict[int, float] = {}
    for exp in maker.compute_advantages_and_returns(batch):
        for index, adv in zip(exp.index, exp.advantages[:, 0].tolist(), strict=True):
            out[index] = adv
    return [out[i] for i in range(len(out))]


def rollout_order_rewards(samples) -> list[float]:
    return [float(s.rewards[0]) for s in samples]


@pytest.mark.parametrize("estimator", ["group_norm", "dr_grpo", "rloo", "reinforce_baseline"])
def test_duplicate_rows_are_two_groups_like_stock(estimator, last_first):
    args, bridge, engine, samples = rollout("--ead.enable", "--ead.d0", "100", estimator=estimator)
    assert [r["prompt"] for r in engine.requests] == [p for p, _ in ROWS]
    assert len({r["instance"] for r in engine.requests}) == 3  # one instance per dispatch
    # The record the trainer gets: three instances, the duplicates sharing one prompt key.
    record = bridge.rollout
    assert len(record.instances) == len(samples) == 3 * N and len(set(record.instances)) == 3
    assert len(set(record.keys)) == 2
    stock = advantages(RemoteExperienceMaker, args, bridge, samples)
    ours = advantages(GroupedExperienceMaker, args, bridge, samples)
    assert ours == pytest.approx(stock, abs=1e-6)
    # and the duplicates were not merged into one group of 2n (which changes the values)
    rewards = rollout_order_rewards(samples)
    if estimator == "group_norm":
        first = [
            r for r, i in zip(rewards, record.instances, strict=True) if i == record.instances[0]
        ]
        mean = sum(first) / len(first)
        assert ours[0] == pytest.approx((rewards[0] - mean) / (statistics.stdev(first) + 1e-9))


def hand_group_norm(rewards: list[float], groups: list[int]) -> list[float]:
    out = []
    for reward, group in zip(rewards, groups, strict=True):
        members = [r for r, g in zip(rewards, groups, strict=True) if g == group]
        if len(members) < 2:
            out.append(0.0)
            continue
        mean = sum(members) / len(members)
        out.append((reward - mean) / (statistics.stdev(members) + 1e-9))
    return out


def test_duplicate_rows_with_the_dynamic_budget_stay_separate_unequal_groups(last_first):
    # 12+34= is harder than 5+5= (mean reward 0.25 vs 0.75): the duplicates get more samples
    hard, easy = prompt_key(*ROWS[0]), prompt_key(*ROWS[2])
    args, bridge, engine, samples = rollout(
        *BUDGET, difficulty={hard: [1.0, 0.0, 0.0, 0.0], easy: [1.0, 1.0, 1.0, 0.0]}
    )
    counts = [r["n"] for r in engine.requests]
    assert sum(counts) == 3 * N and counts[0] >= counts[2] + 1 and counts[1] >= counts[2] + 1
    record = bridge.rollout
    sizes = {i: record.instances.count(i) for i in record.instances}
    by_instance = {r["instance"]: r["n"] for r in engine.requests}
    assert sizes == by_instance  # each instance is one group, of its dispatch's size
    ours = advantages(GroupedExperienceMaker, args, bridge, samples)
    rewards = rollout_order_rewards(samples)
    assert ours == pytest.approx(hand_group_norm(rewards, record.instances), abs=1e-6)
    merged = [0 if key == hard else 1 for key in record.keys]  # what a prompt-text key gives
    assert ours != pytest.approx(hand_group_norm(rewards, merged), abs=1e-3)
    # each instance is one observation of its prompt's difficulty
    stats = bridge.allocator.stats(reset=False)
    assert stats["prompts_recorded"] == 2 + 3  # the two ranking records, then three instances


def bare_experiences(rewards: list[float]) -> list[Experience]:
    """Experiences as OpenRLHF's defaults leave them: ``prompts`` and ``labels`` empty."""
    singles = [
        Experience(
            sequences=torch.ones(1, 5, dtype=torch.long),
            attention_mask=torch.ones(1, 5, dtype=torch.long),
            action_mask=torch.ones(1, 4, dtype=torch.long),
            kl=torch.zeros(1, 4),
            values=torch.zeros(1, 4),
            rewards=torch.tensor([reward]),
            response_length=torch.tensor([4]),
            truncated=torch.tensor([False]),
            index=[i],
            info={},
        )
        for i, reward in enumerate(rewards)
    ]
    assert singles[0].prompts == [] and singles[0].labels == []
    return [Experience.concat_experiences(singles[i : i + 2], 0) for i in range(0, len(singles), 2)]


@pytest.mark.parametrize("estimator", ["gae", "reinforce"])
def test_empty_prompts_without_the_budget_run_openrlhf_code(estimator):
    namespace, config = train_ppo_ray.parse_args(
        [*GRPO, "--algo.advantage.estimator", estimator, "--ead.enable", "--ead.d0", "100"]
    )
    args = hierarchize(namespace)
    rewards = [1.0, 0.0, 0.5, 0.25]
    bridge = BridgeState(config, default_n=N, base_temperature=1.0)
    makers = [make(GroupedExperienceMaker, args, bridge), make(RemoteExperienceMaker, args)]
    ours, stock = (m.compute_advantages_and_returns(bare_experiences(rewards)) for m in makers)
    for a, b in zip(ours, stock, strict=True):
        assert torch.equal(a.advantages, b.advantages) and torch.equal(a.returns, b.returns)


def test_empty_prompts_with_the_budget_use_the_rollout_record():
    namespace, config = train_ppo_ray.parse_args([*GRPO, *BUDGET])
    args = hierarchize(namespace)
    bridge = BridgeState(config, default_n=N, base_temperature=1.0)
    rewards = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    bridge.rollout = RolloutRecord(instances=[7] * 4 + [9] * 4, keys=["a"] * 4 + ["b"] * 4)
    maker = make(GroupedExperienceMaker, args, bridge)
    experiences = maker.compute_advantages_and_returns(bare_experiences(rewards))
    got = torch.cat([e.advantages[:, 0] for e in experiences]).tolist()
    assert got == pytest.approx(hand_group_norm(rewards, [0] * 4 + [1] * 4), abs=1e-6)
    assert bridge.allocator.stats(reset=False)["prompts_recorded"] == 2


def test_a_batch_the_record_does_not_describe_is_refused():
    namespace, config = train_ppo_ray.parse_args([*GRPO, *BUDGET])
    bridge = BridgeState(config, default_n=N, base_temperature=1.0)
    maker = make(GroupedExperienceMaker, hierarchize(namespace), bridge)
    with pytest.raises(RuntimeError, match="no rollout record"):
        maker.compute_advantages_and_returns(bare_experiences([1.0, 0.0]))
    bridge.rollout = RolloutRecord(instances=[0, 0, 1], keys=["a", "a", "b"])
    with pytest.raises(RuntimeError, match="not the same batch"):
        maker.compute_advantages_and_returns(bare_experiences([1.0, 0.0]))


def test_engine_responses_carry_their_instance():
    tagged = tag_responses([{"prompt": "p", "reward": 1.0}, {"prompt": "p", "reward": 0.0}], 5)
    assert [r[INSTANCE_KEY] for r in tagged] == [5, 5] and tagged[0]["reward"] == 1.0
