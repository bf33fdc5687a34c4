"""The EAD agent loop, the E3 manager and the resume offset in verl 0.9.1's own code.

What runs for real: verl's ``AgentLoopManagerTQ.generate_sequences`` (chunking and
dispatch), ``AgentLoopWorkerTQ`` (undecorated: its ``generate_sequences``,
``_run_prompt`` with the per-prompt ``__rollout_n__``, ``_run_agent_loop`` with the
agent-loop registry filled from ``examples/verl/agent_loops.yaml``, and its
postprocess: scoring, tensors), verl's single-turn agent loop under
:class:`EADSingleTurnAgentLoop` (chat template, tokenization of the toy model's
tokenizer), verl's ``LLMServerClient`` / ``FullyAsyncLLMServerClient`` (the resume
loop), and the recipe's config composed by Hydra on verl's defaults.

Stand-ins, for what needs a Ray cluster or a GPU:

* Ray: the workers' actor handles call the worker object directly, and ``ray.get``
  runs the returned coroutines on one event loop in a thread, like an async Ray actor's
  own loop (fire-and-forget tasks keep running there);
* TransferQueue (``tq``: a Ray-backed store): records what the worker puts;
* the rollout server actor behind verl's load balancer: builds vLLM's own
  ``SamplingParams(max_tokens=..., **params)`` from each request as verl's
  ``vLLMHttpServer.generate`` does (so a leaked private key fails), and answers
  5 tokens whose log-probs are ``-0.5 * temperature`` (a stand-in entropy that moves
  with the temperature, so the controller has something to steer);
* verl's reward loop worker: reward 1 for the easy prompts, 0 for the hard ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from omegaconf import open_dict
from tensordict import TensorDict
from verl.trainer.ppo.v1 import agent_loop_tq
from verl.utils import tensordict_utils as tu
from verl.workers.rollout.llm_server import FullyAsyncLLMServerClient, LLMServerClient
from verl.workers.rollout.replica import TokenOutput
from verl_support import RECIPES, recipe
from vllm import SamplingParams

from ead_vllm.integrations.verl import (
    EADAgentLoopManager,
    EADAgentLoopWorker,
    EADSingleTurnAgentLoop,
    with_resume_offsets,
)
from ead_vllm.params import EADParams
from ead_vllm.step_schedule import StepSchedule

pytestmark = [pytest.mark.timeout(300)]

N = 4  # rollout.n
EASY = ["1+1=", "2+2="]
HARD = ["4821+397=", "9173+2846="]
# steep enough that neighbouring steps' keys differ
SCHEDULE = {"d0": 2.0, "growth": 4.0, "tau_max": 2.0, "tau_min": 0.3}
TOKENS = 5


class _Loop:
    """One event loop in a thread: the stand-in for the workers' async actor loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, value: Any) -> Any:
        if asyncio.iscoroutine(value):
            return asyncio.run_coroutine_threadsafe(value, self.loop).result(timeout=120)
        return value

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class _Remote:
    """``handle.method.remote(...)`` calling ``method`` on the object itself."""

    def __init__(self, fn: Any) -> None:
        self.remote = fn


