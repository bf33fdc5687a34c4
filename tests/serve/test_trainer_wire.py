"""SkyRL's and prime-rl's rollout requests against a live ``ead-vllm serve``.

Both trainers send rollouts to vLLM's token-in/token-out route, ``POST
/inference/v1/generate`` (on vLLM >= 0.30 behind ``--enable-scale-out``), with the
prompt as ``token_ids`` and vLLM's ``SamplingParams`` as ``sampling_params``; EAD's
keys ride in ``sampling_params.extra_args``, which EAD's middleware does not touch
(the engine validates them). The bodies are built the way each trainer builds them:

* SkyRL 0.4.0: ``get_vllm_sampling_params`` (``skyrl/backends/skyrl_train/
  inference_servers/engine_utils.py``: typed fields, then the keys of
  ``generator.sampling_params.additional_kwargs`` not already set) and
  ``RemoteGenerateClient.generate`` (``.../inference_servers/remote_inference_client.py``:
  the payload, one request per sample), with ``additional_kwargs`` from
  :func:`ead_vllm.integrations.skyrl.ead_additional_kwargs`;
* prime-rl (main, with its verifiers and renderers): ``TrainSamplingConfig.to_sampling_args``
  (``packages/prime-rl-configs/src/prime_rl/configs/orchestrator.py``) plus the
  ``cache_salt`` of ``Env._sampling`` (``src/prime_rl/orchestrator/envs.py``); verifiers'
  ``TrainClient.get_response`` (``verifiers/v1/clients/train.py``: ``extra_body``
  flattened into the sampling params, the typed fields over it); renderers'
  ``client.generate`` (``renderers/client.py``: stop token ids, ``logprobs=1``,
  ``skip_special_tokens`` default, the payload).

The server runs as the SkyRL docs here tell users: ``--logprobs-mode
processed_logprobs``. Checked: the returned log-probs are the annealed ones of the
step's ``d_s`` (a transformers oracle at ``T * tau_t`` per position), not a
neighbouring step's; ``ead_enabled: 0`` samples stock; bad ``ead_*`` values are a
400 naming the key, and the server keeps serving.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from serve_support import running_server
from transformers import AutoTokenizer
from vllm import SamplingParams
from vllm_engine_support import Oracle

from ead_vllm.integrations.skyrl import ead_additional_kwargs, schedule_step
from ead_vllm.params import EXTRA_ARGS_SWITCH
from ead_vllm.step_schedule import StepSchedule
from ead_vllm.toy import model_path, problems

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.live_engine, pytest.mark.timeout(600)]

MODEL = "ead-toy"
ROUTE = "/inference/v1/generate"
SCHEDULE = StepSchedule(d0=2.0, growth=4.0, tau_max=2.0, tau_min=0.3)
TEMPERATURE = 0.9
MAX_TOKENS = 8
PROMPTS = [p.prompt for p in problems(3, seed=11, split="train")]
ATOL = 2e-4


def _scale_out_flags() -> list[str]:
    """``--enable-scale-out`` where vLLM has it (0.30+); earlier releases serve the route always."""
    try:
        from vllm.entrypoints.launchers.cli_args import FrontendArgs
    except ImportError:  # vLLM 0.27/0.28 keep FrontendArgs under openai/
        from vllm.entrypoints.openai.cli_args import FrontendArgs
    return ["--enable-scale-out"] if hasattr(FrontendArgs, "enable_scale_out") else []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("trainer-wire") / "server.log"
    flags = ["--logprobs-mode", "processed_logprobs", *_scale_out_flags()]
    with running_server(log, flags) as (base, _):
        yield base


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(model_path())


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return Oracle(model_path())


def post(base: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        base + ROUTE, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ------------------------------------------------------------------ the two bodies


def skyrl_body(token_ids: list[int], additional_kwargs: dict | None) -> dict:
    """SkyRL 0.4.0's body for one sample, ``generator.sampling_params`` at its defaults."""
    sampling_params = {
        "min_tokens": 1,
        "skip_special_tokens": True,
        "include_stop_str_in_output": True,
        "max_tokens": MAX_TOKENS,  # max_generate_length
        "temperature": TEMPERATURE,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "logprobs": 1,
        "stop": None,
    }
    for key, value in (additional_kwargs or {}).items():
        sampling_params.setdefault(key, value)
    return {"sampling_params": sampling_params, "model": MODEL, "token_ids": token_ids}


def prime_rl_body(token_ids: list[int], extra_body: dict, stop_token_ids: list[int]) -> dict:
    """prime-rl's body for one live-policy rollout turn (``[orchestrator.train.sampling]``)."""
    # TrainSamplingConfig.to_sampling_args, then Env._sampling's cache salt (policy version)
    sampling = {"temperature": TEMPERATURE, "top_p": 1.0, "logprobs": True}
    sampling["max_completion_tokens"] = MAX_TOKENS
    sampling["extra_body"] = {**extra_body, "cache_salt": "0"}
    # verifiers: vf.SamplingConfig(**sampling).model_dump(exclude_none=True) names
    # max_completion_tokens max_tokens; extra_body is flattened under the typed fields
    raw = {k: v for k, v in sampling.items() if k != "max_completion_tokens"}
    raw["max_tokens"] = sampling["max_completion_tokens"]
    sampling_params = dict(raw.pop("extra_body"))
    sampling_params.pop("chat_template_kwargs", None)
    sampling_params.update(raw)
    # renderers.client.generate
    sampling_params["stop_token_ids"] = stop_token_ids
    sampling_params["logprobs"] = 1
    sampling_params.setdefault("skip_special_tokens", False)
    return {"model": MODEL, "token_ids": token_ids, "sampling_params": sampling_params}


