"""Value rules of the bridge flags, each failure one sentence naming the flag.

Every rule is checked here, before any value reaches :class:`ead_vllm.params.EADParams`
or a controller, so that a bad value gives ``--ead.tau_min (5.0) must be <=
--ead.tau_max (1.2)`` and not a validation dump of an internal model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openrlhf_bridge.config import BudgetConfig, EADConfig, TemperatureConfig


class BridgeFlagError(ValueError):
    """A bridge flag (or its combination with OpenRLHF's flags) makes no sense.

    The message is one line that names the flag(s) and the rule broken.
    """


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def require(ok: bool, message: str) -> None:
    """Raise :class:`BridgeFlagError` with ``message`` unless ``ok``."""
    if not ok:
        raise BridgeFlagError(message)


def check_ead(cfg: EADConfig) -> None:
    """``--ead.*`` values: positive finite temperatures and decays, ``tau_min <= tau_max``,
    ``d_max >= d0``, ``growth >= 0``, ``warmup >= 0``, ``tis_cap >= 1``."""
    for name in ("tau_max", "tau_min", "d0", "d_max"):
        value = getattr(cfg, name)
        require(
            _finite(value) and value > 0, f"--ead.{name} must be a finite number > 0, got {value}"
        )
    require(
        cfg.tau_min <= cfg.tau_max,
        f"--ead.tau_min ({cfg.tau_min}) must be <= --ead.tau_max ({cfg.tau_max})",
    )
    require(
        _finite(cfg.growth) and cfg.growth >= 0,
        f"--ead.growth must be a finite number >= 0, got {cfg.growth}",
    )
    require(cfg.d_max >= cfg.d0, f"--ead.d_max ({cfg.d_max}) must be >= --ead.d0 ({cfg.d0})")
    require(  # the preset's units scale the decay by 20: it must stay a finite number
        math.isfinite(cfg.exponent_scale * cfg.d_max),
        f"--ead.d_max ({cfg.d_max}) is too large (the decay in tokens overflows)",
    )
    require(cfg.warmup >= 0, f"--ead.warmup must be >= 0, got {cfg.warmup}")
    if cfg.tis_cap is not None:
        require(
            _finite(cfg.tis_cap) and cfg.tis_cap >= 1.0,
            f"--ead.tis_cap must be a finite number >= 1, got {cfg.tis_cap}",
        )


def check_budget(cfg: BudgetConfig, n: int) -> None:
    """``--e3.*`` budget values: ``1 <= n_min <= n_samples_per_prompt <= n_max``, ``widen >= 0``."""
    require(cfg.n_min >= 1, f"--e3.n_min must be >= 1, got {cfg.n_min}")
    require(
        cfg.n_min <= n <= cfg.n_max,
        f"need --e3.n_min <= --rollout.n_samples_per_prompt <= --e3.n_max, got "
        f"{cfg.n_min} <= {n} <= {cfg.n_max} (the batch keeps n_samples_per_prompt "
        "rollouts per prompt on average)",
    )
    require(cfg.widen >= 0, f"--e3.widen must be >= 0, got {cfg.widen}")


def check_temperature(cfg: TemperatureConfig, init: float) -> None:
    """``--e3.*`` controller values: ``eta`` in (0, 1], clamps around ``--rollout.temperature``,
    positive step counts, ``anneal_start <= total_steps``."""
    require(0.0 < cfg.eta <= 1.0, f"--e3.eta must be in (0, 1], got {cfg.eta}")
    for name in ("min_temperature", "max_temperature"):
        value = getattr(cfg, name)
        require(_finite(value), f"--e3.{name} must be a finite number, got {value}")
    require(
        0.0 < cfg.min_temperature <= init <= cfg.max_temperature,
        "need 0 < --e3.min_temperature <= --rollout.temperature <= --e3.max_temperature, "
        f"got {cfg.min_temperature} <= {init} <= {cfg.max_temperature}",
    )
    require(cfg.warmup_steps >= 1, f"--e3.warmup_steps must be >= 1, got {cfg.warmup_steps}")
    if cfg.total_steps is not None:
        require(cfg.total_steps >= 1, f"--e3.total_steps must be >= 1, got {cfg.total_steps}")
    if cfg.anneal_start is not None:
        require(cfg.anneal_start >= 0, f"--e3.anneal_start must be >= 0, got {cfg.anneal_start}")
        if cfg.total_steps is not None:
            require(
                cfg.anneal_start <= cfg.total_steps,
                f"--e3.anneal_start ({cfg.anneal_start}) must be <= --e3.total_steps "
                f"({cfg.total_steps})",
            )
