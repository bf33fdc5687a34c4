"""Train the Countdown model from scratch: ``python -m ead_vllm.countdown.train [--out DIR]``.

Supervised on train-split problems, each paired with one of its solving chains
drawn uniformly (:func:`ead_vllm.countdown.task.iter_training_examples`), so
the model is unsure which plan to start with and learns to finish any plan
exactly. Every few steps it samples one completion per held-out problem at
T = 1 (full softmax) and keeps the checkpoint whose pass@1 is closest to
:data:`TARGET_PASS_AT_1`: right often enough to give RL a signal, wrong often
enough that exploration matters. The run stops at ``--max-minutes`` of wall
time, or once pass@1 has passed well beyond the target.

The thread count is part of what makes a run bit-reproducible (default 2: on
this 2-core machine one step takes 0.8 s with 2 threads, 1.4 s with 1).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Qwen2ForCausalLM

from ead_vllm.countdown.task import (
    MAX_NEW_TOKENS,
    Problem,
    iter_training_examples,
    problems,
    reward,
    solutions,
)
from ead_vllm.toy.architecture import countdown_config, save_model
from ead_vllm.toy.evaluate import greedy_completions
from ead_vllm.toy.tokenizer import build_tokenizer, save_tokenizer
from ead_vllm.toy.train import model_facts, new_optimizer, supervised_step

TARGET_PASS_AT_1 = 0.35
DEFAULT_OUT = Path(__file__).resolve().parent / "model"
# Selection uses test-split problems drawn with a seed other than the one the
# evaluations use (0), so the reported pass@1 is not the selection criterion itself.
VALIDATION_SEED = 1_000_003
VALIDATION_SIZE = 512
REPORT_SIZE = 512


@dataclass(frozen=True)
class Example:
    """One supervised pair: ``prompt`` and the chain ``answer`` to learn (then EOS)."""

    prompt: str
    answer: str


def sampled_pass_at_1(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: Sequence[Problem],
    *,
    seed: int,
    temperature: float = 1.0,
) -> float:
    """Fraction of ``batch`` solved by one completion sampled at ``temperature`` (seeded)."""
    if not batch:
        raise ValueError("no problems to evaluate")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        texts = greedy_completions(
            model,
            tokenizer,
            [p.prompt for p in batch],
            max_new_tokens=MAX_NEW_TOKENS,
            temperature=temperature,
        )
    return sum(reward(t, p.answer) for t, p in zip(texts, batch, strict=True)) / len(batch)


def train(
    out_dir: Path = DEFAULT_OUT,
    *,
    steps: int = 4000,
    seed: int = 0,
    batch_size: int = 256,
    lr: float = 1e-3,
    eval_every: int = 50,
    target: float = TARGET_PASS_AT_1,
    threads: int = 2,
    max_minutes: float = 28.0,
) -> dict[str, object]:
    """Train; keep the checkpoint nearest ``target`` sampled pass@1 in ``out_dir``; report."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer()
    save_tokenizer(out_dir, tokenizer)
    model = Qwen2ForCausalLM(countdown_config())
    model.train()
    optimizer = new_optimizer(model, lr)
    stream = (Example(p, c) for p, c in iter_training_examples(seed=seed))
    validation = problems(VALIDATION_SIZE, seed=VALIDATION_SEED, split="test")

    best: tuple[float, int, float, dict[str, torch.Tensor]] | None = None
    history: list[tuple[int, float]] = []
    last = 0.0
    stop_reason = "max steps"
    bar = tqdm(range(steps), desc="countdown train")
    for step in bar:
        batch = list(itertools.islice(stream, batch_size))
        loss = supervised_step(model, optimizer, tokenizer, batch, step=step, lr=lr)
        out_of_time = time.perf_counter() - started > 60 * max_minutes
        every = eval_every if last >= target / 3 else 2 * eval_every
        if (step + 1) % every == 0 or step + 1 == steps or out_of_time:
            last = sampled_pass_at_1(model, tokenizer, validation, seed=step)
            history.append((step + 1, last))
            bar.set_postfix(loss=f"{loss.item():.3f}", pass1=f"{last:.3f}")
            if best is None or abs(last - target) < abs(best[0] - target):
                best = (last, step + 1, loss.item(), copy.deepcopy(model.state_dict()))
            if last > target + 0.2:
                stop_reason = f"pass@1 above {target + 0.2:.2f}"
                break
            if out_of_time:
                stop_reason = f"{max_minutes:g} minutes"
                break
    bar.close()
    assert best is not None
    val_pass, best_step, best_loss, state = best
    model.load_state_dict(state)
    model.eval()
    save_model(model, out_dir)

    report_set = problems(REPORT_SIZE, seed=0, split="test")
    greedy = greedy_completions(
        model, tokenizer, [p.prompt for p in report_set], max_new_tokens=MAX_NEW_TOKENS
    )
    report: dict[str, object] = {
        "task": "Countdown: 4 digits 1-9, + - *, target >= 10, chain of 3 exact steps",
        "sampled_pass_at_1_T1_test": sampled_pass_at_1(model, tokenizer, report_set, seed=0),
        "greedy_accuracy_test": sum(
            reward(t, p.answer) for t, p in zip(greedy, report_set, strict=True)
        )
        / len(report_set),
        "report_size": REPORT_SIZE,
        "mean_solutions_per_test_problem": sum(
            len(solutions(p.numbers, p.target)) for p in report_set
        )
        / len(report_set),
        "validation_sampled_pass_at_1": val_pass,
        "validation_size": VALIDATION_SIZE,
        "validation_seed": VALIDATION_SEED,
        "chosen_step": best_step,
        "chosen_step_loss": best_loss,
        "steps_run": history[-1][0] if history else 0,
        "stop_reason": stop_reason,
        "max_steps": steps,
        "seed": seed,
        "threads": threads,
        "batch_size": batch_size,
        "lr": lr,
        "target_pass_at_1": target,
        **model_facts(model, out_dir, started),
        "history": history,
    }
    (out_dir / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: train and print the chosen checkpoint's pass@1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model directory to write")
    parser.add_argument("--steps", type=int, default=4000, help="maximum optimizer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (see above)")
    parser.add_argument("--max-minutes", type=float, default=28.0, help="wall-time limit")
    args = parser.parse_args(argv)
    report = train(
        args.out,
        steps=args.steps,
        seed=args.seed,
        lr=args.lr,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        threads=args.threads,
        max_minutes=args.max_minutes,
    )
    print(
        f"chosen step {report['chosen_step']}: sampled pass@1 (T=1) "
        f"{report['sampled_pass_at_1_T1_test']:.3f} on {REPORT_SIZE} test problems "
        f"(validation {report['validation_sampled_pass_at_1']:.3f}), greedy "
        f"{report['greedy_accuracy_test']:.3f}, {report['wall_seconds']} s, wrote {args.out}"
    )


if __name__ == "__main__":
    main()
