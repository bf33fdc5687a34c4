"""E3 controllers: entropy-targeting temperature and dynamic rollout budget."""

from ead_vllm.controllers.entropy_temperature import (
    EntropyTemperatureController,
    annealed_target,
)
from ead_vllm.controllers.rollout_budget import (
    RolloutBudgetAllocator,
    allocate_budget,
    fractional_ranks,
)

__all__ = [
    "EntropyTemperatureController",
    "RolloutBudgetAllocator",
    "allocate_budget",
    "annealed_target",
    "fractional_ranks",
]
