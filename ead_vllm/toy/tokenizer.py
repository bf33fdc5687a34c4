"""Character-level tokenizer of the toy model, built with the ``tokenizers`` library.

It is a byte-level BPE with no merges: one token per byte, so every ASCII
character is its own token and any text encodes. This is the exact shape that
transformers 5 rebuilds for every ``qwen2`` model (its ``Qwen2Tokenizer`` keeps
only the vocabulary and merges of tokenizer.json and installs its own byte-level
pre-tokenizer and decoder), so the tokenizer behaves the same whichever class
loads it: transformers 4 or 5, or vLLM. No post-processor adds BOS, because
``Qwen2Tokenizer`` would drop it; prompts start directly with their text.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
# Never produced by encoding (every byte has a token); it is named so that
# Qwen2Tokenizer does not add its own default unk token past the model's vocabulary.
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

# The pre-tokenizer regex of Qwen2Tokenizer, so both loaders split text alike.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Chat messages render as the user messages verbatim: a problem's prompt already
# ends with "=", the cue to answer, so the generation prompt adds nothing and chat
# and plain completions see the same tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
)


def byte_symbols() -> list[str]:
    """Return the 256 byte-level symbols (the GPT-2 byte-to-unicode map) in byte order.

    Printable Latin-1 bytes stand for themselves; the others (controls, space,
    0x7F-0xA0, 0xAD) are shifted to code points 256 and up, in byte order.
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    symbols: list[str] = []
    shifted = 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def vocabulary() -> dict[str, int]:
    """Return the token -> id map: pad 0, bos 1, eos 2, unk 3, then byte ``b`` at id ``4 + b``."""
    tokens = list(SPECIAL_TOKENS) + byte_symbols()
    return {tok: i for i, tok in enumerate(tokens)}


def byte_level_tokenizer(vocab: dict[str, int], special_tokens: list[str]) -> Tokenizer:
    """Return a merge-free byte-level BPE ``Tokenizer`` over ``vocab`` shaped like Qwen2's."""
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(special_tokens)
    return core


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Return the toy tokenizer: one token per byte, EOS ends an answer, no BOS is added."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_tokenizer(vocabulary(), list(SPECIAL_TOKENS)),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=128,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(out_dir: str | Path, tok: PreTrainedTokenizerFast | None = None) -> None:
    """Write ``tok`` (default: the toy tokenizer) into ``out_dir`` in a portable layout.

    The chat template goes inside tokenizer_config.json, not chat_template.jinja,
    and the class is named ``PreTrainedTokenizerFast``, so that transformers 4
    releases, as pinned by RL frameworks, load it as well.
    """
    out = Path(out_dir)
    tok = tok if tok is not None else build_tokenizer()
    tok.save_pretrained(str(out), save_jinja_files=False)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special = {
        name: value
        for name in ("bos_token", "eos_token", "pad_token", "unk_token")
        if (value := getattr(tok, name, None)) is not None
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
