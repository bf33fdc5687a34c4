"""Group-relative advantages grouped by prompt, on unequal groups, against a hand computation.

Also runs OpenRLHF 0.11.2's stock ``RemoteExperienceMaker.compute_advantages_and_returns``
on the same experiences to show that its ``reshape(-1, n_samples_per_prompt)``
mixes prompts when groups are unequal. CPU stub: ``flash_attn`` is stubbed
while OpenRLHF's training modules are imported (``openrlhf_bridge.testing``).
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController
from openrlhf.utils.config import hierarchize

from openrlhf_bridge import train_ppo_ray
from openrlhf_bridge.advantages import group_ids, group_relative_rewards
from openrlhf_bridge.experience import GroupedExperienceMaker
from openrlhf_bridge.sampling import prompt_key
from openrlhf_bridge.state import BridgeState, RolloutRecord

N = 4
# Two prompts, the budget gave A six samples and B two (total 8 = 2 prompts * 4).
# Order as the generator returns them: one prompt's samples together, prompts by completion.
SAMPLES = [("B", 1.0), ("B", 0.0)] + [("A", r) for r in (1.0, 1.0, 0.0, 0.0, 0.0, 0.0)]
LENGTHS = [3, 5, 2, 4, 4, 1, 3, 5]


class _Strategy:
    def __init__(self, args):
        self.args = args


def make_args(estimator: str, *extra: str):
    namespace, config = train_ppo_ray.parse_args(
        [
            "--actor.model_name_or_path", "toy",
            "--reward.remote_url", "reward.py",
            "--vllm.num_engines", "1",
            "--algo.advantage.estimator", estimator,
            "--rollout.n_samples_per_prompt", str(N),
            "--algo.kl.init_coef", "0",
            *extra,
        ]
    )  # fmt: skip
    return hierarchize(namespace), config


def make_experiences(samples, lengths, micro_batch=2):
    singles = []
    for i, ((prompt, reward), length) in enumerate(zip(samples, lengths, strict=True)):
        mask = torch.zeros(1, 6, dtype=torch.long)
        mask[0, :length] = 1
        singles.append(
            Experience(
                sequences=torch.ones(1, 7, dtype=torch.long),
                attention_mask=torch.ones(1, 7, dtype=torch.long),
                action_mask=mask,
                kl=torch.zeros(1, 6),
                rewards=torch.tensor([reward]),
                scores=torch.tensor([reward]),
                response_length=torch.tensor([length]),
                truncated=torch.tensor([False]),
                prompts=[f"prompt {prompt}"],
                labels=[f"label {prompt}"],
                index=[i],  # what split_rollout_samples sets
                info={},
            )
        )
    return [
        Experience.concat_experiences(singles[i : i + micro_batch], 0)
        for i in range(0, len(singles), micro_batch)
    ]


def hand_shaped(samples, estimator):
    """The group-relative reward of each sample, computed by hand per prompt."""
    groups: dict[str, list[float]] = {}
    for prompt, reward in samples:
        groups.setdefault(prompt, []).append(reward)
    out = []
    for prompt, reward in samples:
        rs = groups[prompt]
        n, mean = len(rs), sum(rs) / len(rs)
        if n == 1:
            out.append(0.0)
        elif estimator == "rloo":
            out.append(reward - (sum(rs) - reward) / (n - 1))
        elif estimator == "group_norm":
            out.append((reward - mean) / (statistics.stdev(rs) + 1e-9))
        else:  # dr_grpo, reinforce_baseline (before whitening)
            out.append(reward - mean)
    return out


def per_sample(experiences, field):
    rows = []
    for exp in experiences:
        rows.extend(getattr(exp, field))
    return rows


def sample_advantage(experiences):
    """The (constant) advantage over each sample's action tokens, checking it is constant."""
    out = []
    advantages = per_sample(experiences, "advantages")
    rows = zip(advantages, per_sample(experiences, "action_mask"), strict=True)
    for adv, mask in rows:
        values = adv[mask.bool()]  # (OpenRLHF's whitening also shifts masked positions)
        assert torch.allclose(values, values[0].expand_as(values))
        out.append(float(values[0]))
    return out


def rollout_record(samples) -> RolloutRecord:
    """What the bridge's generator records for ``samples``: each letter is one rollout instance."""
    letters = [prompt for prompt, _ in samples]
    return RolloutRecord(
        instances=[letters.index(p) for p in letters],
        keys=[prompt_key(f"prompt {p}", f"label {p}") for p in letters],
    )


def run(maker_cls, estimator, samples=SAMPLES, lengths=LENGTHS, *extra, bridge=None):
    args, config = make_args(estimator, *extra)
    bridge = bridge or BridgeState(config, default_n=N, base_temperature=1.0)
    bridge.rollout = rollout_record(samples)
    kwargs = {"bridge": bridge}
    maker = maker_cls(None, None, None, None, FixedKLController(0.0), _Strategy(args), None,
                      **(kwargs if maker_cls is GroupedExperienceMaker else {}))  # fmt: skip
    return maker.compute_advantages_and_returns(make_experiences(samples, lengths))


