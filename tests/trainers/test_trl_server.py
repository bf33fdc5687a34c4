"""TRL's server-mode request path against a live ``ead-vllm serve``.

TRL's server-mode trainer cannot be built on CPU: its weight transfer
(``VLLMClient.init_communicator``) needs NCCL. Everything else of the path runs
for real: TRL 1.16.0's ``VLLMClient`` (health check, model lookup, ``generate``
posting ``/v1/completions``) with the fields ``EADGRPOTrainer`` adds in server
mode (:func:`rollout_request_fields`: the temperature and the ``ead_*`` keys
under ``vllm_xargs``), against the server started as the docs tell TRL users:
``ead-vllm serve --logprobs-mode processed_logprobs``. Checked: the log-probs
TRL parses are the annealed ones of that step's ``d_s`` (a transformers oracle),
and an evaluation request (``ead_enabled: 0``) samples stock.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from serve_support import running_server
from trl.generation.vllm_client import VLLMClient
from vllm import SamplingParams
from vllm_engine_support import Oracle

from ead_vllm.integrations.trl import rollout_request_fields
from ead_vllm.step_schedule import StepSchedule
from ead_vllm.toy import model_path, problems

# Runner V1 only: `make test` runs the server on runner V2 in test_serve_live.py.
pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(600)]

SCHEDULE = StepSchedule(d0=2.0, growth=4.0, tau_max=2.0, tau_min=0.3)
PROMPTS = [p.prompt for p in problems(3, seed=11, split="train")]
ATOL = 2e-4


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMClient]:
    log = tmp_path_factory.mktemp("trl-serve") / "server.log"
    with running_server(log, ["--logprobs-mode", "processed_logprobs"]) as (base, _):
        yield VLLMClient(base_url=base, connection_timeout=30)


def _generate(client: VLLMClient, fields: dict) -> dict:
    """What TRL's ``VLLMGeneration.generate`` sends in server mode, with ``fields`` added."""
    fields = dict(fields)
    return client.generate(
        prompts=PROMPTS,
        n=3,
        temperature=fields.pop("temperature"),
        max_tokens=8,
        logprobs=0,
        generation_kwargs=fields,
    )


def _max_gap(out: dict, temperature: float, extra_args: dict | None) -> float:
    oracle = Oracle(model_path())
    params = SamplingParams(temperature=temperature, extra_args=extra_args)
    gaps = []
    for i, completion in enumerate(out["completion_ids"]):
        prompt = out["prompt_ids"][i // 3]
        engine = np.array([lp[0] for lp in out["logprobs"][i]])
        gaps.append(np.abs(engine - oracle.logprobs(prompt, completion, params)).max())
    return float(max(gaps))


def test_server_mode_requests_carry_the_steps_schedule(client: VLLMClient) -> None:
    fields = rollout_request_fields(vllm_mode="server", temperature=0.9, schedule=SCHEDULE, step=2)
    out = _generate(client, fields)
    assert len(out["completion_ids"]) == 3 * len(PROMPTS)
    assert _max_gap(out, 0.9, SCHEDULE.params_at(2).to_extra_args()) < ATOL
    assert _max_gap(out, 0.9, SCHEDULE.params_at(1).to_extra_args()) > 10 * ATOL


def test_server_mode_evaluation_requests_sample_stock(client: VLLMClient) -> None:
    fields = rollout_request_fields(
        vllm_mode="server", temperature=0.9, schedule=SCHEDULE, step=None
    )
    assert fields["vllm_xargs"] == {"ead_enabled": 0}
    out = _generate(client, fields)
    assert _max_gap(out, 0.9, None) < ATOL
    assert _max_gap(out, 0.9, SCHEDULE.params_at(0).to_extra_args()) > 10 * ATOL
