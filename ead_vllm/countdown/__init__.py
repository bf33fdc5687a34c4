"""Embedded Countdown model: a small Qwen2 that chains + - * steps from four digits to a target.

The second toy, where early choices matter: ``model_path()`` is a Hugging Face
model directory that vLLM and transformers load offline; ``problems`` and
``reward`` (the verifier) define the task (:mod:`ead_vllm.countdown.task`);
``python -m ead_vllm.countdown.train`` rebuilds the model from scratch.
"""

from __future__ import annotations

from pathlib import Path

from ead_vllm.countdown.task import MAX_NEW_TOKENS, Problem, problems, reward

__all__ = ["EVAL_EAD", "MAX_NEW_TOKENS", "Problem", "model_path", "problems", "reward"]

# EAD settings `ead-vllm eval --task ead_vllm.countdown` compares by default. The decay
# is chosen from the answer lengths: chains are 19-23 tokens (mean 21.5) and the first
# step, which picks the plan, is 5-7 tokens. With tau 1.2 -> 0.1 the floor is reached at
# t = d * ln(2.1) = 0.74 d: d = 8 cools after the first step (t = 6), d = 16 after the
# second (t = 12), d = 28 at the end of the answer (t = 21); the fourth setting starts
# hotter (1.5) with the mid-chain decay.
EVAL_EAD = (
    '{"tau_max": 1.2, "tau_min": 0.1, "decay": 8}',
    '{"tau_max": 1.2, "tau_min": 0.1, "decay": 16}',
    '{"tau_max": 1.2, "tau_min": 0.1, "decay": 28}',
    '{"tau_max": 1.5, "tau_min": 0.1, "decay": 16}',
)


def model_path() -> Path:
    """Return the directory of the shipped Countdown model (config, weights, tokenizer)."""
    return Path(__file__).resolve().parent / "model"
