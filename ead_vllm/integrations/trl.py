"""EAD and E3's entropy-targeting temperature in TRL's ``GRPOTrainer`` (TRL 1.16.0).

:class:`EADGRPOTrainer` is TRL's ``GRPOTrainer`` with three additions, each
optional, in both of TRL's vLLM modes (``vllm_mode="colocate"`` and ``"server"``):

* **EAD rollouts.** Every training rollout request carries the ``ead_*`` keys of a
  :class:`~ead_vllm.step_schedule.StepSchedule` at ``trainer.state.global_step``
  (so the decay ``d_s`` grows with the step): in ``SamplingParams.extra_args``
  (colocate) or the request body's ``vllm_xargs`` (server). Evaluation requests
  carry ``ead_enabled: 0`` (stock sampling at TRL's temperature) unless
  ``eval_ead=True``.
* **The engine switch.** In colocate mode TRL builds ``vllm.LLM`` itself with a fixed
  keyword list; the trainer sets ``EAD_VLLM_SAMPLER=ead`` while TRL builds it (and
  restores the variable after), so the engine starts with the EAD sampler. In server
  mode, start the server with it (``ead-vllm serve``, or ``trl vllm-serve ...
  --additional-config '{"sampler": "ead"}'``, or ``EAD_VLLM_SAMPLER=ead``).
* **E3's temperature controller** (:class:`EntropyTemperatureController`): each
  training generation is sampled at the controller's ``T_s``; the controller is then
  fed that generation's entropy and sets ``T_{s+1}``. TRL trains at its own
  ``GRPOConfig.temperature`` (``T_0``; TRL's fused LM head fixes it when the trainer
  is built), so rollouts at ``T_s`` are off-policy by design and TIS (below)
  corrects them.

**The entropy fed to the controller** is measured on the rollouts themselves: the
mean of ``-log p`` of the sampled tokens under the distribution they were sampled
from (vLLM's processed log-probs, gathered over every process and every turn of the
generation). That is an unbiased estimate of the sampling distribution's mean token
entropy at ``T_s`` (times ``tau_t`` with EAD on), which is what Eq. (4) needs.
TRL's own ``entropy`` metric is the policy's at ``T_0``: it does not move when
``T_s`` moves, so a controller fed with it would not see its own action.

**Importance sampling.** With EAD or the controller on and ``tis=True`` (default),
the trainer sets TRL's vLLM correction to EAD's TIS: ``vllm_importance_sampling_mode
= "token_truncate"``, ``vllm_importance_sampling_clip_max = tis_cap`` (2.0), no lower
clip: each token's loss is weighted by ``min(pi_T0 / pi_rollout, C)``. TRL's default
(``sequence_mask``, 3.0) would mask out most annealed sequences, whose summed
log-ratio is far from 0. ``tis=False`` keeps the ``GRPOConfig`` values.

Not possible in TRL 1.16.0 without a fork (so not offered):

* E3's per-prompt rollout budget: TRL fixes ``num_generations`` per prompt in its
  sampler (``RepeatSampler``) and its advantage reshape (``view(-1, num_generations)``).
* EAD's positional correction (training log-probs at ``T * tau_t``): TRL's fused LM
  head divides by one scalar temperature fixed when the trainer is built.
* ``ead_offset`` in multi-turn tool calls: TRL sends one ``SamplingParams`` for the
  whole batch of follow-up turns, so each turn's positions restart at 0.
* A custom ``rollout_func`` builds its own requests: the trainer refuses EAD with
  one; put :meth:`EADGRPOTrainer.rollout_sampling_args` into them instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from ead_vllm.controllers.entropy_temperature import EntropyTemperatureController
from ead_vllm.params import EXTRA_ARGS_PREFIX
from ead_vllm.step_schedule import DEFAULT_TIS_CAP, StepSchedule
from ead_vllm.vllm_ext.config import EAD_SAMPLER, SAMPLER_ENV

logger = logging.getLogger(__name__)

# Where each mode's requests carry vLLM's per-request extra arguments.
_EXTRA_ARGS_FIELD = {"colocate": "extra_args", "server": "vllm_xargs"}
_STATE_FILE = "ead_vllm_state.json"
_STATE_VERSION = 1


@contextlib.contextmanager
def _sampler_switch() -> Iterator[None]:
    """``EAD_VLLM_SAMPLER=ead`` while TRL builds its colocated engine (restored after).

    The plugin reads the variable when an engine's config is built; an explicit
    ``additional_config["sampler"]`` would still win (TRL passes none).
    """
    before = os.environ.get(SAMPLER_ENV)
    os.environ[SAMPLER_ENV] = EAD_SAMPLER
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SAMPLER_ENV, None)
        else:
            os.environ[SAMPLER_ENV] = before


def rollout_request_fields(
    *, vllm_mode: str, temperature: float, schedule: StepSchedule | None, step: int | None
) -> dict[str, Any]:
    """The request fields a generation adds to TRL's (what the trainer sends).

    Returns ``{"temperature": temperature}`` plus, with a ``schedule``, the ``ead_*``
    keys under ``extra_args`` (``vllm_mode="colocate"``: ``SamplingParams``) or
    ``vllm_xargs`` (``"server"``: the ``/v1/completions`` body): the schedule's
    parameters at global training ``step``, or ``{"ead_enabled": 0}`` for
    ``step=None`` (EAD off for this request, even on an engine with EAD defaults).
    """
    if vllm_mode not in _EXTRA_ARGS_FIELD:
        raise ValueError(f"vllm_mode must be 'colocate' or 'server', got {vllm_mode!r}")
    out: dict[str, Any] = {"temperature": float(temperature)}
    if schedule is not None:
        out[_EXTRA_ARGS_FIELD[vllm_mode]] = schedule.request_keys(step)
    return out


class EADGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with EAD rollouts and E3's temperature controller.

    Arguments beyond ``GRPOTrainer``'s (all keyword-only):

    * ``ead``: a :class:`~ead_vllm.step_schedule.StepSchedule`
      (``StepSchedule.reference()`` is the authors' recipe) or ``None`` (no EAD).
    * ``temperature_controller``: an :class:`EntropyTemperatureController` whose
      ``init_temperature`` equals ``GRPOConfig.temperature``, or ``None``.
    * ``tis`` (default True), ``tis_cap`` (> 0, default 2.0): EAD's truncated IS
      (see the module docstring); used when ``ead`` or the controller is on.
    * ``eval_ead`` (default False): evaluation rollouts with EAD too (at the
      current step's schedule).

    Needs ``GRPOConfig(use_vllm=True)``. Logged with TRL's metrics: ``ead/d_s``,
    ``e3/temperature`` (of the generation), ``e3/entropy`` (its estimate, nats),
    ``e3/target_entropy``, ``e3/next_temperature``. The controller's state is saved
    in each checkpoint (``ead_vllm_state.json``) and restored on resume.
    """

    def __init__(
        self,
        *args: Any,
        ead: StepSchedule | None = None,
        temperature_controller: EntropyTemperatureController | None = None,
        tis: bool = True,
        tis_cap: float = DEFAULT_TIS_CAP,
        eval_ead: bool = False,
        **kwargs: Any,
    ) -> None:
        if ead is not None and not isinstance(ead, StepSchedule):
            raise TypeError(f"ead must be a StepSchedule or None, got {type(ead).__name__}")
        if ead is not None:
            ead.check()
        if temperature_controller is not None and not isinstance(
            temperature_controller, EntropyTemperatureController
        ):
            raise TypeError(
                "temperature_controller must be an EntropyTemperatureController or None, "
                f"got {type(temperature_controller).__name__}"
            )
        if isinstance(tis_cap, bool) or not (isinstance(tis_cap, int | float) and tis_cap > 0):
            raise ValueError(f"tis_cap must be a number > 0, got {tis_cap!r}")
        args_ = kwargs.get("args", args[2] if len(args) > 2 else None)
        active = ead is not None or temperature_controller is not None
        if active:
            _check_trl_args(args_, temperature_controller, ead is not None)
            if kwargs.get("rollout_func") is not None:
                raise ValueError(
                    "EADGRPOTrainer: a custom rollout_func builds its own vLLM requests, so "
                    "the trainer cannot add EAD or the controller's temperature to them; "
                    "put rollout_request_fields(...) into them and use GRPOTrainer"
                )
        self.ead_schedule = ead
        self.temperature_controller = temperature_controller
        self.eval_ead = bool(eval_ead)
        self._rollout_entropy = [0.0, 0.0]  # sum of -log p, token count, this generation
        switch = _sampler_switch() if ead is not None else contextlib.nullcontext()
        with switch:
            super().__init__(*args, **kwargs)
        self._active = active
        if not active:
            return  # GRPOTrainer as it is
        self._user_generation_kwargs = dict(self.vllm_generation.generation_kwargs)
        if tis:
            self.vllm_importance_sampling_correction = True
            self.vllm_importance_sampling_mode = "token_truncate"
            self.vllm_importance_sampling_clip_max = float(tis_cap)
            self.vllm_importance_sampling_clip_min = None
            logger.info(
                "ead-vllm: TRL's vLLM importance sampling set to EAD's TIS "
                "(token_truncate, cap %s); pass tis=False to keep GRPOConfig's",
                tis_cap,
            )
        elif self.vllm_importance_sampling_mode.startswith("sequence"):
            logger.warning(
                "ead-vllm: vllm_importance_sampling_mode=%s with annealed or re-tempered "
                "rollouts masks or truncates whole sequences; EAD's TIS is token_truncate",
                self.vllm_importance_sampling_mode,
            )

    # ------------------------------------------------------------------ requests
    def rollout_sampling_args(self, mode: str = "train") -> dict[str, Any]:
        """:func:`rollout_request_fields` for this trainer's next generation.

        ``mode``: ``"train"`` (the controller's temperature, the schedule at
        ``state.global_step``) or ``"eval"`` (``GRPOConfig.temperature``; EAD only
        with ``eval_ead=True``).
        """
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        controller = self.temperature_controller
        train = mode == "train"
        return rollout_request_fields(
            vllm_mode=self.vllm_mode,
            temperature=controller.temperature if train and controller else self.temperature,
            schedule=self.ead_schedule,
            step=self.state.global_step if train or self.eval_ead else None,
        )

    def _generate(self, prompts: list) -> Any:
        """TRL's generation with this step's EAD keys and rollout temperature in place."""
        if not self._active:
            return super()._generate(prompts)
        mode = "train" if self.model.training else "eval"
        fields = self.rollout_sampling_args(mode)
        generation = self.vllm_generation
        kwargs = dict(self._user_generation_kwargs)
        field = _EXTRA_ARGS_FIELD[self.vllm_mode]
        if field in fields:
            kwargs[field] = {**(kwargs.get(field) or {}), **fields[field]}
        generation.generation_kwargs = kwargs
        generation.temperature = fields["temperature"]
        self._rollout_entropy = [0.0, 0.0]
        try:
            result = super()._generate(prompts)
        finally:
            generation.generation_kwargs = dict(self._user_generation_kwargs)
            generation.temperature = self.temperature
        if mode == "train":
            self._after_train_generation(fields)
        return result

    def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's single turn; also sums ``-log p`` of the sampled tokens for the controller."""
        completion_ids, logprobs = super()._generate_single_turn(*args, **kwargs)
        if self.temperature_controller is not None and logprobs is not None:
            values = [v for seq in logprobs for v in seq if v is not None and math.isfinite(v)]
            self._rollout_entropy[0] -= float(sum(values))
            self._rollout_entropy[1] += float(len(values))
        return completion_ids, logprobs

    def _after_train_generation(self, fields: dict[str, Any]) -> None:
        metrics = self._metrics["train"]
        if self.ead_schedule is not None:
            metrics["ead/d_s"].append(self.ead_schedule.decay_at(self.state.global_step))
        controller = self.temperature_controller
        if controller is None:
            return
        local = torch.tensor(
            self._rollout_entropy, dtype=torch.float64, device=self.accelerator.device
        )
        total = self.accelerator.reduce(local, reduction="sum")
        neg_logp, tokens = float(total[0]), float(total[1])
        if tokens == 0:
            raise RuntimeError(
                "EADGRPOTrainer: no sampled-token log-probs came back from vLLM, so the "
                "entropy controller cannot be fed (TRL requests logprobs=0 with vLLM)"
            )
        entropy = neg_logp / tokens
        metrics["e3/temperature"].append(fields["temperature"])
        metrics["e3/entropy"].append(entropy)
        controller.update(entropy)
        if controller.target_entropy is not None:
            metrics["e3/target_entropy"].append(controller.target_entropy)
        metrics["e3/next_temperature"].append(controller.temperature)

    # ------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.temperature_controller is None or not self.args.should_save:
            return
        folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        path = Path(self._get_output_dir(trial=trial)) / folder / _STATE_FILE
        state = {"version": _STATE_VERSION, "controller": self.temperature_controller.state_dict()}
        path.write_text(json.dumps(state))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.temperature_controller is None or checkpoint is None:
            return
        path = Path(checkpoint) / _STATE_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no ead-vllm state in this checkpoint, so the temperature "
                "controller cannot resume (it was saved without one)"
            )
        state = json.loads(path.read_text())
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"{path}: unsupported ead-vllm state version {state.get('version')!r}")
        self.temperature_controller.load_state_dict(state["controller"])


def _check_trl_args(
    args: Any, controller: EntropyTemperatureController | None, with_ead: bool
) -> None:
    """Refuse settings the additions cannot work with, naming the setting."""
    if args is None or not getattr(args, "use_vllm", False):
        raise ValueError(
            "EADGRPOTrainer needs GRPOConfig(use_vllm=True): EAD and the rollout "
            "temperature act in vLLM's sampler"
        )
    if controller is not None and controller.init_temperature != args.temperature:
        raise ValueError(
            f"temperature_controller.init_temperature ({controller.init_temperature}) must "
            f"equal GRPOConfig.temperature ({args.temperature}): E3 starts its rollouts at "
            "the training temperature T_0"
        )
    field = _EXTRA_ARGS_FIELD.get(args.vllm_mode)
    theirs = (args.generation_kwargs or {}).get(field) or {} if field else {}
    clash = sorted(k for k in theirs if str(k).startswith(EXTRA_ARGS_PREFIX))
    if with_ead and clash:
        raise ValueError(
            f"GRPOConfig.generation_kwargs['{field}'] has {', '.join(clash)}; with "
            "EADGRPOTrainer(ead=...) the trainer sets the ead_* keys of each step"
        )
