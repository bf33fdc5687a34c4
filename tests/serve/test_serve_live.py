"""`ead-vllm serve` on loopback with the embedded toy model, driven by the real `openai` client.

One server for the whole module (engine start is the slow part).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_support import running_server
from vllm_engine_support import RUNNER

from ead_vllm.toy import problems

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.live_engine,
]

EAD = {"tau_max": 1.2, "tau_min": 0.1, "decay": 8}
MODEL = "ead-toy"
PROMPTS = [p.prompt for p in problems(8, seed=3)]


SERVER_PIDS: dict[str, int] = {}
SERVER_LOGS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(log) as (base, pid):
        SERVER_PIDS[base] = pid
        SERVER_LOGS[base] = log
        yield base


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def complete(client: openai.OpenAI, prompt: str, **kw: Any) -> Any:
    return client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, **kw)


def test_binds_loopback_and_serves_the_toy_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_the_server_runs_the_ead_sampler_on_the_requested_runner(server: str) -> None:
    text = SERVER_LOGS[server].read_text()
    assert f"EAD sampler installed on model runner {RUNNER.upper()}" in text, text[-3000:]


def test_first_run_sizes_the_kv_cache_and_keeps_the_checkpoint_dtype(server: str) -> None:
    """Started without VLLM_CPU_KVCACHE_SPACE / --gpu-memory-utilization / --dtype."""
    log = SERVER_LOGS[server].read_text()
    # toy: 2 layers x 2 KV heads x head 64 x K and V x 4 bytes = 2 KiB per token;
    # 64 sequences x 128 tokens = 16 MiB, far below half of any machine's free memory
    assert "ead-vllm serve: KV cache 16 MiB (sized for the model and its context" in log
    assert "dtype=torch.float32" in log
    assert "dtype=torch.bfloat16" not in log


def test_ead_object_and_xargs_give_the_same_seeded_samples(client: openai.OpenAI) -> None:
    a = complete(client, PROMPTS[0], n=4, seed=11, extra_body={"ead": EAD})
    b = complete(
        client,
        PROMPTS[0],
        n=4,
        seed=11,
        extra_body={"vllm_xargs": {f"ead_{k}": v for k, v in EAD.items()}},
    )
    again = complete(client, PROMPTS[0], n=4, seed=11, extra_body={"ead": EAD})
    texts = [c.text for c in a.choices]
    assert texts == [c.text for c in b.choices] == [c.text for c in again.choices]
    assert len(texts) == 4


def test_seeded_ead_is_reproducible_across_batch_compositions(server: str) -> None:
    """A seeded EAD request gives the same samples alone and amid 24 concurrent others."""
    target = {"prompt": PROMPTS[5], "n": 4, "seed": 77, "extra_body": {"ead": EAD}}

    async def run(with_others: bool) -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
        async with aclient:
            others = [
                aclient.completions.create(
                    model=MODEL,
                    prompt=PROMPTS[i % len(PROMPTS)],
                    max_tokens=8,
                    n=1 + i % 3,
                    temperature=0.5 + (i % 4) * 0.3,
                    extra_body={"ead": {"decay": 2 + i}} if i % 2 else {},
                )
                for i in range(24 if with_others else 0)
            ]
            main = aclient.completions.create(model=MODEL, max_tokens=8, **target)
            done = await asyncio.gather(*others[:12], main, *others[12:])
        return [c.text for c in done[len(others) // 2].choices]

    alone = asyncio.run(run(False))
    assert asyncio.run(run(True)) == alone
    assert asyncio.run(run(True)) == alone


def test_ead_changes_the_distribution(client: openai.OpenAI) -> None:
    # With tau fixed at 0.01 from t = 0, EAD sampling is greedy for all practical purposes,
    # while plain sampling at the same request temperature (1.0) is not.
    cold = {"tau_max": 0.01, "tau_min": 0.01, "decay": 1}
    diverse = 0
    for i, prompt in enumerate(PROMPTS):
        greedy = complete(client, prompt, temperature=0).choices[0].text
        plain = complete(client, prompt, n=16, seed=i, temperature=1.0)
        diverse += len({c.text for c in plain.choices}) > 1
        ead = complete(client, prompt, n=16, seed=i, temperature=1.0, extra_body={"ead": cold})
        assert {c.text for c in ead.choices} == {greedy}, prompt
    assert diverse >= 1


def test_chat_completions_with_ead(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPTS[2]}],
        max_tokens=8,
        seed=3,
        extra_body={"ead": EAD},
    )
    assert resp.choices[0].message.content is not None
    assert resp.choices[0].finish_reason in {"stop", "length"}


def test_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    full = complete(client, PROMPTS[3], seed=21, extra_body={"ead": EAD}).choices[0].text
    stream = client.completions.create(
        model=MODEL, prompt=PROMPTS[3], max_tokens=8, seed=21, stream=True, extra_body={"ead": EAD}
    )
    assert "".join(chunk.choices[0].text for chunk in stream) == full


def test_logprobs_with_ead(client: openai.OpenAI) -> None:
    resp = complete(client, PROMPTS[4], seed=2, logprobs=1, extra_body={"ead": EAD})
    lps = resp.choices[0].logprobs.token_logprobs
    assert lps and all(lp is not None and lp <= 0.0 for lp in lps)


def test_bad_settings_get_400_and_the_server_keeps_serving(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, PROMPTS[0], extra_body={"ead": {"tau_min": -1}})
    assert "ead.tau_min" in str(err.value)
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, PROMPTS[0], extra_body={"vllm_xargs": {"ead_decay": 0}})
    assert "ead_decay" in str(err.value)
    assert complete(client, PROMPTS[0], extra_body={"ead": EAD}).choices[0].text is not None


def test_openapi_documents_ead(server: str) -> None:
    with urllib.request.urlopen(f"{server}/openapi.json") as resp:
        schema = json.load(resp)
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        assert "ead" in schema["components"]["schemas"][name]["properties"], name


def _post(server: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"{server}/v1/completions", data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


EAD_FIELDS = {"tau_max", "tau_min", "decay", "warmup", "offset"}


def _not_zero(value: Any) -> bool:
    # 0 is a valid warmup (bad for the other fields); False == 0 is still rejected (strict)
    return not (type(value) is int and value == 0)


bad_values = st.one_of(
    st.sampled_from([0, -1, -1e300, "1.2", True, False, None, [], {}, "NaN"]),
    st.floats(max_value=0.0),
    st.text(max_size=5),
)
malformed_ead = st.one_of(
    st.dictionaries(
        st.sampled_from(["tau_max", "tau_min", "decay"]), bad_values, min_size=1, max_size=3
    ),
    st.fixed_dictionaries(
        {"warmup": st.one_of(st.integers(max_value=-1), st.floats(), bad_values.filter(_not_zero))}
    ),
    st.fixed_dictionaries(
        {"offset": st.one_of(st.integers(max_value=-1), st.floats(), bad_values.filter(_not_zero))}
    ),
    st.dictionaries(
        st.text(min_size=1, max_size=6).filter(lambda k: k not in EAD_FIELDS),
        st.integers(),
        min_size=1,
        max_size=2,
    ),
    st.one_of(st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(ead=malformed_ead)
def test_fuzz_malformed_ead_bodies_get_400(server: str, ead: Any) -> None:
    body = json.dumps({"model": MODEL, "prompt": PROMPTS[0], "max_tokens": 2, "ead": ead})
    status, doc = _post(server, body.encode())
    assert status == 400, (ead, doc)
    assert doc["error"]["param"].startswith("ead")
    good = {"model": MODEL, "prompt": PROMPTS[0], "max_tokens": 2}
    ok_status, _ = _post(server, json.dumps(good).encode())
    assert ok_status == 200


def _server_rss(server_pid: int) -> int:
    proc = psutil.Process(server_pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


# requests per client: fewer on runner V2, whose interpreted Triton steps take ~0.5 s
LOAD_ROUNDS = 10 if RUNNER == "v1" else 3


def test_load_32_clients_mixed_ead(server: str) -> None:
    """32 concurrent clients x LOAD_ROUNDS requests, half EAD: zero errors, RSS growth
    bounded."""
    pid = SERVER_PIDS[server]

    async def one_client(aclient: openai.AsyncOpenAI, i: int) -> int:
        errors = 0
        for j in range(LOAD_ROUNDS):
            extra = {"ead": EAD} if (i + j) % 2 else {}
            try:
                r = await aclient.completions.create(
                    model=MODEL,
                    prompt=PROMPTS[(i + j) % len(PROMPTS)],
                    max_tokens=8,
                    seed=i * 100 + j,
                    extra_body=extra,
                )
                assert r.choices[0].text is not None
            except Exception:  # counted, reported by the assertion below
                errors += 1
        return errors

    async def all_clients() -> list[int]:
        aclient = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
        async with aclient:
            return await asyncio.gather(*(one_client(aclient, i) for i in range(32)))

    asyncio.run(all_clients())  # warm-up round: allocator pools settle
    before = _server_rss(pid)
    t0 = time.perf_counter()
    errors = asyncio.run(all_clients())
    elapsed = time.perf_counter() - t0
    after = _server_rss(pid)
    print(
        f"load: {32 * LOAD_ROUNDS} requests in {elapsed:.1f}s, "
        f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    )
    assert sum(errors) == 0
    assert after - before < 200 * 2**20, (before, after)
