"""Sample every strategy on a task with one vLLM engine and score the samples."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from tqdm import tqdm

from ead_vllm.evaluation.metrics import mean_curves
from ead_vllm.params import EADParams


class TaskProblem(Protocol):
    prompt: str
    answer: str


@dataclass(frozen=True)
class Strategy:
    """A sampling strategy: a fixed ``temperature``, times the EAD schedule when ``ead`` is set."""

    name: str
    temperature: float
    ead: EADParams | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description."""
        return {
            "name": self.name,
            "temperature": self.temperature,
            "ead": self.ead.model_dump() if self.ead else None,
        }


@dataclass
class StrategyResult:
    """Per-problem correct counts and the mean pass@k / worst@k curves (k = 1..n)."""

    strategy: Strategy
    n: int
    correct: list[int]
    curves: dict[str, list[float]] = field(default_factory=dict)


def load_task(
    spec: str,
) -> tuple[Callable[..., Sequence[TaskProblem]], Callable[[str, str], float]]:
    """Import a task module ``spec`` exposing ``problems(n, *, seed, split)`` and
    ``reward(completion, answer) -> float`` (``ead_vllm.toy`` is one)."""
    module: ModuleType = importlib.import_module(spec)
    for name in ("problems", "reward"):
        if not callable(getattr(module, name, None)):
            raise ValueError(f"task module {spec!r} has no callable {name}()")
    return module.problems, module.reward


def evaluate(
    llm: Any,
    strategies: Sequence[Strategy],
    problems: Sequence[TaskProblem],
    reward: Callable[[str, str], float],
    *,
    samples: int,
    max_tokens: int,
    seed: int = 0,
) -> list[StrategyResult]:
    """Draw ``samples`` completions per problem for each strategy with ``llm``
    (a ``vllm.LLM`` started with ``additional_config={"sampler": "ead"}``) and
    return per-strategy results. Request ``i`` is seeded with ``seed + i``, so
    every strategy sees the same seeds and reruns reproduce."""
    from vllm import SamplingParams

    prompts = [p.prompt for p in problems]
    results = []
    for strategy in tqdm(strategies, desc="strategies", unit="strategy"):
        params = [
            SamplingParams(
                n=samples,
                temperature=strategy.temperature,
                max_tokens=max_tokens,
                seed=seed + i,
                extra_args=strategy.ead.to_extra_args() if strategy.ead else None,
            )
            for i in range(len(prompts))
        ]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        correct = [
            sum(int(reward(c.text, p.answer) > 0) for c in out.outputs)
            for out, p in zip(outputs, problems, strict=True)
        ]
        result = StrategyResult(strategy, samples, correct)
        result.curves = mean_curves(samples, correct)
        results.append(result)
    return results
