"""EAD and E3 in verl 0.9.1's v1 trainer (``trainer.use_v1=true``) with vLLM rollouts.

Three pieces, switched on by config (recipes: ``examples/verl/``):

* **The engine switch** needs no code: verl merges
  ``actor_rollout_ref.rollout.engine_kwargs.vllm`` last into the flags of the
  ``vllm serve`` it runs in each rollout server, so
  ``+actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.sampler=ead`` starts
  every rollout engine with the EAD sampler (verl JSON-encodes the dict).
* :class:`EADSingleTurnAgentLoop`, verl's single-turn agent loop whose training requests
  carry the ``ead_*`` keys of :meth:`StepSchedule.params_at` at the request's
  ``global_steps`` (the trainer's step when the prompt was dispatched) in
  ``SamplingParams.extra_args``. Validation requests carry ``ead_enabled: 0`` unless
  ``ead_vllm.eval_ead`` is true (then the schedule at the current step).
* :class:`EADAgentLoopManager` (``actor_rollout_ref.rollout.agent.agent_loop_manager_class``),
  verl's ``AgentLoopManagerTQ`` with workers that (1) tell the agent loop whether a
  request is a validation one (verl does not pass that to agent loops), (2) add
  ``ead_offset`` when verl's async trainers resume an aborted rollout from its partial
  output, (3) sample training rollouts at E3's controller temperature, and (4) report
  each finished training sample's reward and log-probs back; and, with
  ``ead_vllm.budget``, E3's per-prompt rollout budget (``__rollout_n__``, which verl's
  ``AgentLoopWorkerTQ._run_prompt`` reads per prompt).

**Configuration**: a top-level ``ead_vllm`` section (see :func:`schedule_from_config`,
:func:`budget_from_config`, :func:`controller_from_config`)::

    ead_vllm:
      ead: {preset: reference}          # or StepSchedule fields; null: no EAD
      eval_ead: false
      budget: {n_min_limit: 2, n_max_limit: 16, widen_per_epoch: 2, seed: 0}   # or null
      temperature_controller: {vocab_size: 151936, total_steps: 500}          # or null

**Which entropy the E3 controller is fed.** verl's ``actor/entropy`` metric is the
policy's entropy under ``actor_rollout_ref.rollout.temperature`` (``T_0``: the trainer
sets that temperature on every batch it recomputes log-probs for), so it does not move
when the controller moves the rollout temperature ``T_s``, and a controller fed with it
would not see its own action. The manager feeds instead the mean of ``-log p`` of the
sampled tokens under the distribution they were sampled from (vLLM's processed
log-probs, verl's ``rollout_log_probs``, ``logprobs_mode: processed_logprobs``), over
every LLM-generated response token (``response_mask == 1``) of the training rollouts
sampled at ``T_s``: an unbiased estimate of the rollout policy's mean token entropy at
``T_s`` (times ``tau_t`` with EAD on), in nats. Training stays at ``T_0``; TIS
(``algorithm.rollout_correction.rollout_is=token``, ``rollout_is_threshold=2.0``)
corrects the off-policy rollouts.

**What is not done.** The controller's and the budget's state are not part of verl's
checkpoints (a resumed run starts them afresh). The budget needs the rewards computed in
the rollout workers (verl's reward loop: rule-based rewards, or a reward model with its
own resource pool); the manager refuses a colocated reward model. Only
:class:`EADSingleTurnAgentLoop` anneals; other agent loops of the same run get the
controller's temperature and the budget but no ``ead_*`` keys. The E3 metrics
(``e3/...``, :attr:`EADAgentLoopManager.last_metrics`) go to Python's log, not to verl's
tracker (verl's trainer does not ask the agent loop manager for metrics). A prompt with
a failed sample (verl drops it) never completes its group, so its rewards are not recorded.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ
from verl.utils import tensordict_utils as tu
from verl.workers.rollout.llm_server import LLMServerClient

from ead_vllm.controllers.entropy_temperature import EntropyTemperatureController
from ead_vllm.controllers.rollout_budget import RolloutBudgetAllocator
from ead_vllm.params import EXTRA_ARGS_KEYS, EXTRA_ARGS_PREFIX
from ead_vllm.step_schedule import StepSchedule

logger = logging.getLogger(__name__)

#: the top-level config section this module reads
CONFIG_SECTION = "ead_vllm"
#: the ``agent_name`` the recipes register :class:`EADSingleTurnAgentLoop` under
AGENT_NAME = "ead_single_turn_agent"

# Private sampling-params keys between our worker, agent loop and client layers; the
# client layer removes any of them before a request leaves for the server, whose
# SamplingParams(**params) would reject them.
_MODE_KEY = "__ead_vllm_mode__"  # "train" or "validate", set by the worker
_PROMPT_LEN_KEY = "__ead_vllm_prompt_len__"  # the request's own prompt length (tokens)
_PRIVATE_KEYS = (_MODE_KEY, _PROMPT_LEN_KEY)
# Batch field the manager adds to a training dispatch: {"temperature", "controller_step"};
# the worker pops it before verl's agent loop sees the prompt's fields.
_DISPATCH_FIELD = "__ead_vllm_dispatch__"
# verl's per-prompt sample count field (AgentLoopWorkerTQ._run_prompt pops it)
ROLLOUT_N_FIELD = "__rollout_n__"
_OFFSET_KEY = EXTRA_ARGS_KEYS["offset"]
# The dispatch info of the sample a worker task is running (each sample is its own task).
_DISPATCH: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ead_vllm_dispatch", default=None
)


# ------------------------------------------------------------------ configuration
def _section(config: Any) -> Mapping[str, Any]:
    """The ``ead_vllm`` section of a verl config as a plain dict (empty when absent)."""
    node = config.get(CONFIG_SECTION) if config is not None else None
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def schedule_from_config(config: Any) -> StepSchedule | None:
    """The EAD schedule of ``config.ead_vllm.ead``, or ``None`` (absent or null: no EAD).

    ``ead`` holds :class:`StepSchedule` fields; ``preset: reference`` starts from
    :meth:`StepSchedule.reference` (the authors' recipe) and the other fields override
    it. Raises ``ValueError`` for an unknown preset or field, or an invalid value.
    """
    spec = _section(config).get("ead")
    if spec is None:
        return None
    spec = dict(spec)
    preset = spec.pop("preset", None)
    try:
        if preset is None:
            schedule = StepSchedule(**spec)
        elif preset == "reference":
            schedule = StepSchedule.reference(**spec)
        else:
            raise ValueError(
                f"{CONFIG_SECTION}.ead.preset must be 'reference' or null, got {preset!r}"
            )
    except TypeError as exc:  # an unknown or missing field
        raise ValueError(f"{CONFIG_SECTION}.ead: {exc}") from None
    return schedule.check()


def eval_ead_from_config(config: Any) -> bool:
    """``config.ead_vllm.eval_ead`` (default False): anneal validation requests too."""
    return bool(_section(config).get("eval_ead", False))


def budget_from_config(config: Any) -> RolloutBudgetAllocator | None:
    """E3's rollout budget from ``config.ead_vllm.budget`` (null or absent: none).

    The fields are :class:`RolloutBudgetAllocator`'s keyword arguments; ``default_n``
    is ``actor_rollout_ref.rollout.n`` (samples per prompt on average, so the batch
    total stays ``prompts * n``).
    """
    spec = _section(config).get("budget")
    if spec is None:
        return None
    default_n = int(config.actor_rollout_ref.rollout.n)
    try:
        return RolloutBudgetAllocator(default_n, **dict(spec))
    except TypeError as exc:
        raise ValueError(f"{CONFIG_SECTION}.budget: {exc}") from None


def controller_from_config(config: Any) -> EntropyTemperatureController | None:
    """E3's temperature controller from ``config.ead_vllm.temperature_controller`` (or None).

    The fields are :class:`EntropyTemperatureController`'s arguments; ``init_temperature``
    is ``actor_rollout_ref.rollout.temperature`` (``T_0``, the training temperature;
    a different explicit value is refused).
    """
    spec = _section(config).get("temperature_controller")
    if spec is None:
        return None
    spec = dict(spec)
    t0 = float(config.actor_rollout_ref.rollout.temperature)
    given = spec.pop("init_temperature", t0)
    if float(given) != t0:
        raise ValueError(
            f"{CONFIG_SECTION}.temperature_controller.init_temperature ({given}) must equal "
            f"actor_rollout_ref.rollout.temperature ({t0}): E3 starts at the training "
            "temperature T_0"
        )
    try:
        return EntropyTemperatureController(init_temperature=t0, **spec)
    except TypeError as exc:
        raise ValueError(f"{CONFIG_SECTION}.temperature_controller: {exc}") from None


def ead_extra_args(
    schedule: StepSchedule | None, step: int, *, validate: bool, eval_ead: bool
) -> dict[str, float | int]:
    """The ``ead_*`` keys one request adds to ``SamplingParams.extra_args``.

    ``{}`` without a schedule; ``{"ead_enabled": 0}`` (stock sampling, even on an engine
    with EAD defaults) for a validation request without ``eval_ead``; else the
    schedule's keys at global training ``step`` (int >= 0).
    """
    if schedule is None:
        return {}
    return schedule.request_keys(None if validate and not eval_ead else int(step))


def prompt_key(raw_prompt: Any) -> str:
    """A stable id of a prompt (the same messages give the same id in every epoch).

    ``raw_prompt``: verl's ``raw_prompt`` field (a list of chat messages). Returns 16 hex
    digits of a BLAKE2b hash of its JSON form.
    """
    if hasattr(raw_prompt, "tolist"):
        raw_prompt = raw_prompt.tolist()
    text = json.dumps(raw_prompt, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# ------------------------------------------------------------------ agent loop
class EADSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn agent loop whose requests carry this step's EAD keys.

    Register it with an ``agent_loop_config_path`` YAML (``examples/verl/agent_loops.yaml``)
    and select it with ``actor_rollout_ref.rollout.agent.default_agent_loop``; it needs
    :class:`EADAgentLoopManager` (which marks validation requests) and reads the
    schedule from ``ead_vllm.ead``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ead_schedule = schedule_from_config(self.config)
        self.eval_ead = eval_ead_from_config(self.config)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """verl's single turn with ``extra_args`` holding the EAD keys of ``global_steps``.

        ``sampling_params``: the dict verl passes on to ``SamplingParams`` (never
        mutated: verl shares it between a prompt's samples); ``kwargs``: the prompt's
        dataset fields, ``global_steps`` (int) among them.
        """
        params = dict(sampling_params)
        mode = params.pop(_MODE_KEY, None)
        if mode is None:
            raise RuntimeError(
                "EADSingleTurnAgentLoop needs actor_rollout_ref.rollout.agent."
                "agent_loop_manager_class=ead_vllm.integrations.verl.EADAgentLoopManager: "
                "verl does not tell agent loops which requests are validation ones"
            )
        keys = ead_extra_args(
            self.ead_schedule,
            kwargs["global_steps"],
            validate=mode == "validate",
            eval_ead=self.eval_ead,
        )
        if keys:
            extra = dict(params.get("extra_args") or {})
            clash = sorted(k for k in extra if str(k).startswith(EXTRA_ARGS_PREFIX))
            if clash:
                raise ValueError(f"extra_args already has {', '.join(clash)}; EAD sets them")
            params["extra_args"] = {**extra, **keys}
        return await super().run(params, **kwargs)


# ------------------------------------------------------------------ resume offsets
class _EntryLayer:
    """Top of the client: notes the request's own prompt length before any resume."""

    async def generate(self, request_id: Any, *, prompt_ids: list[int], **kwargs: Any) -> Any:
        params = dict(kwargs.pop("sampling_params"))
        params[_PROMPT_LEN_KEY] = len(prompt_ids)
        return await super().generate(  # type: ignore[misc]
            request_id, prompt_ids=prompt_ids, sampling_params=params, **kwargs
        )


class _ResumeOffsetLayer(LLMServerClient):
    """Bottom of the client, one attempt: ``ead_offset`` for a resumed partial rollout.

    verl's ``FullyAsyncLLMServerClient`` (async trainer modes) resumes a rollout aborted
    by a weight sync as a new request whose prompt is the old prompt plus the tokens
    generated so far; without an offset the schedule would restart at ``t = 0``. The
    offset is the number of those tokens (added to any offset the request had).
    """

    async def generate(self, request_id: Any, *, prompt_ids: list[int], **kwargs: Any) -> Any:
        params = dict(kwargs.pop("sampling_params"))
        own = params.pop(_PROMPT_LEN_KEY, len(prompt_ids))
        for key in _PRIVATE_KEYS:
            params.pop(key, None)
        generated = len(prompt_ids) - own
        extra = params.get("extra_args") or {}
        annealed = any(k in extra for k in EXTRA_ARGS_KEYS.values())
        if generated > 0 and annealed:
            params["extra_args"] = {
                **extra,
                _OFFSET_KEY: int(extra.get(_OFFSET_KEY, 0)) + generated,
            }
        return await super().generate(
            request_id, prompt_ids=prompt_ids, sampling_params=params, **kwargs
        )


def with_resume_offsets(client: LLMServerClient) -> LLMServerClient:
    """``client`` (same object, same state) with ``ead_offset`` on resumed attempts.

    The client's class is swapped for one with :class:`_EntryLayer` above it and
    :class:`_ResumeOffsetLayer` between it and verl's ``LLMServerClient`` (whose
    ``generate`` is one attempt), so verl's own resume loop, when the class has one,
    runs in between. Also strips this module's private sampling-params keys.
    """
    cls = type(client)
    if issubclass(cls, _ResumeOffsetLayer):
        return client
    bases = (
        (_EntryLayer, _ResumeOffsetLayer)
        if cls is LLMServerClient
        else (_EntryLayer, cls, _ResumeOffsetLayer)
    )
    client.__class__ = type(f"EADResume{cls.__name__}", bases, {})
    return client


# ------------------------------------------------------------------ worker
def _entropy_sums(outputs: list[AgentLoopOutput]) -> tuple[float, int]:
    """Sum of ``-log p`` (nats) and count over the LLM-generated tokens of ``outputs``."""
    total, count = 0.0, 0
    for out in outputs:
        if not out.response_logprobs:
            continue
        for lp, mask in zip(out.response_logprobs, out.response_mask, strict=False):
            if mask and math.isfinite(lp):
                total -= float(lp)
                count += 1
    return total, count


class EADAgentLoopWorker(AgentLoopWorkerTQ.__ray_actor_class__):  # type: ignore[name-defined,misc]
    """verl's ``AgentLoopWorkerTQ`` (undecorated; the manager makes it a Ray actor) with:

    * validation marked for :class:`EADSingleTurnAgentLoop` (private params key);
    * the controller's temperature on training requests (the manager's dispatch field);
    * ``ead_offset`` on resumed attempts (:func:`with_resume_offsets`);
    * one feedback record per finished training sample (:meth:`drain_feedback`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.llm_client = with_resume_offsets(self.llm_client)
        self._feedback: list[dict[str, Any]] = []

    async def _run_agent_loop(
        self,
        sampling_params: dict[str, Any],
        trajectory: dict[str, Any],
        *,
        agent_name: str,
        trace: bool = True,
        **kwargs: Any,
    ) -> Any:
        """verl's per-sample run with the mode, temperature and dispatch info in place."""
        dispatch = kwargs.pop(_DISPATCH_FIELD, None)
        validate = bool(trajectory["validate"])
        params = dict(sampling_params)
        params[_MODE_KEY] = "validate" if validate else "train"
        if dispatch is not None and not validate and float(params.get("temperature", 0)) > 0:
            # greedy samples (temperature 0, verl's __do_sample__=False) stay greedy
            params["temperature"] = float(dispatch["temperature"])
        # postprocess runs in this task and reads it there (not a prompt field: verl
        # stores every prompt field in TransferQueue)
        _DISPATCH.set(dispatch)
        return await super()._run_agent_loop(
            params, trajectory, agent_name=agent_name, trace=trace, **kwargs
        )

    async def _agent_loop_postprocess(self, output: Any, validate: bool, **kwargs: Any) -> Any:
        """verl's postprocess (score, TransferQueue), then this sample's feedback record."""
        result = await super()._agent_loop_postprocess(output, validate, **kwargs)
        if not validate:
            outputs = output if isinstance(output, list) else [output]
            dispatch = _DISPATCH.get()
            if outputs:
                neg_logp, tokens = _entropy_sums(outputs)
                self._feedback.append(
                    {
                        "uid": str(kwargs["uid"]),
                        "controller_step": None
                        if dispatch is None
                        else dispatch["controller_step"],
                        "session_id": int(kwargs.get("session_id", 0)),
                        "reward": outputs[-1].reward_score,
                        "neg_logp_sum": neg_logp,
                        "tokens": tokens,
                    }
                )
        return result

    def drain_feedback(self) -> list[dict[str, Any]]:
        """The feedback records since the last call (then forgotten).

        Each: ``uid`` (verl's prompt uid), ``controller_step`` (the E3 controller step
        whose temperature sampled it, or None), ``session_id``, ``reward`` (float or None when
        no reward was computed in the worker), ``neg_logp_sum`` (nats) and ``tokens``
        (count) over the sample's LLM-generated tokens.
        """
        out, self._feedback = self._feedback, []
        return out


# ------------------------------------------------------------------ manager
class EADAgentLoopManager(AgentLoopManagerTQ):
    """verl's ``AgentLoopManagerTQ`` with :class:`EADAgentLoopWorker` workers and E3.

    Set ``actor_rollout_ref.rollout.agent.agent_loop_manager_class`` to
    ``ead_vllm.integrations.verl.EADAgentLoopManager``. On each training dispatch
    (:meth:`generate_sequences` of a batch without ``validate``), in order:

    1. collect the workers' feedback records (:meth:`ingest_feedback`): a prompt's
       rewards go to the budget once all of its samples are back; the controller is
       updated once per controller step, with the mean ``-log p`` of that step's
       finished samples (see the module docstring for why this entropy);
    2. :meth:`prepare_batch`: each prompt's sample count from the budget
       (``__rollout_n__``; the batch total is ``prompts * rollout.n``) and the
       controller's temperature for the workers;
    3. verl's dispatch.

    Validation batches go out unchanged (``rollout.val_kwargs``, no budget).
    """

    def __init__(self, config: DictConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        # after AgentLoopManagerTQ.__init__, which sets its own worker class; the
        # workers are created later, in create()
        self.agent_loop_workers_class = ray.remote(EADAgentLoopWorker)
        self.budget = budget_from_config(config)
        self.temperature_controller = controller_from_config(config)
        if self.budget is not None and self.reward_loop_worker_handles is None:
            raise ValueError(
                f"{CONFIG_SECTION}.budget needs the rewards computed in the rollout workers "
                "(verl's reward loop); with a colocated reward model (reward.reward_model."
                "enable without enable_resource_pool) they are computed after the rollout"
            )
        # uid -> [prompt key, samples allocated, rewards so far]
        self._groups: dict[str, list[Any]] = {}
        self._epoch_keys: set[str] = set()  # prompts dispatched in the current epoch
        self._entropy: dict[int, list[float]] = {}  # controller step -> [sum -log p, tokens]
        self.last_metrics: dict[str, float] = {}

    # -- pure parts (no Ray): tested directly
    def prepare_batch(self, prompts: TensorDict) -> TensorDict:
        """Add this dispatch's per-prompt ``__rollout_n__`` and the controller's temperature.

        ``prompts``: verl's training batch (``uid`` and ``raw_prompt`` per row). With a
        budget, a row's count is within ``[n_min, n_max]`` and the counts sum to
        ``len(prompts) * rollout.n``; a prompt already dispatched in this epoch first
        ends the epoch (widening the bounds and re-ranking by mean reward).
        """
        uids = [str(u) for u in tu.get(prompts, "uid")]
        if self.budget is not None:
            keys = [prompt_key(p) for p in tu.get(prompts, "raw_prompt")]
            if any(k in self._epoch_keys for k in keys):
                self.budget.end_epoch()
                self._epoch_keys = set()
            self._epoch_keys.update(keys)
            counts = self.budget.allocate(keys)
            tu.assign_non_tensor_stack(prompts, ROLLOUT_N_FIELD, counts)
            for uid, key, n in zip(uids, keys, counts, strict=True):
                self._groups[uid] = [key, n, []]
        controller = self.temperature_controller
        if controller is not None:
            dispatch = {"temperature": controller.temperature, "controller_step": controller.step}
            tu.assign_non_tensor_data(prompts, _DISPATCH_FIELD, dispatch)
        return prompts

    def ingest_feedback(self, records: list[dict[str, Any]]) -> None:
        """Feed the workers' records (:meth:`EADAgentLoopWorker.drain_feedback`) to E3.

        Rewards of a prompt are recorded in the budget when all its allocated samples
        are back. The controller, if any, is updated with the mean ``-log p`` (nats per
        token) of the records of its current step, when there are any; records of
        older steps are dropped (their temperature is no longer the current one).
        """
        for rec in records:
            group = self._groups.get(rec["uid"])
            if group is not None and rec["reward"] is not None:
                group[2].append(float(rec["reward"]))
                if len(group[2]) >= group[1]:
                    self.budget.record(group[0], group[2])  # type: ignore[union-attr]
                    del self._groups[rec["uid"]]
            step = rec.get("controller_step")
            if step is not None:
                acc = self._entropy.setdefault(int(step), [0.0, 0])
                acc[0] += rec["neg_logp_sum"]
                acc[1] += rec["tokens"]
        metrics: dict[str, float] = {}
        controller = self.temperature_controller
        if controller is not None:
            acc = self._entropy.pop(controller.step, None)
            self._entropy = {s: a for s, a in self._entropy.items() if s > controller.step}
            if acc is not None and acc[1] > 0:
                entropy = acc[0] / acc[1]
                metrics["e3/temperature"] = controller.temperature
                metrics["e3/entropy"] = entropy
                controller.update(entropy)
                metrics["e3/next_temperature"] = controller.temperature
                if controller.target_entropy is not None:
                    metrics["e3/target_entropy"] = controller.target_entropy
        if self.budget is not None:
            metrics.update({f"e3/budget/{k}": v for k, v in self.budget.stats().items()})
        self.last_metrics = metrics
        if metrics:
            logger.info("ead-vllm E3: %s", metrics)

    # -- verl's entry point
    def generate_sequences(self, prompts: TensorDict) -> None:
        """verl's dispatch, with feedback, budget and temperature on training batches."""
        if not tu.get_non_tensor_data(prompts, "validate", False) and (
            self.budget is not None or self.temperature_controller is not None
        ):
            drained = ray.get([w.drain_feedback.remote() for w in self.agent_loop_workers])
            self.ingest_feedback([rec for part in drained for rec in part])
            prompts = self.prepare_batch(prompts)
        super().generate_sequences(prompts)