# ------------------------------------------------------------------ the oracle


def _engine_logprobs(answer: dict) -> tuple[list[int], np.ndarray]:
    assert set(answer) >= {"choices"}, answer
    choice = answer["choices"][0]
    return choice["token_ids"], np.array([c["logprob"] for c in choice["logprobs"]["content"]])


def _max_gap(
    oracle: Oracle,
    prompts: list[list[int]],
    answers: list[dict],
    extra_args: dict | None,
    *,
    min_tokens: int,
    eos: int,
) -> float:
    """Largest |engine - oracle| log-prob over ``answers``; ``min_tokens`` masks EOS early."""
    params = SamplingParams(temperature=TEMPERATURE, extra_args=extra_args)
    gaps = []
    for prompt, answer in zip(prompts, answers, strict=True):
        completion, engine = _engine_logprobs(answer)
        expected = oracle.logprobs(prompt, completion, params)
        for t in range(min(min_tokens, len(completion))):
            expected[t] = oracle.logprobs(prompt, completion[: t + 1], params, banned=[eos])[t]
        gaps.append(np.abs(engine - expected).max())
    return float(max(gaps))


def _prompt_ids(tokenizer: Any) -> list[list[int]]:
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


def _answers(server: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Post each body in turn (one request per sample, as both trainers do); all must be 200."""
    answers = []
    for body in bodies:
        status, answer = post(server, body)
        assert status == 200, answer
        answers.append(answer)
    return answers


# ------------------------------------------------------------------ tests


def test_skyrl_rollouts_sample_with_the_steps_annealing(
    server: str, tokenizer: Any, oracle: Oracle
) -> None:
    """``additional_kwargs`` as the step callback sets it at SkyRL's global_step 3."""
    step = schedule_step(3)
    kwargs = ead_additional_kwargs(None, SCHEDULE, step)
    prompts = _prompt_ids(tokenizer) * 2  # SkyRL sends one request per sample (n=1)
    answers = _answers(server, [skyrl_body(ids, kwargs) for ids in prompts])
    eos = tokenizer.eos_token_id
    ead = SCHEDULE.params_at(step).to_extra_args()
    assert _max_gap(oracle, prompts, answers, ead, min_tokens=1, eos=eos) < ATOL
    neighbour = SCHEDULE.params_at(step - 1).to_extra_args()
    assert _max_gap(oracle, prompts, answers, neighbour, min_tokens=1, eos=eos) > 10 * ATOL
    # SkyRL's min_tokens=1 masks EOS at the first position; the oracle must too
    assert _max_gap(oracle, prompts, answers, ead, min_tokens=0, eos=eos) > 10 * ATOL


def test_prime_rl_rollouts_sample_with_the_steps_annealing(
    server: str, tokenizer: Any, oracle: Oracle
) -> None:
    """``[orchestrator.train.sampling.extra_body] extra_args = {ead_* ...}``."""
    extra_body = {"extra_args": SCHEDULE.params_at(2).to_extra_args()}
    prompts = _prompt_ids(tokenizer)
    eos = tokenizer.eos_token_id
    answers = _answers(server, [prime_rl_body(ids, extra_body, [eos]) for ids in prompts])
    ead = SCHEDULE.params_at(2).to_extra_args()
    assert _max_gap(oracle, prompts, answers, ead, min_tokens=0, eos=eos) < ATOL
    neighbour = SCHEDULE.params_at(1).to_extra_args()
    assert _max_gap(oracle, prompts, answers, neighbour, min_tokens=0, eos=eos) > 10 * ATOL


def test_ead_enabled_0_samples_stock(server: str, tokenizer: Any, oracle: Oracle) -> None:
    """SkyRL's evaluation params with ``ead_enabled: 0`` (``step=None``)."""
    kwargs = ead_additional_kwargs(None, SCHEDULE, None)
    assert kwargs == {"extra_args": {EXTRA_ARGS_SWITCH: 0}}
    prompts = _prompt_ids(tokenizer)
    answers = _answers(server, [skyrl_body(ids, kwargs) for ids in prompts])
    eos = tokenizer.eos_token_id
    assert _max_gap(oracle, prompts, answers, None, min_tokens=1, eos=eos) < ATOL
    ead = SCHEDULE.params_at(0).to_extra_args()
    assert _max_gap(oracle, prompts, answers, ead, min_tokens=1, eos=eos) > 10 * ATOL


@pytest.mark.parametrize(
    ("extra_args", "key"),
    [
        ({"ead_tau_max": -1.0, "ead_tau_min": 0.1, "ead_decay": 10.0}, "ead_tau_max"),
        ({"ead_decay": "fast"}, "ead_decay"),
        ({"ead_tau_maxx": 1.2}, "ead_tau_maxx"),
        ({"ead_enabled": 2}, "ead_enabled"),
    ],
)
def test_bad_ead_values_are_a_400_naming_the_key(
    server: str, tokenizer: Any, extra_args: dict, key: str
) -> None:
    ids = _prompt_ids(tokenizer)[0]
    for body in (
        skyrl_body(ids, {"extra_args": extra_args}),
        prime_rl_body(ids, {"extra_args": extra_args}, [tokenizer.eos_token_id]),
    ):
        status, answer = post(server, body)
        assert status == 400, answer
        assert key in answer["error"]["message"], answer
    # the server is still there and still anneals
    status, answer = post(server, skyrl_body(ids, ead_additional_kwargs(None, SCHEDULE, 0)))
    assert status == 200, answer
    assert answer["choices"][0]["token_ids"]
