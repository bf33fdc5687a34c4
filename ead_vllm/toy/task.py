"""The toy task: integer addition with the sum's digits written in reverse order.

A prompt reads ``"<a>+<b>="``; the expected completion is the decimal sum written
least-significant digit first (``"12+345="`` -> ``"753"``), then EOS. Writing the
low digit first lets a small causal model carry left to right, so each answer
token is a short reasoning step that depends on the previous ones. Operand lengths
are drawn uniformly from 1 to 5 digits, which spreads difficulty across problems.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "test"]

MIN_DIGITS = 1
MAX_DIGITS = 5
# One problem in TEST_MODULUS belongs to the test split.
TEST_MODULUS = 10

_LEADING_ANSWER = re.compile(r"\s*(\d+)")
_PROMPT = re.compile(r"(\d+)\+(\d+)=")


@dataclass(frozen=True)
class Problem:
    """One addition problem: ``prompt`` to complete, ``answer`` the expected completion."""

    a: int
    b: int
    prompt: str
    answer: str


def format_prompt(a: int, b: int) -> str:
    """Return the prompt text for ``a + b``."""
    return f"{a}+{b}="


def solve(a: int, b: int) -> str:
    """Return the expected completion for ``a + b``: the sum's digits reversed."""
    return str(a + b)[::-1]


def parse_prompt(prompt: str) -> tuple[int, int]:
    """Return the operands of a prompt made by :func:`format_prompt`; ValueError otherwise."""
    match = _PROMPT.fullmatch(prompt)
    if match is None:
        raise ValueError(f"not a toy-task prompt: {prompt!r}")
    return int(match.group(1)), int(match.group(2))


def split_of(a: int, b: int) -> Split:
    """Return the split that owns ``a + b``, fixed by a hash of the operands."""
    digest = hashlib.blake2b(f"{a}+{b}".encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % TEST_MODULUS == 0 else "train"


def make_problem(a: int, b: int) -> Problem:
    """Return the :class:`Problem` for ``a + b``."""
    return Problem(a=a, b=b, prompt=format_prompt(a, b), answer=solve(a, b))


def _operand(rng: random.Random) -> int:
    digits = rng.randint(MIN_DIGITS, MAX_DIGITS)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def iter_problems(*, seed: int = 0, split: Split = "test") -> Iterator[Problem]:
    """Yield the endless stream of ``split`` problems drawn with ``seed``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    # The split name is mixed into the seed so both splits draw independent streams.
    rng = random.Random(f"{seed}:{split}")
    while True:
        a, b = _operand(rng), _operand(rng)
        if split_of(a, b) == split:
            yield make_problem(a, b)


def problems(n: int, *, seed: int = 0, split: Split = "test") -> list[Problem]:
    """Return ``n`` problems of ``split`` drawn with ``seed``; same arguments, same list.

    The list is the first ``n`` of :func:`iter_problems`. Problems may repeat (there
    are only 100 one-digit pairs). The train and test splits never share a problem.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(itertools.islice(iter_problems(seed=seed, split=split), n))


def extract_answer(completion: str) -> str | None:
    """Return the leading run of digits of ``completion`` (after whitespace), or None."""
    match = _LEADING_ANSWER.match(completion)
    return match.group(1) if match else None


def reward(completion: str, answer: str) -> float:
    """Return 1.0 if the completion's leading digits equal ``answer`` exactly, else 0.0.

    Anything after the digits (EOS text, a newline, junk from a completion that
    never stopped) is ignored; an extra or missing digit is wrong.
    """
    got = extract_answer(completion)
    return 1.0 if got is not None and got == answer.strip() else 0.0