@pytest.mark.parametrize("estimator", ["group_norm", "dr_grpo", "rloo"])
def test_unequal_groups_equal_hand_computation(estimator):
    experiences = run(GroupedExperienceMaker, estimator)
    expected = hand_shaped(SAMPLES, estimator)
    assert sample_advantage(experiences) == pytest.approx(expected, abs=1e-6)
    sizes = torch.cat([e.info["group_size"] for e in experiences]).tolist()
    assert sizes == [2, 2, 6, 6, 6, 6, 6, 6]
    stds = torch.cat([e.info["group_reward_std"] for e in experiences]).tolist()
    assert stds[0] == pytest.approx(statistics.stdev([1.0, 0.0]))
    assert stds[2] == pytest.approx(statistics.stdev([1, 1, 0, 0, 0, 0]))


def test_reinforce_baseline_whitens_like_openrlhf():
    experiences = run(GroupedExperienceMaker, "reinforce_baseline")
    raw = hand_shaped(SAMPLES, "reinforce_baseline")
    tokens = [v for v, length in zip(raw, LENGTHS, strict=True) for _ in range(length)]
    mean = sum(tokens) / len(tokens)
    std = math.sqrt(sum((v - mean) ** 2 for v in tokens) / len(tokens))
    assert sample_advantage(experiences) == pytest.approx([(v - mean) / std for v in raw], abs=1e-5)


@pytest.mark.parametrize("estimator", ["group_norm", "dr_grpo", "rloo", "reinforce_baseline"])
def test_openrlhf_reshape_is_wrong_on_unequal_groups(estimator):
    stock = sample_advantage(run(RemoteExperienceMaker, estimator))
    ours = sample_advantage(run(GroupedExperienceMaker, estimator))
    assert stock != pytest.approx(ours, abs=1e-3)
    # What the stock code computes: groups of 4 consecutive samples, [B B A A] and [A A A A].
    mixed = [("x", r) for _, r in SAMPLES[:4]] + [("y", r) for _, r in SAMPLES[4:]]
    if estimator != "reinforce_baseline":
        assert stock == pytest.approx(hand_shaped(mixed, estimator), abs=1e-5)


@pytest.mark.parametrize("estimator", ["group_norm", "dr_grpo", "rloo", "reinforce_baseline"])
def test_equal_groups_match_openrlhf(estimator):
    samples = [(p, r) for p in "CD" for r in (1.0, 0.0, 1.0, 1.0)]
    stock = sample_advantage(run(RemoteExperienceMaker, estimator, samples))
    ours = sample_advantage(run(GroupedExperienceMaker, estimator, samples))
    assert ours == pytest.approx(stock, abs=1e-6)


@pytest.mark.parametrize("estimator", ["group_norm", "dr_grpo", "rloo", "reinforce_baseline"])
def test_single_sample_groups_get_zero_advantage(estimator):
    # the budget may give a prompt n_min = 1 sample: no baseline, no gradient (never NaN)
    samples = [("E", 1.0)] + [("F", r) for r in (1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0)]
    shaped, std, size = group_relative_rewards(
        torch.tensor([r for _, r in samples]), group_ids([p for p, _ in samples]), estimator
    )
    assert shaped[0] == 0 and std[0] == 0 and size[0] == 1
    assert torch.isfinite(shaped).all()
    advantages = sample_advantage(run(GroupedExperienceMaker, estimator, samples))
    assert all(math.isfinite(a) for a in advantages)
    if estimator != "reinforce_baseline":  # whitening shifts the zero by the global mean
        assert advantages[0] == 0


def test_every_rollout_reward_is_recorded_for_the_budget():
    args, config = make_args(
        "group_norm", "--e3.dynamic_budget", "--e3.n_min", "2", "--e3.n_max", "6"
    )
    bridge = BridgeState(config, default_n=N, base_temperature=1.0)
    run(GroupedExperienceMaker, "group_norm", bridge=bridge)
    stats = bridge.allocator.stats(reset=False)
    assert stats["prompts_recorded"] == 2 and stats["mean_reward"] == pytest.approx(3 / 8)
    bridge.end_epoch()
    key_a, key_b = prompt_key("prompt A", "label A"), prompt_key("prompt B", "label B")
    # A (mean reward 1/3) is harder than B (1/2)
    assert bridge.allocator.difficulty(key_a) > bridge.allocator.difficulty(key_b)
    assert bridge.allocate([key_b, key_a]) == [3, 5]


def test_non_group_estimators_run_openrlhf_code_and_still_record():
    args, config = make_args("reinforce", "--ead.enable", "--ead.d0", "100")
    bridge = BridgeState(config, default_n=N, base_temperature=1.0)
    samples = [(p, r) for p in "CD" for r in (1.0, 0.0, 1.0, 1.0)]
    ours = sample_advantage(run(GroupedExperienceMaker, "reinforce", samples, bridge=bridge))
    stock = sample_advantage(run(RemoteExperienceMaker, "reinforce", samples))
    assert ours == pytest.approx(stock)
    assert bridge.allocator is None  # recording is a no-op without the budget
