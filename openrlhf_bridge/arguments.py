"""The bridge's command-line flags on OpenRLHF's parser (OpenRLHF's dotted style).

:func:`add_bridge_arguments` adds ``--ead.*`` and ``--e3.*`` to OpenRLHF's own
``train_ppo_ray`` parser, so one parse gives one namespace; OpenRLHF's
``hierarchize`` then turns the dotted names into ``args.ead`` / ``args.e3``,
and those travel with ``strategy.args`` into every Ray worker. Value flags
default to ``None`` so that a flag the user gave can be told from a default
(:func:`explicit_dests`); :mod:`openrlhf_bridge.config` fills the defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ead_vllm.step_schedule import DEFAULT_TIS_CAP

CORRECTIONS = ("tis", "positional")
PRESETS = ("reference",)

# Value flags, by the switch they need (given without it, they are refused).
EAD_VALUE_FLAGS = (
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
BUDGET_VALUE_FLAGS = ("e3.n_min", "e3.n_max", "e3.widen")
TEMPERATURE_VALUE_FLAGS = (
    "e3.anneal_start",
    "e3.eta",
    "e3.min_temperature",
    "e3.max_temperature",
    "e3.warmup_steps",
    "e3.total_steps",
)
SWITCHES = {
    "ead.enable": EAD_VALUE_FLAGS,
    "e3.dynamic_budget": BUDGET_VALUE_FLAGS,
    "e3.temperature_controller": TEMPERATURE_VALUE_FLAGS,
}
BRIDGE_PREFIXES = ("--ead.", "--e3.")


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
        "positional: the actor divides its logits by the same tau_t per position, which "
        "also scales the logit gradients of late tokens by 1/tau_t (10x at tau_min 0.1; "
        "logged as ead/actor_tau_min, ead/actor_tau_max)",
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


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The ``dest`` of every optional flag that appears in ``argv`` (``--x v`` or ``--x=v``)."""
    given = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    return {
        action.dest
        for action in parser._actions  # argparse keeps no public list of actions
        if any(opt in given for opt in action.option_strings)
    }
