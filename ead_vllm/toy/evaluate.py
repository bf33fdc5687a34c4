"""Batched greedy evaluation of a causal LM on toy-task problems, with transformers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ead_vllm.toy.task import Problem, reward

# The longest answer is 6 digits (99999 + 99999), then EOS.
MAX_NEW_TOKENS = 8


@torch.no_grad()
def greedy_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 512,
    temperature: float | None = None,
) -> list[str]:
    """Return the greedy completion of each prompt (special tokens stripped).

    With ``temperature`` set, each completion is instead sampled from the full
    softmax at that temperature (no top-k, no top-p), from torch's global RNG.
    """
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left")
            generated = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=temperature is not None,
                **(
                    {}
                    if temperature is None
                    else {"temperature": temperature, "top_k": 0, "top_p": 1.0}
                ),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = generated[:, enc["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out


def greedy_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem]
) -> float:
    """Return the fraction of problems whose greedy completion earns reward 1."""
    if not problems:
        raise ValueError("no problems to evaluate")
    completions = greedy_completions(model, tokenizer, [p.prompt for p in problems])
    return sum(reward(c, p.answer) for c, p in zip(completions, problems, strict=True)) / len(
        problems
    )
