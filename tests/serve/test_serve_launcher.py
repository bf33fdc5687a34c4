"""`ead-vllm serve` argument handling: vLLM's own parser, plus what EAD changes."""

from __future__ import annotations

import pytest
from ead_vllm.serve.launcher import (
    CPU_DEFAULT_MAX_NUM_SEQS,
    MIDDLEWARE,
    TOY_MODEL_NAME,
    apply_cpu_memory_default,
    kv_cache_bytes_for,
    model_kv_footprint,
    parse_args,
)

from ead_vllm.toy import model_path

pytestmark = pytest.mark.vllm


def test_defaults_serve_the_toy_model_on_loopback_with_ead() -> None:
    args = parse_args(["--port", "8123"])
    assert args.model_tag == str(model_path())
    assert args.served_model_name == [TOY_MODEL_NAME]
    assert args.host == "127.0.0.1"
    assert args.port == 8123
    assert args.additional_config["sampler"] == "ead"
    assert args.middleware == [MIDDLEWARE]
    assert args.ead_defaults is None
    assert args.dtype == "float32"  # the toy's checkpoint dtype, not vLLM's bf16 on CPU


def test_user_choices_are_kept() -> None:
    args = parse_args(
        [
            "/models/m",
            "--host",
            "0.0.0.0",
            "--additional-config",
            '{"foo": 1}',
            "--middleware",
            "my.Middleware",
            "--ead-defaults",
            '{"decay": 40}',
        ]
    )
    assert args.model_tag == "/models/m" and not args.served_model_name
    assert args.host == "0.0.0.0"
    assert args.additional_config == {"foo": 1, "sampler": "ead"}
    assert args.middleware == ["my.Middleware", MIDDLEWARE]
    assert args.ead_defaults == '{"decay": 40}'
    assert args.dtype == "auto"  # a user's model keeps vLLM's rule
    assert parse_args(["--dtype", "bfloat16"]).dtype == "bfloat16"


@pytest.mark.parametrize("bad", ['{"tau_min": 0}', '{"decay": "x"}', "not json", '{"bogus": 1}'])
def test_bad_ead_defaults_exit_with_a_message(bad: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--ead-defaults", bad])
    assert exc.value.code == 2
    assert "--ead-defaults" in capsys.readouterr().err


MiB = 1 << 20
GiB = 1 << 30


def test_kv_cache_rule() -> None:
    # every sequence at full context fits: 2 KiB/token x 128 tokens x 64 sequences
    assert kv_cache_bytes_for(2048, 128, 64, available=8 * GiB) == 16 * MiB
    # capped at half of the available memory
    assert kv_cache_bytes_for(28672, 32768, 256, available=8 * GiB) == 4 * GiB
    # never below one full-context sequence (vLLM's minimum), whatever is free
    assert kv_cache_bytes_for(28672, 32768, 256, available=1 * GiB) == 28672 * 32768
    # whole MiB
    assert kv_cache_bytes_for(1000, 3, 1, available=GiB) == MiB


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--kv-cache-memory-bytes", "123456789"], {}),
        (["--kv_cache_memory_bytes=123456789"], {}),
        (["--gpu-memory-utilization", "0.5"], {}),
        (["--gpu-memory-utilization=0.5"], {}),
        ([], {"VLLM_CPU_KVCACHE_SPACE": "2"}),
    ],
)
def test_user_memory_choice_is_kept(argv: list[str], env: dict[str, str]) -> None:
    args = parse_args(argv)
    before = args.kv_cache_memory_bytes
    assert apply_cpu_memory_default(args, argv, environ=env) is None
    assert args.kv_cache_memory_bytes == before


def test_first_run_on_cpu_sizes_the_kv_cache_for_the_toy() -> None:
    args = parse_args([])
    per_token, max_model_len = model_kv_footprint(args)
    # 2 layers x 2 KV heads x head size 64 x (K, V) x 4 bytes (float32)
    assert (per_token, max_model_len) == (2 * 2 * 64 * 2 * 4, 128)
    size = apply_cpu_memory_default(args, [], environ={})
    assert size == args.kv_cache_memory_bytes == per_token * 128 * CPU_DEFAULT_MAX_NUM_SEQS
    seqs = parse_args(["--max-num-seqs", "8", "--max-model-len", "64"])
    assert apply_cpu_memory_default(seqs, [], environ={}) == 1 * MiB  # 2 KiB x 64 x 8
