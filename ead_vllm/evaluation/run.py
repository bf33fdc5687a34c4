"""Sample every strategy on a task with one vLLM engine and score the samples."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from tqdm import tqdm

from ead_vllm.evaluation.metrics import curve_intervals, mean_curves
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
    """Per-problem correct and distinct-correct counts, the mean pass@k / worst@k curves
    (k = 1..n) and their 95% bootstrap intervals over problems."""

    strategy: Strategy
    n: int
    correct: list[int]
    curves: dict[str, list[float]] = field(default_factory=dict)
    distinct: list[int] = field(default_factory=list)
    intervals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def load_task(spec: str) -> ModuleType:
    """Import a task module ``spec`` exposing ``problems(n, *, seed, split)`` and
    ``reward(completion, answer) -> float`` (``ead_vllm.toy`` and ``ead_vllm.countdown``
    are two). Optional: ``model_path()`` (the default model), ``MAX_NEW_TOKENS`` and
    ``EVAL_EAD`` (JSON EAD settings evaluated by default)."""
    module: ModuleType = importlib.import_module(spec)
    for name in ("problems", "reward"):
        if not callable(getattr(module, name, None)):
            raise ValueError(f"task module {spec!r} has no callable {name}()")
    return module


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
    every strategy sees the same seeds and reruns reproduce.

    ``distinct`` counts, per problem, the different correct completions (text
    with surrounding whitespace stripped): the solutions a strategy found, not
    how often it found them."""
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
        right = [
            [c.text.strip() for c in out.outputs if reward(c.text, p.answer) > 0]
            for out, p in zip(outputs, problems, strict=True)
        ]
        correct = [len(texts) for texts in right]
        result = StrategyResult(strategy, samples, correct)
        result.curves = mean_curves(samples, correct)
        result.distinct = [len(set(texts)) for texts in right]
        result.intervals = curve_intervals(samples, correct, seed=seed)
        results.append(result)
    return results
