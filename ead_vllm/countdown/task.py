"""Countdown: reach a target from four digits with + - * and a worked chain of steps.

A prompt reads ``"3 7 8 2>34:"``: four numbers from 1 to 9, then the target.
A completion is three steps, each combining two numbers of the current pool
into one: ``"7-3=4,8*4=32,32+2=34"``, then EOS. Every number is used exactly
once, every step's arithmetic must be exact, and the last result must equal
the target. Many chains solve one problem (7.7 on average), so the first
step picks a plan and the rest must be exact: where early exploration is
supposed to pay.

Rules of a valid step (the verifier's and the generator's): ``+`` and ``*``
are written larger operand first, ``-`` gives a result > 0, ``*`` never has
an operand 1 (it would be a no-op step), and every result is at most
:data:`MAX_VALUE`. The verifier accepts the operands of ``+`` and ``*`` in
either order; everything else it rejects. Division is not part of the game.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "test"]

NUMBERS = 4
MIN_NUMBER = 1
MAX_NUMBER = 9
MIN_TARGET = 10
MAX_VALUE = 99
# One problem in TEST_MODULUS belongs to the test split.
TEST_MODULUS = 10
# The longest chain is 3 steps of "99-9=90" (7 chars) with 2 commas, then EOS.
MAX_NEW_TOKENS = 32

_PROMPT = re.compile(r"(\d) (\d) (\d) (\d)>(\d+):")
_STEP = re.compile(r"(\d+)([-+*])(\d+)=(\d+)")


@dataclass(frozen=True)
class Problem:
    """One Countdown problem.

    ``prompt`` is what the model completes; ``answer`` is what :func:`reward`
    checks a completion against: the numbers and the target (``"3 7 8 2>34"``),
    not a reference chain, since any valid chain is right.
    """

    numbers: tuple[int, ...]
    target: int
    prompt: str
    answer: str


def format_prompt(numbers: tuple[int, ...], target: int) -> str:
    """Return the prompt text: the numbers, ``>``, the target, ``:``."""
    return " ".join(map(str, numbers)) + f">{target}:"


def parse_answer(answer: str) -> tuple[tuple[int, ...], int]:
    """Return ``(numbers, target)`` of a prompt or answer text; ValueError otherwise."""
    match = _PROMPT.fullmatch(answer if answer.endswith(":") else answer + ":")
    if match is None:
        raise ValueError(f"not a Countdown problem: {answer!r}")
    groups = [int(g) for g in match.groups()]
    return tuple(groups[:NUMBERS]), groups[NUMBERS]


def apply(a: int, op: str, b: int) -> int | None:
    """Result of the step ``a op b`` as written, or None when the rules forbid it."""
    if op == "+":
        value = a + b
    elif op == "-":
        value = a - b
        if value <= 0:
            return None
    elif op == "*":
        if a == 1 or b == 1:
            return None
        value = a * b
    else:
        return None
    return value if value <= MAX_VALUE else None


def _steps(pool: tuple[int, ...]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every legal written step from ``pool``: (text, remaining pool with the result)."""
    for i, j in itertools.combinations(range(len(pool)), 2):
        big, small = max(pool[i], pool[j]), min(pool[i], pool[j])
        rest = tuple(x for k, x in enumerate(pool) if k not in (i, j))
        for op in "+-*":
            value = apply(big, op, small)
            if value is not None:
                yield f"{big}{op}{small}={value}", rest + (value,)


@functools.lru_cache(maxsize=1024)
def chains(numbers: tuple[int, ...]) -> dict[int, tuple[str, ...]]:
    """All written chains from ``numbers`` (order as given), by their final value.

    A pool containing equal numbers yields each distinct chain text once.
    """
    out: dict[int, set[str]] = {}

    def walk(pool: tuple[int, ...], prefix: tuple[str, ...]) -> None:
        if len(pool) == 1:
            out.setdefault(pool[0], set()).add(",".join(prefix))
            return
        for text, rest in _steps(pool):
            walk(rest, (*prefix, text))

    walk(tuple(numbers), ())
    return {value: tuple(sorted(texts)) for value, texts in sorted(out.items())}


