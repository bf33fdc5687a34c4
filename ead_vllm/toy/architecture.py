"""Qwen2 configurations of the toy model and the random benchmark model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedModel, Qwen2Config

# vLLM's CPU attention backend rejects head dims as small as 16; 64 is accepted.
HEAD_DIM = 64


def qwen2_config(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    intermediate_size: int,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    max_position_embeddings: int,
    tie_word_embeddings: bool = True,
) -> Qwen2Config:
    """Return a float32 Qwen2 config with heads of 64; ``hidden_size`` must be a multiple of 64."""
    if hidden_size % HEAD_DIM:
        raise ValueError(f"hidden_size must be a multiple of {HEAD_DIM}, got {hidden_size}")
    heads = hidden_size // HEAD_DIM
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=HEAD_DIM,
        hidden_act="silu",
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        tie_word_embeddings=tie_word_embeddings,
        use_sliding_window=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        attention_dropout=0.0,
        dtype=torch.float32,
        architectures=["Qwen2ForCausalLM"],
    )


def character_config(
    *, num_layers: int, intermediate_size: int, max_position_embeddings: int
) -> Qwen2Config:
    """Return a hidden-128 config (2 heads of 64) over the toys' byte-level vocabulary."""
    from ead_vllm.toy.tokenizer import BOS, EOS, PAD, vocabulary

    vocab = vocabulary()
    return qwen2_config(
        vocab_size=len(vocab),
        hidden_size=128,
        num_layers=num_layers,
        intermediate_size=intermediate_size,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
        max_position_embeddings=max_position_embeddings,
    )


def toy_config() -> Qwen2Config:
    """Return the toy model's config: hidden 128, 2 layers, 2 heads of 64, character vocab."""
    return character_config(num_layers=2, intermediate_size=256, max_position_embeddings=128)


def countdown_config() -> Qwen2Config:
    """Return the Countdown model's config: hidden 128, 4 layers, 2 heads of 64, character vocab.

    Twice the toy's depth, chosen (not compared with 2 layers) because a chain is
    planned at its first step and must stay arithmetic-exact after it.
    """
    return character_config(num_layers=4, intermediate_size=512, max_position_embeddings=64)


def save_model(model: PreTrainedModel, out_dir: str | Path) -> None:
    """Save ``model`` (config, weights, generation config) with keys old loaders need too."""
    model.save_pretrained(str(out_dir))
    # safetensors writes 0600 files; package data must be readable by every user.
    for weights in Path(out_dir).glob("*.safetensors"):
        weights.chmod(0o644)
    path = Path(out_dir) / "config.json"
    config = json.loads(path.read_text())
    # transformers 4.x, and the vLLM releases pinned with it, read these older keys.
    config.setdefault("torch_dtype", config.get("dtype", "float32"))
    config.setdefault("rope_theta", config.get("rope_parameters", {}).get("rope_theta", 10_000.0))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
