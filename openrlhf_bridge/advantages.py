"""Group-relative reward baselines with groups given by prompt, not by a fixed reshape.

OpenRLHF 0.11.2 reshapes the batch's rewards to ``(-1, n_samples_per_prompt)``,
which assumes every prompt has exactly ``n`` consecutive samples. With a
per-prompt rollout budget that is false, and the reshape silently mixes
prompts. Here each sample carries its group id; for equal groups the results
equal OpenRLHF's formulas exactly (same statistics, unbiased std, ``1e-9``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

GROUP_ESTIMATORS = ("group_norm", "dr_grpo", "rloo", "reinforce_baseline")


def group_ids(keys: Sequence[Hashable]) -> torch.Tensor:
    """Dense group index per sample (int64 [N]), numbered by first appearance of each key."""
    index: dict[Hashable, int] = {}
    return torch.tensor([index.setdefault(k, len(index)) for k in keys], dtype=torch.long)


def group_statistics(
    rewards: torch.Tensor, groups: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample group size, sum, mean and unbiased std of ``rewards`` [N] by ``groups`` [N].

    A single-sample group has std 0 (torch would give NaN).
    """
    if rewards.dim() != 1 or rewards.shape != groups.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and groups {tuple(groups.shape)}: need [N]"
        )
    num = int(groups.max()) + 1 if groups.numel() else 0
    size = torch.zeros(num, dtype=rewards.dtype).index_add_(0, groups, torch.ones_like(rewards))
    total = torch.zeros(num, dtype=rewards.dtype).index_add_(0, groups, rewards)
    mean = total / size
    deviation = rewards - mean[groups]
    square = torch.zeros(num, dtype=rewards.dtype).index_add_(0, groups, deviation * deviation)
    var = torch.where(size > 1, square / (size - 1).clamp(min=1), torch.zeros_like(square))
    return size[groups], total[groups], mean[groups], var.sqrt()[groups]


def group_relative_rewards(
    rewards: torch.Tensor, groups: torch.Tensor, estimator: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shaped rewards of OpenRLHF's group-relative estimators, grouped by ``groups``.

    * ``rloo``: ``r - (sum - r) / (n - 1)``;
    * ``reinforce_baseline`` / ``dr_grpo``: ``r - mean``;
    * ``group_norm`` (GRPO): ``(r - mean) / (std + 1e-9)``, unbiased std.

    A group with one sample has no baseline: its shaped reward is 0 for every
    estimator (so it contributes no policy gradient; RLOO would divide by zero
    and GRPO's std is undefined). Returns ``(shaped, group_std, group_size)``,
    each [N] in the input order.
    """
    if estimator not in GROUP_ESTIMATORS:
        raise ValueError(
            f"estimator must be one of {', '.join(GROUP_ESTIMATORS)}, got {estimator!r}"
        )
    size, total, mean, std = group_statistics(rewards, groups)
    single = size < 2
    if estimator == "rloo":
        shaped = rewards - (total - rewards) / (size - 1).clamp(min=1)
    elif estimator == "group_norm":
        shaped = (rewards - mean) / (std + 1e-9)
    else:
        shaped = rewards - mean
    shaped = torch.where(single, torch.zeros_like(shaped), shaped)
    return shaped, std, size
