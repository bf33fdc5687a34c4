"""OpenRLHF's experience maker with advantages grouped by rollout instance, and difficulty.

Overrides only ``compute_advantages_and_returns``, and only for the
group-relative estimators: the group of a sample is its rollout instance
(the prompt dispatch it came from, :class:`openrlhf_bridge.state.RolloutRecord`,
looked up by OpenRLHF's ``Experience.index``), so two dataset rows with the
same prompt and label in one batch are two groups, exactly as OpenRLHF's
reshape by ``n_samples_per_prompt`` makes them, and unequal groups from the
dynamic rollout budget are still correct. With the budget, every instance's
outcomes also feed its prompt's difficulty. Other estimators without the
budget run OpenRLHF's code unchanged (nothing of the experiences is read).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from openrlhf.models.utils import compute_reward
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties

from openrlhf_bridge.advantages import GROUP_ESTIMATORS, group_ids, group_relative_rewards
from openrlhf_bridge.sampling import prompt_key
from openrlhf_bridge.state import BridgeState, RolloutRecord

logger = logging.getLogger(__name__)


def sample_keys(experiences: list[Experience]) -> list[str]:
    """Prompt key of every sample (from ``prompts``/``labels``), in ``torch.cat`` order."""
    keys: list[str] = []
    for exp in experiences:
        labels = exp.labels if exp.labels else [None] * len(exp.prompts)
        keys.extend(prompt_key(p, lab) for p, lab in zip(exp.prompts, labels, strict=True))
    return keys


def rollout_positions(experiences: list[Experience], record: RolloutRecord | None) -> list[int]:
    """Rollout position (``Experience.index``) of every sample, in ``torch.cat`` order.

    Raises ``RuntimeError`` when the batch is not the one ``record`` describes
    (no record, a missing index, or positions that are not ``0..N-1`` once).
    """
    if record is None:
        raise RuntimeError(
            "no rollout record for this batch: the bridge's experience maker needs the samples "
            "of the bridge's EADSamplesGenerator"
        )
    positions: list[int] = []
    for exp in experiences:
        if exp.index is None or len(exp.index) != len(exp.rewards.reshape(-1)):
            raise RuntimeError(
                "an Experience without one index per sample (OpenRLHF's split_rollout_samples "
                "sets them)"
            )
        positions.extend(int(i) for i in exp.index)
    if sorted(positions) != list(range(len(record.instances))):
        raise RuntimeError(
            f"the batch has {len(positions)} samples, the rollout record "
            f"{len(record.instances)}: they are not the same batch"
        )
    return positions


def record_difficulty(
    bridge: BridgeState, keys: list[str], instances: list[int], outcomes: torch.Tensor
) -> None:
    """Feed each instance's outcomes (one per sample, any order) to its prompt's difficulty."""
    by_instance: dict[int, tuple[str, list[float]]] = {}
    for key, instance, value in zip(keys, instances, outcomes.tolist(), strict=True):
        by_instance.setdefault(instance, (key, []))[1].append(float(value))
    for key, values in by_instance.values():
        bridge.record(key, values)


class GroupedExperienceMaker(RemoteExperienceMaker):
    """``RemoteExperienceMaker`` whose group baselines follow the rollout instances.

    ``bridge`` (keyword) is the run's :class:`BridgeState`; its ``rollout``
    record describes the batch. With the budget, it records the outcome of
    every sample (``scores`` when the reward source gives them, else
    ``rewards``; before length penalties).
    """

    def __init__(self, *args: Any, bridge: BridgeState, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bridge = bridge

    @torch.no_grad()
    def compute_advantages_and_returns(self, experiences: list[Experience]) -> list[Experience]:
        args = self.strategy.args
        estimator = args.algo.advantage.estimator
        budget = self.bridge.allocator is not None
        if estimator not in GROUP_ESTIMATORS and not budget:
            return super().compute_advantages_and_returns(experiences)

        record = self.bridge.rollout
        positions = rollout_positions(experiences, record)
        instances = [record.instances[p] for p in positions]
        if budget:
            outcomes = torch.cat(
                [
                    (e.scores if e.scores is not None else e.rewards).reshape(-1).float()
                    for e in experiences
                ]
            )
            record_difficulty(self.bridge, [record.keys[p] for p in positions], instances, outcomes)
        if estimator not in GROUP_ESTIMATORS:
            return super().compute_advantages_and_returns(experiences)

        # Same steps as OpenRLHF's method: fp32+ rewards, length penalties, baseline,
        # per-token returns; only the grouping differs.
        for exp in experiences:
            exp.rewards = exp.rewards.to(torch.promote_types(exp.rewards.dtype, torch.float32))
        apply_length_penalties(experiences, args)
        sizes = [len(exp.rewards) for exp in experiences]
        rewards = torch.cat([exp.rewards.reshape(-1) for exp in experiences])
        shaped, std, group_size = group_relative_rewards(rewards, group_ids(instances), estimator)
        singles = int((group_size < 2).sum())
        if singles:
            logger.info("%d sample(s) are alone in their rollout group: advantage 0", singles)

        if args.algo.advantage.gamma != 1.0:
            logger.warning(f"gamma is set to 1.0 for {estimator}")
            args.algo.advantage.gamma = 1.0
        parts = zip(
            experiences, shaped.split(sizes), std.split(sizes), group_size.split(sizes), strict=True
        )
        for exp, reward, reward_std, size in parts:
            exp.info["group_reward_std"] = reward_std
            exp.info["group_size"] = size
            reward = compute_reward(
                reward,
                self.kl_ctl.value,
                exp.kl,
                action_mask=exp.action_mask,
                reward_clip_range=args.reward.clip_range,
            )
            exp.returns = self.get_cumulative_returns(reward, exp.action_mask, 1.0)
            exp.advantages = exp.returns.clone()
            exp.info["return"] = reward.sum(dim=-1)
            exp.kl = None

        if estimator == "reinforce_baseline":  # OpenRLHF whitens this one over all action tokens
            advantages = torch.cat([e.advantages.flatten() for e in experiences]).float()
            masks = torch.cat([e.action_mask.flatten() for e in experiences])
            tokens = masks.sum()
            mean = (advantages * masks).sum() / tokens
            rstd: torch.Tensor | float = 1.0
            if not args.algo.advantage.no_std_norm:
                var = ((advantages - mean).pow(2) * masks).sum() / tokens
                rstd = var.clamp(min=1e-8).rsqrt()
            for exp in experiences:
                exp.advantages = (exp.advantages - mean) * rstd
        return experiences
