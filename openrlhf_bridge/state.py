"""The bridge's run state: EAD step, entropy controller and rollout-budget allocator.

One :class:`BridgeState` lives in the PPO trainer (OpenRLHF's single
controller); the rollout generator and the experience maker of the same
process share it. It is saved inside OpenRLHF's checkpoints (the
``client_states`` dict that DeepSpeed stores with the actor) under
:data:`STATE_KEY`, so a resumed run continues the same schedules.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ead_vllm.controllers import EntropyTemperatureController, RolloutBudgetAllocator
from ead_vllm.params import EADParams
from openrlhf_bridge.config import BridgeConfig

logger = logging.getLogger(__name__)

STATE_KEY = "openrlhf_bridge"
_STATE_VERSION = 1


@dataclass(frozen=True)
class RolloutRecord:
    """The samples of one rollout batch, in rollout order (OpenRLHF's ``Experience.index``).

    ``instances[i]``: the rollout instance (one dispatched prompt) of sample
    ``i``, the group of its advantage baseline; ``keys[i]``: its prompt key
    (:func:`openrlhf_bridge.sampling.prompt_key`), the difficulty id of the
    rollout budget.
    """

    instances: list[int]
    keys: list[str]

    def __post_init__(self) -> None:
        if len(self.instances) != len(self.keys):
            raise ValueError(f"{len(self.instances)} instances for {len(self.keys)} keys")


class BridgeState:
    """Schedules of one training run, advanced once per global step.

    ``step`` is the number of finished global steps: rollouts of step ``s``
    use ``ead_params()`` (``d_s``) and ``temperature`` as they are before
    :meth:`finish_step` of step ``s``. ``default_n`` is OpenRLHF's
    ``n_samples_per_prompt``; ``vocab_size`` and ``total_steps`` are needed
    only with the temperature controller (``total_steps`` from the flags wins).
    """

    def __init__(
        self,
        config: BridgeConfig,
        *,
        default_n: int,
        base_temperature: float,
        vocab_size: int | None = None,
        total_steps: int | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.default_n = int(default_n)
        self.base_temperature = float(base_temperature)
        self.step = 0
        self.pending_epoch_end = False
        self.rollout: RolloutRecord | None = None  # the batch being trained (not checkpointed)
        self._step_counts: list[int] = []
        self.controller: EntropyTemperatureController | None = None
        self.allocator: RolloutBudgetAllocator | None = None
        if config.temperature is not None:
            cfg = config.temperature
            steps = cfg.total_steps if cfg.total_steps is not None else total_steps
            if vocab_size is None or steps is None:
                raise ValueError("the temperature controller needs vocab_size and total_steps")
            self.controller = EntropyTemperatureController(
                vocab_size,
                init_temperature=self.base_temperature,
                total_steps=max(int(steps), 1),
                anneal_start=cfg.anneal_start,
                eta=cfg.eta,
                warmup_steps=cfg.warmup_steps,
                min_temperature=cfg.min_temperature,
                max_temperature=cfg.max_temperature,
            )
        if config.budget is not None:
            self.allocator = RolloutBudgetAllocator(
                self.default_n,
                n_min_limit=config.budget.n_min,
                n_max_limit=config.budget.n_max,
                widen_per_epoch=config.budget.widen,
                seed=seed,
            )

    @property
    def temperature(self) -> float:
        """Base sampling temperature of the current step (the controller's when on)."""
        return self.controller.temperature if self.controller is not None else self.base_temperature

    def ead_params(self) -> EADParams | None:
        """EAD schedule of the current step (``d_s`` from :attr:`step`); None without EAD."""
        return self.config.ead.params_at(self.step) if self.config.ead is not None else None

    def actor_state(self) -> dict[str, Any]:
        """What the actor and reference workers need for this step's log-probs.

        ``temperature``: base temperature; ``ead``: the flat ``ead_*`` keys when
        the actor applies ``tau_t`` per position (``--ead.correction positional``),
        else None (TIS trains at the base temperature).
        """
        ead = self.ead_params() if self.config.positional else None
        return {
            "temperature": self.temperature,
            "ead": None if ead is None else ead.to_extra_args(),
        }

    def allocate(self, keys: Sequence[str]) -> list[int]:
        """Rollouts per prompt for one dispatch: the allocator's, else ``default_n`` each.

        The sum is always ``len(keys) * default_n``.
        """
        if self.allocator is None:
            return [self.default_n] * len(keys)
        counts = self.allocator.allocate(list(keys))
        self._step_counts.extend(counts)
        return counts

    def record(self, key: str, rewards: Iterable[Any]) -> None:
        """Add one prompt's rewards to its difficulty statistics (no-op without the budget)."""
        if self.allocator is not None:
            self.allocator.record(key, rewards)

    def end_epoch(self) -> None:
        """Close a pass over the prompt dataset (re-rank prompts, widen [n_min, n_max])."""
        self.pending_epoch_end = False
        if self.allocator is not None:
            self.allocator.end_epoch()

    def finish_step(
        self, entropy_sum: float = 0.0, entropy_tokens: float = 0.0
    ) -> dict[str, float]:
        """Close the current step; return its metrics and advance the schedules.

        ``entropy_sum / entropy_tokens`` is the global token-weighted mean policy
        entropy of the step's rollouts (summed over data-parallel ranks), fed to
        the controller: its new temperature is the next step's. Raises
        ``RuntimeError`` when the controller is on and no entropy was measured
        (it must never be silently inactive).
        """
        metrics: dict[str, float] = {}
        ead = self.ead_params()
        if ead is not None:
            metrics["ead/d_s"] = float(ead.decay)
            metrics["ead/tau_max"] = float(ead.tau_max)
            metrics["ead/tau_min"] = float(ead.tau_min)
        metrics["e3/temperature"] = self.temperature
        if self.controller is not None:
            if entropy_tokens <= 0:
                raise RuntimeError(
                    "the E3 temperature controller got no entropy for this step (no action "
                    "tokens measured by the actor workers)"
                )
            entropy = entropy_sum / entropy_tokens
            metrics["e3/entropy"] = entropy
            measured_step = self.controller.step
            self.controller.update(entropy)
            if self.controller.h_init is not None:
                metrics["e3/target_entropy"] = self.controller.target_at(measured_step)
            metrics["e3/next_temperature"] = self.controller.temperature
        if self.allocator is not None:
            for name, value in self.allocator.stats(reset=True).items():
                metrics[f"e3/budget/{name}"] = float(value)
            if self._step_counts:
                histogram = Counter(self._step_counts)
                total = len(self._step_counts)
                metrics["e3/budget/n_mean"] = sum(self._step_counts) / total
                for n, count in sorted(histogram.items()):
                    metrics[f"e3/budget/frac_n{n}"] = count / total
        self._step_counts = []
        if self.pending_epoch_end:
            self.end_epoch()
        self.step += 1
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state for OpenRLHF's checkpoint ``client_states``."""
        return {
            "version": _STATE_VERSION,
            "step": self.step,
            "pending_epoch_end": self.pending_epoch_end,
            "controller": None if self.controller is None else self.controller.state_dict(),
            "allocator": None if self.allocator is None else self.allocator.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the enabled features must match the saved ones."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported bridge state version {state.get('version')!r}")
        for name, obj, flag in (
            ("controller", self.controller, "--e3.temperature_controller"),
            ("allocator", self.allocator, "--e3.dynamic_budget"),
        ):
            if (obj is None) != (state.get(name) is None):
                saved = "with" if state.get(name) is not None else "without"
                raise ValueError(
                    f"the checkpoint was saved {saved} {flag}; resume with the same bridge flags"
                )
            if obj is not None:
                obj.load_state_dict(state[name])
        self.step = int(state["step"])
        self.pending_epoch_end = bool(state.get("pending_epoch_end", False))
        self._step_counts = []

    def save_into(self, client_states: dict[str, Any]) -> None:
        """Put the state into OpenRLHF's checkpoint ``client_states`` (in place)."""
        client_states[STATE_KEY] = self.state_dict()

    def restore_from(self, checkpoint_states: Mapping[str, Any]) -> None:
        """Restore from the ``client_states`` of an OpenRLHF checkpoint, if it has ours.

        A checkpoint of a run without the bridge restarts the schedules at its
        ``global_step`` (with a warning). The saved step must equal the
        checkpoint's ``global_step``.
        """
        global_step = int(checkpoint_states.get("global_step", 0) or 0)
        state = checkpoint_states.get(STATE_KEY)
        if state is None:
            if global_step > 0:
                logger.warning(
                    "checkpoint at global step %d has no %s state: EAD/E3 schedules restart "
                    "from there with fresh statistics",
                    global_step,
                    STATE_KEY,
                )
            self.step = global_step
            return
        self.load_state_dict(state)
        if self.step != global_step:
            raise ValueError(
                f"bridge state is at step {self.step} but the checkpoint at global step "
                f"{global_step}"
            )