def solutions(numbers: tuple[int, ...], target: int) -> tuple[str, ...]:
    """Every written chain from ``numbers`` that ends at ``target`` (sorted)."""
    return chains(tuple(sorted(numbers))).get(target, ())


def split_of(numbers: tuple[int, ...], target: int) -> Split:
    """Return the split that owns a problem, fixed by a hash of its sorted numbers and target."""
    key = ",".join(map(str, sorted(numbers))) + f">{target}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % TEST_MODULUS == 0 else "train"


def make_problem(numbers: tuple[int, ...], target: int) -> Problem:
    """Return the :class:`Problem` for ``numbers`` and ``target``."""
    prompt = format_prompt(numbers, target)
    return Problem(numbers=tuple(numbers), target=target, prompt=prompt, answer=prompt[:-1])


def _draw(rng: random.Random) -> tuple[tuple[int, ...], int]:
    while True:
        numbers = tuple(rng.randint(MIN_NUMBER, MAX_NUMBER) for _ in range(NUMBERS))
        by_value = chains(tuple(sorted(numbers)))
        weights = [len(by_value[v]) if v >= MIN_TARGET else 0 for v in by_value]
        if any(weights):
            return numbers, rng.choices(list(by_value), weights=weights)[0]


def iter_problems(*, seed: int = 0, split: Split = "test") -> Iterator[Problem]:
    """Yield the endless stream of ``split`` problems drawn with ``seed``.

    Numbers are uniform in 1-9 (order as drawn); the target is the value of a
    chain drawn uniformly from all chains of those numbers that end at
    :data:`MIN_TARGET` or more (as Countdown generators draw a random
    expression), so every problem has a solution, and targets with many
    solutions are common (mean 7.7 chains per problem, median 5; 6% have one).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"countdown:{seed}:{split}")
    while True:
        numbers, target = _draw(rng)
        if split_of(numbers, target) == split:
            yield make_problem(numbers, target)


def problems(n: int, *, seed: int = 0, split: Split = "test") -> list[Problem]:
    """Return ``n`` problems of ``split`` drawn with ``seed``; same arguments, same list."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(itertools.islice(iter_problems(seed=seed, split=split), n))


def iter_training_examples(*, seed: int = 0) -> Iterator[tuple[str, str]]:
    """Yield ``(prompt, chain)`` training pairs: train-split problems, each with one of its
    solutions drawn uniformly, so the model learns every plan in proportion."""
    rng = random.Random(f"countdown-chains:{seed}")
    for problem in iter_problems(seed=seed, split="train"):
        yield problem.prompt, rng.choice(solutions(problem.numbers, problem.target))


def chain_of(completion: str) -> str:
    """The chain part of a completion: up to the first whitespace or EOS text, stripped."""
    text = completion.strip()
    return text.split()[0] if text else ""


def check(completion: str, answer: str) -> bool:
    """True when ``completion`` is a valid chain that uses each number once and hits the target.

    ``answer`` is a :attr:`Problem.answer` (``"3 7 8 2>34"``). Anything after
    the chain (a space, a newline, junk from a completion that never stopped)
    is ignored.
    """
    numbers, target = parse_answer(answer)
    pool = list(numbers)
    steps = chain_of(completion).split(",")
    if len(steps) != NUMBERS - 1:
        return False
    for text in steps:
        match = _STEP.fullmatch(text)
        if match is None:
            return False
        a, op, b, written = match.groups()
        a, b, written = int(a), int(b), int(written)
        value = apply(max(a, b), op, min(a, b)) if op in "+*" else apply(a, op, b)
        if value is None or value != written:
            return False
        for x in (a, b):
            if x not in pool:
                return False
            pool.remove(x)
        pool.append(value)
    return pool == [target]


def reward(completion: str, answer: str) -> float:
    """Verifier reward: 1.0 for a correct chain (:func:`check`), else 0.0."""
    return 1.0 if check(completion, answer) else 0.0
