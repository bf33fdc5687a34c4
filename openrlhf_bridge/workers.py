"""Ray actor classes of the bridge: policy and reference model workers.

Ray forbids subclassing an actor class, so each subclasses OpenRLHF's
original class (``X.__ray_actor_class__``) and is wrapped with ``ray.remote``
again. They live in an importable module so that Ray workers load them by
reference (a patch made in the driver would not reach the workers).
Both attach :class:`openrlhf_bridge.actor.PolicyTemperature` to their
``Actor`` when ``args`` asks for it (otherwise they behave exactly as
OpenRLHF's); the trainer sets the step's temperature and EAD params with
``bridge_set_state`` before every experience-making pass. Both answer
``bridge_role`` (the trainer's proof that the swap took effect), and the
policy worker refuses to make experience for a trainer that never announced
itself with ``bridge_trainer_checked_in`` (OpenRLHF's own trainer never does).
"""

from __future__ import annotations

from typing import Any

import ray
from openrlhf.trainer.ray.launcher import ReferenceModelActor
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

from openrlhf_bridge.actor import PolicyTemperature
from openrlhf_bridge.config import BridgeConfig
from openrlhf_bridge.swaps import POLICY, REFERENCE, TRAINER_MISSING, BridgeSwapError


def _attach(actor: Any, args: Any) -> PolicyTemperature | None:
    if not BridgeConfig.from_args(args).actor_temperature:
        return None
    return PolicyTemperature.attach(actor, base_temperature=args.rollout.temperature)


class _EADPolicyModelActor(PolicyModelActor.__ray_actor_class__):
    """OpenRLHF's policy worker, with the bridge's temperature and entropy measurement."""

    bridge_temperature: PolicyTemperature | None = None
    bridge_measure = False
    bridge_trainer_seen = False

    def init_model_from_pretrained(self, strategy: Any, pretrain: str, *args: Any, **kwargs: Any):
        result = super().init_model_from_pretrained(strategy, pretrain, *args, **kwargs)
        self.bridge_temperature = _attach(self.actor, strategy.args)
        self.bridge_measure = BridgeConfig.from_args(strategy.args).temperature is not None
        return result

    def forward(self, *args: Any, **kwargs: Any):
        # Experience making: log-probs of the pre-update policy on this step's rollouts,
        # the distribution whose entropy the E3 controller needs.
        if not self.bridge_trainer_seen:
            raise BridgeSwapError(TRAINER_MISSING)
        if self.bridge_temperature is None or not self.bridge_measure:
            return super().forward(*args, **kwargs)
        with self.bridge_temperature.measuring():
            return super().forward(*args, **kwargs)

    def bridge_set_state(self, temperature: float, ead: dict[str, Any] | None) -> None:
        """Temperature and flat ``ead_*`` params (None: no per-position tau) for the next step."""
        if self.bridge_temperature is not None:
            self.bridge_temperature.set_state(temperature, ead)

    def bridge_role(self) -> str:
        """What this actor is, for the trainer's check that the swap took effect."""
        return POLICY

    def bridge_trainer_checked_in(self) -> None:
        """Called by the bridge's trainer at its first step (before any experience making)."""
        self.bridge_trainer_seen = True

    def bridge_pop_entropy(self) -> tuple[float, float]:
        """(entropy sum, action tokens) measured since the last call on this rank."""
        if self.bridge_temperature is None:
            return 0.0, 0.0
        return self.bridge_temperature.pop_entropy()


class _EADReferenceModelActor(ReferenceModelActor.__ray_actor_class__):
    """OpenRLHF's reference worker, its log-probs at the bridge's temperature."""

    bridge_temperature: PolicyTemperature | None = None

    def init_model_from_pretrained(self, strategy: Any, pretrain: str, *args: Any, **kwargs: Any):
        result = super().init_model_from_pretrained(strategy, pretrain, *args, **kwargs)
        self.bridge_temperature = _attach(self.model, strategy.args)
        return result

    def bridge_role(self) -> str:
        """What this actor is, for the trainer's check that the swap took effect."""
        return REFERENCE

    def bridge_set_state(self, temperature: float, ead: dict[str, Any] | None) -> None:
        """Temperature and flat ``ead_*`` params (None: no per-position tau) for the next step."""
        if self.bridge_temperature is not None:
            self.bridge_temperature.set_state(temperature, ead)


EADPolicyModelActor = ray.remote(num_gpus=1)(_EADPolicyModelActor)
EADReferenceModelActor = ray.remote(num_gpus=1)(_EADReferenceModelActor)
