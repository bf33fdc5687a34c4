"""Embedded toy model: a tiny Qwen2 trained on reversed-digit addition, shipped as package data.

``model_path()`` is a Hugging Face model directory that vLLM and transformers load
offline; ``problems`` and ``reward`` define its verifiable task; and
``build_random_model`` writes a random model with a full-size vocabulary for
throughput benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ead_vllm.toy.task import Problem, problems, reward

if TYPE_CHECKING:
    from ead_vllm.toy.random_model import build_random_model

__all__ = ["Problem", "build_random_model", "model_path", "problems", "reward"]


def model_path() -> Path:
    """Return the directory of the shipped toy model (config, weights, tokenizer)."""
    return Path(__file__).resolve().parent / "model"


def __getattr__(name: str) -> Any:
    # build_random_model needs torch and transformers; importing them lazily keeps
    # `from ead_vllm.toy import problems, reward` cheap for reward code.
    if name == "build_random_model":
        from ead_vllm.toy.random_model import build_random_model

        return build_random_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
