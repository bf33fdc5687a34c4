"""The bridge's command-line flags (OpenRLHF's dotted style) and their validation.

``add_bridge_arguments`` adds ``--ead.*`` and ``--e3.*`` to OpenRLHF's own
``train_ppo_ray`` parser, so one parse gives one namespace; OpenRLHF's
``hierarchize`` then turns the dotted names into ``args.ead`` / ``args.e3``,
and those travel with ``strategy.args`` into every Ray worker.
:func:`finalize` validates the combination with OpenRLHF's flags (raising
:class:`BridgeFlagError` with a message naming the flags) and applies the
OpenRLHF settings a bridge choice implies (TIS correction).
:class:`BridgeConfig` is the resolved, immutable view that every process
rebuilds from ``args``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ead_vllm.params import EADParams
from ead_vllm.schedules import decay_at_step
from openrlhf_bridge.advantages import GROUP_ESTIMATORS

CORRECTIONS = ("tis", "positional")
PRESETS = ("reference",)
DEFAULT_TIS_CAP = 2.0

# The authors' released recipe (see EADParams.reference_recipe): their d0/growth/d_max
# are in their own units, which their code multiplies by 20 in the exponent.
_REFERENCE = {"d0": 25.0, "growth": 5.0, "d_max": 40000.0, "warmup": 10, "exponent_scale": 20.0}
_PAPER = {"growth": 5.0, "d_max": 40000.0, "warmup": 0, "exponent_scale": 1.0}

_EAD_VALUE_FLAGS = (
    "ead.preset",
    "ead.tau_max",
    "ead.tau_min",
    "ead.d0",
    "ead.growth",
    "ead.d_max",
    "ead.warmup",
    "ead.correction",
    "ead.tis_cap",
)
_BUDGET_VALUE_FLAGS = ("e3.n_min", "e3.n_max", "e3.widen")
_TEMPERATURE_VALUE_FLAGS = (
    "e3.anneal_start",
    "e3.eta",
    "e3.min_temperature",
    "e3.max_temperature",
    "e3.warmup_steps",
    "e3.total_steps",
)
_IS_FLAGS = (
    "algo.advantage.is_correction_level",
    "algo.advantage.is_correction_mode",
    "algo.advantage.is_correction_gating",
    "algo.advantage.is_correction_threshold",
)


class BridgeFlagError(ValueError):
    """A bridge flag (or its combination with OpenRLHF's flags) makes no sense."""


def add_bridge_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--ead.*`` and ``--e3.*`` flags to ``parser`` (OpenRLHF's parser).

    Value flags default to ``None`` so that :func:`finalize` can tell a flag
    the user gave from a default; :class:`BridgeConfig` fills the defaults.
    """
    ead = parser.add_argument_group("EAD: exploratory annealed decoding (openrlhf_bridge)")
    ead.add_argument(
        "--ead.enable",
        action="store_true",
        default=False,
        help="sample rollouts with the EAD per-token temperature schedule",
    )
    ead.add_argument(
        "--ead.preset",
        choices=PRESETS,
        default=None,
        help="'reference': the authors' released recipe (d0=25, growth=5, d_max=40000 "
        "in their units, x20 in the exponent, first 10 tokens at the base "
        "temperature); explicit --ead.* values override it",
    )
    ead.add_argument("--ead.tau_max", type=float, default=None, help="tau_max (default 1.2)")
    ead.add_argument("--ead.tau_min", type=float, default=None, help="tau_min (default 0.1)")
    ead.add_argument(
        "--ead.d0",
        type=float,
        default=None,
        help="initial decay d0 in tokens (required without --ead.preset)",
    )
    ead.add_argument(
        "--ead.growth", type=float, default=None, help="decay growth per training step (default 5)"
    )
    ead.add_argument("--ead.d_max", type=float, default=None, help="decay cap (default 40000)")
    ead.add_argument(
        "--ead.warmup",
        type=int,
        default=None,
        help="first generated tokens kept at the base temperature (default 0)",
    )
    ead.add_argument(
        "--ead.correction",
        choices=CORRECTIONS,
        default=None,
        help="tis (default): train at the base temperature, correct with truncated "
        "importance sampling against the annealed rollout log-probs; "
        "positional: the actor divides its logits by the same tau_t per position",
    )
    ead.add_argument(
        "--ead.tis_cap",
        type=float,
        default=None,
        help=f"TIS truncation: IS weights are clipped into [0, cap] (default {DEFAULT_TIS_CAP})",
    )

    e3 = parser.add_argument_group("E3: dynamic rollout budget and temperature (openrlhf_bridge)")
    e3.add_argument(
        "--e3.dynamic_budget",
        action="store_true",
        default=False,
        help="per-prompt rollout counts by difficulty (E3 Algorithm 1)",
    )
    e3.add_argument("--e3.n_min", type=int, default=None, help="G_min limit (default n_samples)")
    e3.add_argument("--e3.n_max", type=int, default=None, help="G_max limit (default n_samples)")
    e3.add_argument(
        "--e3.widen",
        type=int,
        default=None,
        help="G_min -= widen, G_max += widen after each pass (default 2)",
    )
    e3.add_argument(
        "--e3.temperature_controller",
        action="store_true",
        default=False,
        help="entropy-targeting global temperature (E3 Eq. 4, annealed by Eq. 5)",
    )
    e3.add_argument(
        "--e3.anneal_start",
        type=int,
        default=None,
        help="t_anneal (default floor(0.6 * total steps))",
    )
    e3.add_argument(
        "--e3.eta",
        type=float,
        default=None,
        help="final target = eta * H_init (default 0.9; 1 disables annealing)",
    )
    e3.add_argument("--e3.min_temperature", type=float, default=None, help="clamp (default 0.1)")
    e3.add_argument("--e3.max_temperature", type=float, default=None, help="clamp (default 2.0)")
    e3.add_argument(
        "--e3.warmup_steps",
        type=int,
        default=None,
        help="steps whose mean entropy defines H_init (default 1)",
    )
    e3.add_argument(
        "--e3.total_steps",
        type=int,
        default=None,
        help="t_max (default: rollout steps of the run, from the dataset size)",
    )


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


@dataclass(frozen=True)
class EADConfig:
    """Resolved EAD settings; :meth:`params_at` gives the per-step schedule."""

    tau_max: float
    tau_min: float
    d0: float
    growth: float
    d_max: float
    warmup: int
    exponent_scale: float
    preset: str | None
    correction: str
    tis_cap: float | None

    def params_at(self, step: int) -> EADParams:
        """EAD parameters (paper units) for rollouts of global training ``step``.

        ``decay = exponent_scale * min(d0 + growth * step, d_max)``; the scale is 1
        in paper units and 20 for the authors' recipe (their code's factor).
        """
        decay = self.exponent_scale * decay_at_step(
            step, d0=self.d0, growth=self.growth, d_max=self.d_max
        )
        return EADParams(
            tau_max=self.tau_max, tau_min=self.tau_min, decay=decay, warmup=self.warmup
        )


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
            _check_ead(ead)
        budget = None
        if lookup(args, "e3.dynamic_budget", False):
            n = int(lookup(args, "rollout.n_samples_per_prompt", 1))
            budget = BudgetConfig(
                n_min=int(_pick(lookup(args, "e3.n_min"), n)),
                n_max=int(_pick(lookup(args, "e3.n_max"), n)),
                widen=int(_pick(lookup(args, "e3.widen"), 2)),
            )
            _check_budget(budget, n)
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
            _check_temperature(temperature, float(lookup(args, "rollout.temperature", 1.0)))
        return cls(ead=ead, budget=budget, temperature=temperature)


def _check_ead(cfg: EADConfig) -> None:
    try:
        cfg.params_at(0)
    except (ValueError, TypeError) as exc:
        raise BridgeFlagError(f"invalid --ead.* values: {exc}") from None
    for name in ("d0", "d_max"):
        if not (math.isfinite(getattr(cfg, name)) and getattr(cfg, name) > 0):
            raise BridgeFlagError(f"--ead.{name} must be a finite number > 0")
    if not (math.isfinite(cfg.growth) and cfg.growth >= 0):
        raise BridgeFlagError("--ead.growth must be a finite number >= 0")
    if cfg.d_max < cfg.d0:
        raise BridgeFlagError(f"--ead.d_max ({cfg.d_max}) must be >= --ead.d0 ({cfg.d0})")
    if cfg.tis_cap is not None and not (math.isfinite(cfg.tis_cap) and cfg.tis_cap >= 1.0):
        raise BridgeFlagError(f"--ead.tis_cap must be a finite number >= 1, got {cfg.tis_cap}")


def _check_budget(cfg: BudgetConfig, n: int) -> None:
    if cfg.n_min < 1:
        raise BridgeFlagError(f"--e3.n_min must be >= 1, got {cfg.n_min}")
    if not cfg.n_min <= n <= cfg.n_max:
        raise BridgeFlagError(
            f"need --e3.n_min <= --rollout.n_samples_per_prompt <= --e3.n_max, got "
            f"{cfg.n_min} <= {n} <= {cfg.n_max} (the batch keeps n_samples_per_prompt "
            "rollouts per prompt on average)"
        )
    if cfg.widen < 0:
        raise BridgeFlagError(f"--e3.widen must be >= 0, got {cfg.widen}")


def _check_temperature(cfg: TemperatureConfig, init: float) -> None:
    if not 0.0 < cfg.eta <= 1.0:
        raise BridgeFlagError(f"--e3.eta must be in (0, 1], got {cfg.eta}")
    if not 0.0 < cfg.min_temperature <= init <= cfg.max_temperature:
        raise BridgeFlagError(
            "need 0 < --e3.min_temperature <= --rollout.temperature <= --e3.max_temperature, "
            f"got {cfg.min_temperature} <= {init} <= {cfg.max_temperature}"
        )
    if cfg.warmup_steps < 1:
        raise BridgeFlagError(f"--e3.warmup_steps must be >= 1, got {cfg.warmup_steps}")
    if cfg.total_steps is not None and cfg.total_steps < 1:
        raise BridgeFlagError(f"--e3.total_steps must be >= 1, got {cfg.total_steps}")
    if cfg.anneal_start is not None:
        if cfg.anneal_start < 0:
            raise BridgeFlagError(f"--e3.anneal_start must be >= 0, got {cfg.anneal_start}")
        if cfg.total_steps is not None and cfg.anneal_start > cfg.total_steps:
            raise BridgeFlagError(
                f"--e3.anneal_start ({cfg.anneal_start}) must be <= --e3.total_steps "
                f"({cfg.total_steps})"
            )


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The ``dest`` of every optional flag that appears in ``argv`` (``--x v`` or ``--x=v``)."""
    given = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    return {
        action.dest
        for action in parser._actions  # argparse keeps no public list of actions
        if any(opt in given for opt in action.option_strings)
    }


def _flags(dests: Iterable[str]) -> str:
    return ", ".join(f"--{d}" for d in sorted(dests))


def finalize(args: argparse.Namespace, explicit: set[str]) -> BridgeConfig:
    """Validate the bridge flags against OpenRLHF's and apply what they imply, in place.

    ``args`` is the flat namespace of the combined parser and ``explicit`` the
    dests the user gave (:func:`explicit_dests`). With ``--ead.correction tis``
    (the default) this sets OpenRLHF's truncated IS correction: token level,
    clip mode, ratio gating, threshold ``[0, tis_cap]``, which also makes
    OpenRLHF start vLLM with ``logprobs_mode="processed_logprobs"`` (the
    annealed log-prob of each sampled token). Raises :class:`BridgeFlagError`.
    """

    def get(dest: str) -> Any:
        return getattr(args, dest)

    for switch, dests in (
        ("ead.enable", _EAD_VALUE_FLAGS),
        ("e3.dynamic_budget", _BUDGET_VALUE_FLAGS),
        ("e3.temperature_controller", _TEMPERATURE_VALUE_FLAGS),
    ):
        orphans = [d for d in dests if d in explicit]
        if orphans and not get(switch):
            raise BridgeFlagError(f"{_flags(orphans)} given without --{switch}")

    config = BridgeConfig.from_args(args)
    if not config.active:
        return config

    features = [
        name
        for name, on in (
            ("--ead.enable", config.ead),
            ("--e3.dynamic_budget", config.budget),
            ("--e3.temperature_controller", config.temperature),
        )
        if on is not None
    ]
    if get("train.async_enable"):
        raise BridgeFlagError(
            f"{', '.join(features)} is not supported with --train.async_enable (the bridge "
            "extends the synchronous PPOTrainer only)"
        )
    if not get("vllm.num_engines"):
        raise BridgeFlagError(
            f"{', '.join(features)} needs vLLM rollouts (--vllm.num_engines >= 1)"
        )
    if get("rollout.temperature") <= 0:
        raise BridgeFlagError(
            f"{', '.join(features)} needs sampling: --rollout.temperature must be > 0"
        )

    if config.budget is not None:
        estimator = get("algo.advantage.estimator")
        if estimator not in GROUP_ESTIMATORS:
            raise BridgeFlagError(
                f"--e3.dynamic_budget needs a group-relative estimator "
                f"(--algo.advantage.estimator {{{','.join(GROUP_ESTIMATORS)}}}), got {estimator!r}"
            )
        if get("algo.dynamic_filtering_enable"):
            raise BridgeFlagError(
                "--e3.dynamic_budget and --algo.dynamic_filtering_enable both act on "
                "all-correct/all-wrong prompts: filtered prompts would never be ranked. Use one."
            )

    if config.ead is not None:
        _apply_correction(args, config.ead, explicit)
    return config


def _apply_correction(args: argparse.Namespace, ead: EADConfig, explicit: set[str]) -> None:
    given = [d for d in _IS_FLAGS if d in explicit]
    if ead.correction == "positional":
        if "ead.tis_cap" in explicit:
            raise BridgeFlagError("--ead.tis_cap applies to --ead.correction tis only")
        return  # OpenRLHF's own IS flags (for vLLM/trainer mismatch) stay as the user set them
    wanted = {
        "algo.advantage.is_correction_level": "token",
        "algo.advantage.is_correction_mode": "clip",
        "algo.advantage.is_correction_gating": "ratio",
    }
    conflicts = [d for d in given if d in wanted and getattr(args, d) != wanted[d]]
    if conflicts:
        raise BridgeFlagError(
            f"--ead.correction tis is OpenRLHF's token-level clipped IS correction "
            f"(is_correction_level token, mode clip, gating ratio); it conflicts with "
            f"{_flags(conflicts)}. Drop them, or use --ead.correction positional."
        )
    threshold = "algo.advantage.is_correction_threshold"
    if threshold in explicit and "ead.tis_cap" in explicit:
        raise BridgeFlagError(f"give --ead.tis_cap or --{threshold}, not both")
    for dest, value in wanted.items():
        setattr(args, dest, value)
    if threshold not in explicit:
        setattr(args, threshold, [0.0, ead.tis_cap])
