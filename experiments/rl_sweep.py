"""The GRPO-only sweep that chose :class:`experiments.toy_grpo.Settings`' learning rate and regime.

``python -m experiments.rl_sweep [--out DIR] [--only NAME ...]`` trains GRPO alone
(seed 0) in every setting of :data:`SWEEP`, one sub-folder per setting (runs on
disk are skipped), then writes the sweep table (``sweep.json``, ``sweep.md``)
with :func:`experiments.rl_report.sweep`: GRPO's held-out pass@1 change from the
checkpoint, with 95% intervals over problems. The arms' comparison uses the
setting whose pass@1 rose the most with its interval above 0.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from ead_vllm.countdown import model_path
from experiments.rl_report import sweep, sweep_markdown
from experiments.toy_grpo import Settings, make_engine, run_all

# name -> Settings fields that differ from the base below (60 steps, evaluated every 20).
SWEEP: dict[str, dict[str, float | int]] = {
    "stream-lr3e-5": {"lr": 3e-5},
    "stream-lr1e-4": {"lr": 1e-4},
    "stream-lr3e-4": {"lr": 3e-4},
    # a pool of 480 fresh problems seen twice: E3's budget ranks prompts by an earlier epoch
    "pool480-lr1e-4": {"lr": 1e-4, "train_problems": 480},
}
BASE = {"steps": 60, "eval_every": 20, "train_problems": 0, "threads": 1}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep's missing settings, then write and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/rl_sweep"))
    parser.add_argument("--only", nargs="+", choices=sorted(SWEEP), default=sorted(SWEEP))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    llm = None
    for name in args.only:
        if (args.out / name / "grpo-seed0.json").exists():
            continue
        llm = llm or make_engine(model_path(), seed=0)
        settings = replace(Settings(), **{**BASE, **SWEEP[name]})
        run_all(llm, args.out / name, ["grpo"], [0], settings, model_path())
    rows = sweep(args.out)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = sweep_markdown(rows)
    (args.out / "sweep.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