class _Handle:
    """A Ray actor handle stand-in for one worker object."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> _Remote:
        return _Remote(getattr(self._obj, name))


class _TransferQueue:
    """The part of TransferQueue's client API the worker calls; records the puts."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.status: dict[str, str] = {}

    def init(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def async_kv_put(self, key: str, partition_id: str, tag: dict[str, Any]) -> None:
        self.status[key] = tag["status"]

    async def async_kv_batch_put(self, keys: list[str], fields: Any, tags: Any, partition_id: str):
        for i, key in enumerate(keys):
            self.samples.append({"key": key, "partition": partition_id, "uid": fields["uid"][i]})


class _Server:
    """The rollout server actor behind verl's load balancer (see the module docstring)."""

    def __init__(self, abort_after: int | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.abort_after = abort_after  # first request: stop after this many tokens, aborted

    async def _generate(
        self, *, request_id: str, prompt_ids: list[int], sampling_params: dict, **_: Any
    ) -> TokenOutput:
        params = dict(sampling_params)
        max_tokens = params.pop("max_tokens", TOKENS)
        params["logprobs"] = 0 if params.pop("logprobs", False) else None
        built = SamplingParams(max_tokens=max_tokens, **params)  # as vLLMHttpServer.generate
        self.requests.append(
            {"prompt_ids": list(prompt_ids), "params": built, "raw": dict(sampling_params)}
        )
        count = min(TOKENS, max_tokens)
        stop = "completed"
        if self.abort_after is not None and len(self.requests) == 1:
            count, stop = self.abort_after, "aborted"
        logp = -0.5 * built.temperature
        return TokenOutput(
            token_ids=[7] * count,
            log_probs=[logp] * count,
            stop_reason=stop,
            extra_fields={"global_steps": 0},
        )

    @property
    def generate(self) -> _Remote:
        return _Remote(self._generate)


def _client(cls: type, config: Any, server: _Server) -> Any:
    """verl's client with the load balancer answered by ``server``."""
    client = cls(config=config, load_balancer_handle=None)

    async def acquire(request_id: str, **_: Any) -> tuple[str, Any]:
        return "server-0", server

    client._acquire_server = acquire
    client._release_server = lambda *a, **k: None
    return client


class _Rewards:
    """verl's reward loop worker: 1 for the easy prompts, 0 for the hard ones."""

    def __init__(self) -> None:
        self.compute_score = _Remote(self._score)

    async def _score(self, data: Any) -> dict[str, Any]:
        text = data.non_tensor_batch["raw_prompt"][0][0]["content"]
        return {"reward_score": 1.0 if text in EASY else 0.0, "reward_extra_info": {}}


def _config(model_dir: Path, *, budget: bool, controller: bool, eval_ead: bool = False) -> Any:
    config = recipe("grpo_ead_tis", [f"actor_rollout_ref.model.path={model_dir}"])
    with open_dict(config):
        rollout = config.actor_rollout_ref.rollout
        rollout.n = N
        rollout.response_length = 16
        rollout.prompt_length = 32
        rollout.agent.num_workers = 1
        rollout.agent.agent_loop_config_path = str(RECIPES / "agent_loops.yaml")
        rollout.val_kwargs.n = 2
        rollout.val_kwargs.temperature = 0.7
        rollout.val_kwargs.do_sample = True
        config.ead_vllm.ead = dict(SCHEDULE)
        config.ead_vllm.eval_ead = eval_ead
        if budget:
            config.ead_vllm.budget = {"n_min_limit": 1, "n_max_limit": 7, "widen_per_epoch": 3}
        if controller:
            config.ead_vllm.temperature_controller = {
                "vocab_size": 260,
                "total_steps": 2,
                "anneal_start": 0,
                "eta": 0.9,
            }
    return config


def _batch(prompts: list[str], step: int, validate: bool = False) -> TensorDict:
    """A batch as verl's trainer dispatches it (``_next_train_batch`` / ``_validate``)."""
    size = len(prompts)
    batch = tu.get_tensordict(
        {
            "raw_prompt": np.array(
                [[{"role": "user", "content": p}] for p in prompts] + [None], dtype=object
            )[:size],
            "index": np.arange(size),
            "uid": np.array([f"s{step}-{i}" for i in range(size)], dtype=object),
            "data_source": np.array(["toy"] * size, dtype=object),
        }
    )
    tu.assign_non_tensor_data(batch, "global_steps", step)
    if validate:
        tu.assign_non_tensor_data(batch, "validate", True)
    return batch


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> Iterator[Any]:
    """Builds (manager, worker, server, tq) for a config; stand-ins as the docstring says."""
    loop = _Loop()
    tq = _TransferQueue()
    monkeypatch.setattr(agent_loop_tq, "tq", tq)
    monkeypatch.setattr(ray, "get", lambda refs: [loop.run(r) for r in refs])

    def build(config: Any) -> tuple[EADAgentLoopManager, EADAgentLoopWorker, _Server]:
        server = _Server()
        client = _client(LLMServerClient, config, server)
        rewards = [_Rewards()]
        worker = loop.run(_make_worker(config, client, rewards))
        manager = EADAgentLoopManager(config, client, None, rewards)
        manager.agent_loop_workers = [_Handle(worker)]
        return manager, worker, server

    async def _make_worker(config: Any, client: Any, rewards: Any) -> EADAgentLoopWorker:
        return EADAgentLoopWorker(config, client, None, rewards)

    def settle(worker: EADAgentLoopWorker) -> None:
        async def wait() -> None:
            while worker.background_tasks:
                await asyncio.gather(*list(worker.background_tasks))

        loop.run(wait())

    yield build, settle, tq
    loop.close()


def _ead(request: dict[str, Any]) -> EADParams | None:
    return EADParams.from_extra_args(request["params"].extra_args)


def test_training_steps_get_the_budget_the_steps_schedule_and_the_controllers_temperature(
    stack: Any, model_dir: Path
) -> None:
    build, settle, tq = stack
    config = _config(model_dir, budget=True, controller=True)
    manager, worker, server = build(config)
    schedule = StepSchedule(**SCHEDULE)
    prompts = EASY + HARD

    # step 1, first epoch: n_min = n_max = rollout.n, the controller's T_0
    manager.generate_sequences(_batch(prompts, step=1))
    settle(worker)
    assert len(server.requests) == len(prompts) * N
    for request in server.requests:
        assert request["params"].temperature == 1.0
        assert _ead(request) == schedule.params_at(1)
    assert Counter(s["uid"] for s in tq.samples) == {f"s1-{i}": N for i in range(4)}
    assert all(status == "finished" for status in tq.status.values())

    # step 2, the same prompts again: a new epoch (bounds widened to [1, 7], ranked by
    # step 1's rewards); the controller was fed step 1's entropy and moved
    before = len(server.requests)
    manager.generate_sequences(_batch(prompts, step=2))
    settle(worker)
    metrics = manager.last_metrics
    assert metrics["e3/entropy"] == pytest.approx(0.5)  # -log p = 0.5 * T_0 per token
    t1 = manager.temperature_controller.temperature
    assert t1 == metrics["e3/next_temperature"] and t1 < 1.0  # target 0.95 * H_init
    step2 = server.requests[before:]
    counts = Counter(s["uid"] for s in tq.samples if s["uid"].startswith("s2-"))
    n = [counts[f"s2-{i}"] for i in range(4)]
    assert sum(n) == len(prompts) * N == len(step2)
    assert all(1 <= c <= 7 for c in n)
    assert max(n[:2]) < min(n[2:])  # the hard prompts (reward 0) got more samples
    assert manager.budget.n_min == 1 and manager.budget.n_max == 7
    for request in step2:
        assert request["params"].temperature == pytest.approx(t1)
        assert _ead(request) == schedule.params_at(2)
        assert _ead(request) != schedule.params_at(1)  # d_s grew with the step


@pytest.mark.parametrize("eval_ead", [False, True])
def test_validation_samples_at_val_kwargs_without_ead_unless_asked(
    stack: Any, model_dir: Path, eval_ead: bool
) -> None:
    build, settle, tq = stack
    manager, worker, server = build(
        _config(model_dir, budget=True, controller=True, eval_ead=eval_ead)
    )
    manager.generate_sequences(_batch(EASY + HARD, step=3, validate=True))
    settle(worker)
    assert len(server.requests) == 4 * 2  # val_kwargs.n, no budget
    for request in server.requests:
        assert request["params"].temperature == 0.7  # val_kwargs, not the controller's
        expected = StepSchedule(**SCHEDULE).params_at(3) if eval_ead else None
        assert _ead(request) == expected
        if not eval_ead:
            assert request["params"].extra_args == {"ead_enabled": 0}
    assert {s["partition"] for s in tq.samples} == {"val"}
    assert worker.drain_feedback() == []  # validation feeds neither E3 part
    assert manager.temperature_controller.step == 0


def test_a_resumed_partial_rollout_continues_the_schedule(model_dir: Path) -> None:
    """verl's async client resumes an aborted rollout with prompt + partial output; the
    resumed request carries ``ead_offset`` = the tokens generated before."""
    config = _config(model_dir, budget=False, controller=False)
    server = _Server(abort_after=3)
    client = with_resume_offsets(_client(FullyAsyncLLMServerClient, config, server))
    keys = StepSchedule(**SCHEDULE).params_at(4).to_extra_args()
    params = {"temperature": 1.0, "logprobs": True, "extra_args": dict(keys)}
    params["__ead_vllm_mode__"] = "train"  # a private key must never reach the server
    out = asyncio.run(client.generate("r1", prompt_ids=[1, 2, 3], sampling_params=params))
    first, second = server.requests
    assert second["prompt_ids"] == [1, 2, 3, 7, 7, 7]
    assert "ead_offset" not in first["params"].extra_args
    assert second["params"].extra_args == {**keys, "ead_offset": 3}
    assert _ead(second).temperature_at(0) == _ead(first).temperature_at(3)
    assert len(out.token_ids) == 3 + TOKENS
    assert params["extra_args"] == keys  # the caller's dict is untouched


def test_the_agent_loop_refuses_to_run_without_the_manager(model_dir: Path) -> None:
    """Without the manager's worker it cannot tell validation from training: an error."""
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils import hf_tokenizer

    config = _config(model_dir, budget=False, controller=False)
    loop = EADSingleTurnAgentLoop(
        trainer_config=DictConfigWrap(config),
        server_manager=None,
        tokenizer=hf_tokenizer(str(model_dir)),
        processor=None,
        dataset_cls=None,
        data_config=DictConfigWrap(config.data),
    )
    with pytest.raises(RuntimeError, match="agent_loop_manager_class"):
        asyncio.run(loop.run({"temperature": 1.0}, raw_prompt=[], global_steps=1))
