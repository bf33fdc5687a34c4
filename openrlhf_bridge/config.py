"""The resolved, immutable view of the bridge flags that every process rebuilds from ``args``.

:meth:`BridgeConfig.from_args` reads the flags from OpenRLHF's flat argparse
namespace (the launcher) or its nested ``args`` (the Ray workers), fills the
defaults and checks the values (:mod:`openrlhf_bridge.checks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ead_vllm.step_schedule import REFERENCE_PRESET, StepSchedule
from openrlhf_bridge.arguments import DEFAULT_TIS_CAP
from openrlhf_bridge.checks import BridgeFlagError, check_budget, check_ead, check_temperature

# Defaults of the schedule's step fields: the authors' preset, else paper units.
_REFERENCE = REFERENCE_PRESET
_PAPER = {"growth": 5.0, "d_max": 40000.0, "warmup": 0, "exponent_scale": 1.0}


def lookup(args: Any, dotted: str, default: Any = None) -> Any:
    """``args.<dotted>`` on a flat argparse namespace or on OpenRLHF's nested one."""
    if hasattr(args, dotted):
        return getattr(args, dotted)
    node = args
    for part in dotted.split("."):
        if not hasattr(node, part):
            return default
        node = getattr(node, part)
    return node


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


@dataclass(frozen=True, kw_only=True)
class EADConfig(StepSchedule):
    """Resolved EAD settings: the step schedule (:meth:`params_at` gives a step's
    parameters) plus the bridge's preset name, correction and TIS cap."""

    preset: str | None = None
    correction: str = "tis"
    tis_cap: float | None = None


@dataclass(frozen=True)
class BudgetConfig:
    """Resolved dynamic-budget settings (limits for :class:`RolloutBudgetAllocator`)."""

    n_min: int
    n_max: int
    widen: int


@dataclass(frozen=True)
class TemperatureConfig:
    """Resolved entropy-controller settings (``total_steps`` None: from the dataset)."""

    anneal_start: int | None
    eta: float
    min_temperature: float
    max_temperature: float
    warmup_steps: int
    total_steps: int | None


@dataclass(frozen=True)
class BridgeConfig:
    """What the bridge does in this run; rebuilt from ``args`` in every process."""

    ead: EADConfig | None
    budget: BudgetConfig | None
    temperature: TemperatureConfig | None

    @property
    def active(self) -> bool:
        """True when any bridge feature is on (otherwise OpenRLHF runs untouched)."""
        return any(x is not None for x in (self.ead, self.budget, self.temperature))

    @property
    def positional(self) -> bool:
        """True when the actor must apply ``tau_t`` per position."""
        return self.ead is not None and self.ead.correction == "positional"

    @property
    def actor_temperature(self) -> bool:
        """True when the actor/reference log-probs follow the bridge's temperature."""
        return self.positional or self.temperature is not None

    @classmethod
    def from_args(cls, args: Any) -> BridgeConfig:
        """Resolve the bridge flags of ``args`` (flat or nested), filling defaults.

        Raises :class:`BridgeFlagError` for values out of range.
        """
        ead = None
        if lookup(args, "ead.enable", False):
            preset = lookup(args, "ead.preset")
            base = _REFERENCE if preset == "reference" else _PAPER
            d0 = lookup(args, "ead.d0")
            if d0 is None:
                if preset != "reference":
                    raise BridgeFlagError(
                        "--ead.enable needs --ead.d0 (initial decay, tokens) or --ead.preset "
                        "reference"
                    )
                d0 = base["d0"]
            correction = _pick(lookup(args, "ead.correction"), "tis")
            tis_cap = lookup(args, "ead.tis_cap")
            ead = EADConfig(
                tau_max=float(_pick(lookup(args, "ead.tau_max"), 1.2)),
                tau_min=float(_pick(lookup(args, "ead.tau_min"), 0.1)),
                d0=float(d0),
                growth=float(_pick(lookup(args, "ead.growth"), base["growth"])),
                d_max=float(_pick(lookup(args, "ead.d_max"), base["d_max"])),
                warmup=int(_pick(lookup(args, "ead.warmup"), base["warmup"])),
                exponent_scale=float(base["exponent_scale"]),
                preset=preset,
                correction=correction,
                tis_cap=(float(_pick(tis_cap, DEFAULT_TIS_CAP)) if correction == "tis" else None),
            )
            check_ead(ead)
        budget = None
        if lookup(args, "e3.dynamic_budget", False):
            n = int(lookup(args, "rollout.n_samples_per_prompt", 1))
            budget = BudgetConfig(
                n_min=int(_pick(lookup(args, "e3.n_min"), n)),
                n_max=int(_pick(lookup(args, "e3.n_max"), n)),
                widen=int(_pick(lookup(args, "e3.widen"), 2)),
            )
            check_budget(budget, n)
        temperature = None
        if lookup(args, "e3.temperature_controller", False):
            temperature = TemperatureConfig(
                anneal_start=lookup(args, "e3.anneal_start"),
                eta=float(_pick(lookup(args, "e3.eta"), 0.9)),
                min_temperature=float(_pick(lookup(args, "e3.min_temperature"), 0.1)),
                max_temperature=float(_pick(lookup(args, "e3.max_temperature"), 2.0)),
                warmup_steps=int(_pick(lookup(args, "e3.warmup_steps"), 1)),
                total_steps=lookup(args, "e3.total_steps"),
            )
            check_temperature(temperature, float(lookup(args, "rollout.temperature", 1.0)))
        return cls(ead=ead, budget=budget, temperature=temperature)
