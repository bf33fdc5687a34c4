"""A random-weight Qwen2 model with a full-size vocabulary, for throughput benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from ead_vllm.toy.architecture import qwen2_config, save_model
from ead_vllm.toy.tokenizer import (
    BOS,
    CHAT_TEMPLATE,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    byte_level_tokenizer,
    save_tokenizer,
    vocabulary,
)


def _synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    # The toy's byte tokens, then one synthetic word per remaining id, so that any
    # id vLLM samples detokenizes (to " w<id>"; "\u0120" is the byte-level space).
    # Text encodes to byte tokens: there are no merges.
    vocab = vocabulary()
    for i in range(len(vocab), vocab_size):
        vocab[f"\u0120w{i}"] = i
    tok = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_tokenizer(vocab, list(SPECIAL_TOKENS)),
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_random_model(
    out_dir: str | Path,
    *,
    vocab_size: int = 151_936,
    hidden_size: int = 256,
    num_layers: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> Path:
    """Write a random float32 Qwen2 model and a tokenizer covering every id into ``out_dir``.

    Heads have dim 64 (``hidden_size`` must be a multiple of 64). Ids below 260 are
    the toy model's tokens (pad, bos, eos, unk, then one per byte); every higher id
    decodes to the word `` w<id>``. Returns ``out_dir``; the same ``seed`` gives the
    same weights.
    """
    vocab = vocabulary()
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size must be at least {len(vocab)}, got {vocab_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = qwen2_config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        intermediate_size=intermediate_size or 4 * hidden_size,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    save_model(model, out)
    tokenizer = _synthetic_tokenizer(vocab_size)
    tokenizer.model_max_length = max_position_embeddings
    save_tokenizer(out, tokenizer)
    return out
