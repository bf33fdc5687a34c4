"""The embedded Countdown toy: task, verifier, shipped weights, sampled pass@1, trainer."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ead_vllm.countdown import EVAL_EAD, MAX_NEW_TOKENS, model_path, problems, reward
from ead_vllm.countdown.task import (
    apply,
    chains,
    check,
    iter_training_examples,
    make_problem,
    parse_answer,
    solutions,
    split_of,
)
from ead_vllm.params import EADParams


def _brute_force_values(numbers: tuple[int, ...]) -> set[int]:
    # Every value reachable by the rules, by a search independent of chains():
    # combine any two numbers in either order with any operator.
    if len(numbers) == 1:
        return {numbers[0]}
    out: set[int] = set()
    for i, j in itertools.permutations(range(len(numbers)), 2):
        rest = tuple(x for k, x in enumerate(numbers) if k not in (i, j))
        for op in "+-*":
            value = apply(numbers[i], op, numbers[j])
            if value is not None:
                out |= _brute_force_values((*rest, value))
    return out


@pytest.mark.parametrize("numbers", [(3, 7, 8, 2), (1, 1, 1, 1), (9, 9, 9, 9), (2, 5, 5, 6)])
def test_chains_reach_exactly_the_reachable_values(numbers: tuple[int, ...]) -> None:
    by_value = chains(numbers)
    assert set(by_value) == _brute_force_values(numbers)
    for value, texts in by_value.items():
        assert len(set(texts)) == len(texts)
        assert all(check(t, f"{' '.join(map(str, numbers))}>{value}") for t in texts)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("7-3=4,8*4=32,32+2=34", 1.0),
        ("3+7=10,10*2=20,20+8=28 <eos>junk", 0.0),  # valid chain, wrong target
        ("7-3=4,4*8=32,2+32=34", 1.0),  # + and * operands in either order
        ("7-3=4,8*4=32,32+2=34\n\nmore", 1.0),  # text after the chain is ignored
        ("3-7=-4,8*4=32,32+2=34", 0.0),  # negative result
        ("7-3=4,8*4=31,31+3=34", 0.0),  # wrong arithmetic, and 3 reused
        ("7-3=4,8*4=32,32+2=34,1+1=2", 0.0),  # a fourth step
        ("7-3=4,8*4=32", 0.0),  # too short
        ("7-3=4,7*4=28,28+6=34", 0.0),  # 7 used twice
        ("8/2=4,7-3=4,4*4=16", 0.0),  # division is not part of the game
        ("", 0.0),
        ("7 - 3 = 4, 8*4=32, 32+2=34", 0.0),  # spaces are not the format
    ],
)
def test_verifier(completion: str, expected: float) -> None:
    assert reward(completion, "3 7 8 2>34") == expected


def test_times_one_is_not_a_step() -> None:
    assert apply(5, "*", 1) is None and apply(1, "*", 5) is None
    assert not check("5*1=5,5+5=10,10+2=12", "5 1 5 2>12")


def test_every_training_chain_verifies() -> None:
    pairs = list(itertools.islice(iter_training_examples(seed=3), 500))
    assert all(check(chain, prompt[:-1]) for prompt, chain in pairs)
    lengths = [len(chain) + 1 for _, chain in pairs]  # + EOS; one token per character
    assert min(lengths) >= 19 and max(lengths) <= MAX_NEW_TOKENS


def test_problems_deterministic_split_and_solvable() -> None:
    a, b = problems(100, seed=4), problems(100, seed=4)
    assert a == b
    test = problems(300, seed=0)
    train = problems(300, seed=0, split="train")
    assert all(split_of(p.numbers, p.target) == "test" for p in test)
    assert not {(tuple(sorted(p.numbers)), p.target) for p in test} & {
        (tuple(sorted(p.numbers)), p.target) for p in train
    }
    assert all(solutions(p.numbers, p.target) for p in test)
    assert all(parse_answer(p.answer) == (p.numbers, p.target) for p in test)
    # many problems have several solutions: what exploration can find
    mean = sum(len(solutions(p.numbers, p.target)) for p in test) / len(test)
    assert 5.0 < mean < 11.0


def test_bad_input_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        problems(1, split="dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be"):
        problems(-1)
    with pytest.raises(ValueError, match="not a Countdown problem"):
        reward("1+1=2", "12+3=")


def test_make_problem_formats() -> None:
    p = make_problem((3, 7, 8, 2), 34)
    assert (p.prompt, p.answer) == ("3 7 8 2>34:", "3 7 8 2>34")


def test_eval_schedules_are_valid_and_documented() -> None:
    settings = [EADParams.model_validate_json(text) for text in EVAL_EAD]
    # the floor t = d ln(1 + tau_max - tau_min) falls inside a 19-23 token answer
    floors = [s.decay * math.log(1 + s.tau_max - s.tau_min) for s in settings]
    assert all(4 <= f <= 23 for f in floors)


# --- the shipped model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(model_path())


@pytest.fixture(scope="module")
def model() -> Any:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    return AutoModelForCausalLM.from_pretrained(model_path(), dtype=torch.float32).eval()


def test_weights_small_and_report_in_band() -> None:
    files = list(model_path().glob("*.safetensors"))
    assert files and sum(f.stat().st_size for f in files) < 8 * 2**20
    report = json.loads((model_path() / "train_report.json").read_text())
    assert 0.20 <= report["sampled_pass_at_1_T1_test"] <= 0.50


def test_sampled_pass_at_1_matches_report(model: Any, tokenizer: Any) -> None:
    """pass@1 at T = 1 on 384 fresh problems agrees with the report's (512 problems).

    Two binomial proportions; the band is 4 standard errors of their difference
    (two-sided level about 6e-5), so a model that changed or a sampler bug fails.
    """
    from ead_vllm.countdown.train import sampled_pass_at_1

    report = json.loads((model_path() / "train_report.json").read_text())
    fresh = problems(384, seed=77)
    got = sampled_pass_at_1(model, tokenizer, fresh, seed=123)
    want = report["sampled_pass_at_1_T1_test"]
    se = math.sqrt(want * (1 - want) * (1 / 384 + 1 / report["report_size"]))
    assert abs(got - want) < 4 * se


def test_greedy_completions_have_the_format(model: Any, tokenizer: Any) -> None:
    from ead_vllm.toy.evaluate import greedy_completions

    test = problems(64, seed=5)
    texts = greedy_completions(model, tokenizer, [p.prompt for p in test], max_new_tokens=32)
    # the model has learned the format: three steps, each "a op b=c"
    shaped = [t for t in texts if t.count(",") == 2 and t.count("=") == 3]
    assert len(shaped) >= 0.9 * len(texts)


@pytest.mark.slow
def test_train_script_runs(tmp_path: Path) -> None:
    from ead_vllm.countdown.train import main

    main(["--out", str(tmp_path / "m"), "--steps", "3", "--eval-every", "2", "--threads", "1"])
    report = json.loads((tmp_path / "m" / "train_report.json").read_text())
    assert report["steps_run"] == 3 and report["stop_reason"] == "max steps"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
