"""``ead-vllm plot-schedule``: a PNG of the EAD schedule tau_t over token positions.

One curve per training step (the decay grows with the step, as in Figure 1 of
the EAD paper); optionally a second panel with the E3 controller's annealed
target entropy (Eq. (5)) over training steps.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ead_vllm.controllers.entropy_temperature import annealed_target
from ead_vllm.params import EADParams
from ead_vllm.schedules import decay_at_step

PANEL_SIZE = (6.4, 4.8)  # inches per panel


def add_parser(subparsers: Any) -> None:
    """Register ``plot-schedule`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "plot-schedule",
        help="plot the EAD temperature schedule (and the E3 annealed target) to a PNG",
        description=(
            "Plot tau_t = max(1 + tau_max - exp(t / d_s), tau_min) against the generated-token "
            "position t, one curve per training step s, with d_s = min(d0 + growth * s, d_max) "
            "in tokens (paper units). With --reference-recipe, d0/growth/d_max are in the units "
            "of the authors' released code, whose exponent is t / (20 * d_s)."
        ),
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")
    p.add_argument("--tau-max", type=float, default=None, help="default 1.2")
    p.add_argument("--tau-min", type=float, default=None, help="default 0.1")
    p.add_argument(
        "--d0",
        type=float,
        default=None,
        help="decay at step 0 (default 500 tokens; 25 with --reference-recipe)",
    )
    p.add_argument("--growth", type=float, default=5.0, help="decay growth per training step")
    p.add_argument("--d-max", type=float, default=40000.0, help="cap on the decay")
    p.add_argument(
        "--warmup", type=int, default=None, help="tokens at 1.0 (default 0; 10 with recipe)"
    )
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[0, 100, 200, 400, 800],
        help="training steps to draw one curve for",
    )
    p.add_argument("--max-tokens", type=int, default=4096, help="last token position drawn")
    p.add_argument(
        "--reference-recipe",
        action="store_true",
        help="use the authors' released-code convention (x20 in the exponent, warm-up 10)",
    )
    p.add_argument(
        "--e3-total-steps",
        type=int,
        default=None,
        help="add a panel with the E3 annealed target entropy over this many training steps",
    )
    p.add_argument("--e3-eta", type=float, default=0.9, help="final target as a share of H_init")
    p.add_argument(
        "--e3-anneal-start", type=int, default=None, help="default floor(0.6 * total steps)"
    )
    p.add_argument("--dpi", type=int, default=100)
    p.set_defaults(func=run)


def _schedule_params(args: argparse.Namespace, step: int) -> EADParams:
    common: dict[str, Any] = {}
    if args.tau_max is not None:
        common["tau_max"] = args.tau_max
    if args.tau_min is not None:
        common["tau_min"] = args.tau_min
    if args.warmup is not None:
        common["warmup"] = args.warmup
    if args.reference_recipe:
        d0 = 25.0 if args.d0 is None else args.d0
        return EADParams.reference_recipe(
            step, d0=d0, growth=args.growth, d_max=args.d_max, **common
        )
    d0 = 500.0 if args.d0 is None else args.d0
    decay = decay_at_step(step, d0=d0, growth=args.growth, d_max=args.d_max)
    return EADParams(decay=decay, **common)


def _check(args: argparse.Namespace) -> None:
    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if any(s < 0 for s in args.steps):
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if args.dpi < 10:
        raise ValueError(f"--dpi must be >= 10, got {args.dpi}")
    if args.e3_total_steps is not None:
        if args.e3_total_steps < 1:
            raise ValueError(f"--e3-total-steps must be >= 1, got {args.e3_total_steps}")
        if not 0.0 < args.e3_eta <= 1.0:
            raise ValueError(f"--e3-eta must be in (0, 1], got {args.e3_eta}")
        start = args.e3_anneal_start
        if start is not None and not 0 <= start <= args.e3_total_steps:
            raise ValueError(f"--e3-anneal-start must be in [0, total steps], got {start}")


def plot(args: argparse.Namespace) -> Path:
    """Draw the figure described by the parsed ``args`` and write it; returns the path."""
    _check(args)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = {s: _schedule_params(args, s) for s in args.steps}
    two = args.e3_total_steps is not None
    fig, axes = plt.subplots(
        1, 2 if two else 1, figsize=(PANEL_SIZE[0] * (2 if two else 1), PANEL_SIZE[1])
    )
    ax = axes[0] if two else axes
    t = np.arange(args.max_tokens + 1)
    for step, p in params.items():
        label = f"step {step}: d = {p.decay:g} tokens"
        ax.plot(t, p.temperature_at(t), label=label)
    first = next(iter(params.values()))
    ax.axhline(1.0, color="grey", lw=0.6, ls=":")
    convention = "authors' code (exponent t / (20 d_s))" if args.reference_recipe else "paper units"
    ax.set_title(
        f"EAD: tau_max={first.tau_max:g}, tau_min={first.tau_min:g}, "
        f"warm-up={first.warmup}\n{convention}",
        fontsize=10,
    )
    ax.set_xlabel("generated-token position t")
    ax.set_ylabel("temperature multiplier tau_t")
    ax.legend(fontsize=8)
    if two:
        total = args.e3_total_steps
        start = (
            args.e3_anneal_start if args.e3_anneal_start is not None else math.floor(0.6 * total)
        )
        steps = np.arange(total + 1)
        target = [
            annealed_target(
                int(s), h_init=1.0, total_steps=total, anneal_start=start, eta=args.e3_eta
            )
            for s in steps
        ]
        axes[1].plot(steps, target, color="C3")
        axes[1].axvline(start, color="grey", lw=0.6, ls=":")
        axes[1].set_title(f"E3 target entropy, Eq. (5): eta={args.e3_eta:g}", fontsize=10)
        axes[1].set_xlabel("training step")
        axes[1].set_ylabel("H_target / H_init")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=args.dpi, format="png")
    plt.close(fig)
    return args.output


def run(args: argparse.Namespace) -> int:
    """Subcommand entry: write the PNG, print its path; exit code 2 on bad parameters."""
    try:
        path = plot(args)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"ead-vllm plot-schedule: error: {errors}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ead-vllm plot-schedule: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
