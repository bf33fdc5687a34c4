"""``ead-vllm eval``: pass@k and worst@k of EAD against fixed temperatures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ead_vllm.params import EADParams

# Fixed-temperature baselines the EAD paper compares with.
DEFAULT_TEMPERATURES = (0.6, 0.8, 1.0, 1.2)
# Toy answers are at most 7 tokens long, so the schedule anneals within ~10 tokens:
# exp(10 / 13.5) = 2.1 = 1 + tau_max - tau_min reaches the floor at t = 10.
DEFAULT_EAD = '{"tau_max": 1.2, "tau_min": 0.1, "decay": 13.5}'


def _ead_arg(text: str) -> EADParams:
    try:
        return EADParams.model_validate_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid EAD settings {text!r}: {exc}") from None


def add_parser(subparsers: Any) -> None:
    """Register ``eval`` on the ``ead-vllm`` CLI."""
    p = subparsers.add_parser(
        "eval",
        help="pass@k / worst@k of EAD against fixed temperatures on a verifiable task",
        description=__doc__,
    )
    p.add_argument(
        "--model", default=None, help="model path or name (default: the task's model_path())"
    )
    p.add_argument(
        "--task",
        default="ead_vllm.toy",
        help="module with problems(n, *, seed, split) and reward(completion, answer); "
        "ead_vllm.toy (addition) or ead_vllm.countdown (Countdown chains)",
    )
    p.add_argument("--problems", type=int, default=200, help="test problems (default 200)")
    p.add_argument("--samples", type=int, default=16, help="samples per problem, the max k")
    p.add_argument(
        "--max-tokens", type=int, default=None, help="default: the task's MAX_NEW_TOKENS, or 16"
    )
    p.add_argument(
        "--max-model-len", type=int, default=None, help="engine context (default: the model's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperatures", type=float, nargs="+", default=list(DEFAULT_TEMPERATURES))
    p.add_argument(
        "--ead",
        type=_ead_arg,
        action="append",
        default=None,
        metavar="JSON",
        help="an EAD setting to evaluate (repeatable; default: the task's EVAL_EAD "
        f"settings, or {DEFAULT_EAD})",
    )
    p.add_argument("--ead-base-temperature", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=Path("out/eval"), help="folder for JSON and PNG")
    p.set_defaults(func=run)


def _strategies(args: argparse.Namespace, task: Any) -> list[Any]:
    from ead_vllm.evaluation.run import Strategy

    out = [Strategy(f"T={t:g}", t) for t in args.temperatures]
    defaults = [_ead_arg(text) for text in getattr(task, "EVAL_EAD", (DEFAULT_EAD,))]
    for e in args.ead or defaults:
        name = f"EAD {e.tau_max:g}->{e.tau_min:g} d={e.decay:g}"
        if args.ead_base_temperature != 1.0:
            name += f" x T={args.ead_base_temperature:g}"
        out.append(Strategy(name, args.ead_base_temperature, e))
    return out


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; prints the table and writes ``eval.json`` and ``eval.png``."""
    from vllm import LLM

    from ead_vllm.evaluation import report
    from ead_vllm.evaluation.run import evaluate, load_task

    if args.samples < 1 or args.problems < 1:
        raise SystemExit("--samples and --problems must be >= 1")
    task = load_task(args.task)
    problems_fn, reward = task.problems, task.reward
    model = args.model
    if model is None:
        if not callable(getattr(task, "model_path", None)):
            raise SystemExit(f"task {args.task!r} has no model_path(): give --model")
        model = str(task.model_path())
    max_tokens = args.max_tokens or getattr(task, "MAX_NEW_TOKENS", 16)
    problems = problems_fn(args.problems, seed=args.seed, split="test")
    started = time.perf_counter()
    llm = LLM(
        model=model,
        additional_config={"sampler": "ead"},
        dtype="float32",
        max_model_len=args.max_model_len,
        enforce_eager=True,
        seed=args.seed,
    )
    results = evaluate(
        llm,
        _strategies(args, task),
        problems,
        reward,
        samples=args.samples,
        max_tokens=max_tokens,
        seed=args.seed,
    )
    print(report.table(results))
    meta = {
        "model": model,
        "task": args.task,
        "problems": len(problems),
        "samples": args.samples,
        "seed": args.seed,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    report.write_json(report.to_json(results, meta), args.out / "eval.json")
    report.plot(results, args.out / "eval.png", title=f"{args.task}: {len(problems)} problems")
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'eval.png'}")
    return 0
