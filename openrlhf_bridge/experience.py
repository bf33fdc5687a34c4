"""OpenRLHF's experience maker with advantages grouped by prompt and difficulty recording.

Overrides only ``compute_advantages_and_returns``, and only for the
group-relative estimators: the group of a sample is its prompt
(:func:`openrlhf_bridge.sampling.prompt_key` of its prompt and label), so
unequal groups from the dynamic rollout budget are correct. Every rollout's
reward also feeds the budget's difficulty statistics. Other estimators run
OpenRLHF's code unchanged.
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
from openrlhf_bridge.state import BridgeState

logger = logging.getLogger(__name__)


def sample_keys(experiences: list[Experience]) -> list[str]:
    """Prompt key of every sample, in the order of ``torch.cat`` over the experiences."""
    keys: list[str] = []
    for exp in experiences:
        labels = exp.labels if exp.labels else [None] * len(exp.prompts)
        keys.extend(prompt_key(p, lab) for p, lab in zip(exp.prompts, labels, strict=True))
    return keys


def record_difficulty(bridge: BridgeState, keys: list[str], outcomes: torch.Tensor) -> None:
    """Feed each prompt's rollout outcomes (one per sample, batch order) to the budget."""
    by_prompt: dict[str, list[float]] = {}
    for key, value in zip(keys, outcomes.tolist(), strict=True):
        by_prompt.setdefault(key, []).append(float(value))
    for key, values in by_prompt.items():
        bridge.record(key, values)


class GroupedExperienceMaker(RemoteExperienceMaker):
    """``RemoteExperienceMaker`` whose group baselines follow the prompts.

    ``bridge`` (keyword) is the run's :class:`BridgeState`; its budget
    records the outcome of every sample (``scores`` when the reward source
    gives them, else ``rewards``; before length penalties).
    """

    def __init__(self, *args: Any, bridge: BridgeState, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bridge = bridge

    @torch.no_grad()
    def compute_advantages_and_returns(self, experiences: list[Experience]) -> list[Experience]:
        args = self.strategy.args
        estimator = args.algo.advantage.estimator
        keys = sample_keys(experiences)
        outcomes = torch.cat(
            [
                (e.scores if e.scores is not None else e.rewards).reshape(-1).float()
                for e in experiences
            ]
        )
        record_difficulty(self.bridge, keys, outcomes)
        if estimator not in GROUP_ESTIMATORS:
            return super().compute_advantages_and_returns(experiences)

        # Same steps as OpenRLHF's method: fp32+ rewards, length penalties, baseline,
        # per-token returns; only the grouping differs.
        for exp in experiences:
            exp.rewards = exp.rewards.to(torch.promote_types(exp.rewards.dtype, torch.float32))
        apply_length_penalties(experiences, args)
        sizes = [len(exp.rewards) for exp in experiences]
        rewards = torch.cat([exp.rewards.reshape(-1) for exp in experiences])
        shaped, std, group_size = group_relative_rewards(rewards, group_ids(keys), estimator)
        singles = int((group_size < 2).sum())
        if singles:
            logger.info("%d sample(s) are alone in their prompt group: advantage 0", singles)

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
