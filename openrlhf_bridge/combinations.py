"""The bridge flags against OpenRLHF's flags: refused combinations and implied settings.

:func:`finalize` runs after the parse, on the flat namespace: it refuses value
flags without their switch and combinations the bridge cannot run (raising
:class:`~openrlhf_bridge.checks.BridgeFlagError` with a message naming the
flags), and applies what a bridge choice implies (TIS is OpenRLHF's own
truncated IS correction).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from openrlhf_bridge.advantages import GROUP_ESTIMATORS
from openrlhf_bridge.arguments import SWITCHES
from openrlhf_bridge.checks import BridgeFlagError
from openrlhf_bridge.config import BridgeConfig, EADConfig

IS_FLAGS = (
    "algo.advantage.is_correction_level",
    "algo.advantage.is_correction_mode",
    "algo.advantage.is_correction_gating",
    "algo.advantage.is_correction_threshold",
)


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

    for switch, dests in SWITCHES.items():
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
        apply_correction(args, config.ead, explicit)
    return config


def apply_correction(args: argparse.Namespace, ead: EADConfig, explicit: set[str]) -> None:
    """Set OpenRLHF's IS flags for ``--ead.correction tis``; refuse conflicting choices."""
    given = [d for d in IS_FLAGS if d in explicit]
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
