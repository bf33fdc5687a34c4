"""OpenRLHF's vLLM rollout engines, echoing each request's rollout instance (and EAD).

:class:`BridgeRolloutRayActor` is OpenRLHF's ``RolloutRayActor`` with one more
method, ``bridge_generate_responses``: OpenRLHF's ``generate_responses`` whose
responses carry the request's rollout instance id (so that the trainer
groups samples by instance, not by prompt text). :class:`EADRolloutRayActor`
also starts its engine with ``additional_config={"sampler": "ead"}``. This
module imports no training code (no DeepSpeed, no flash-attn), as the engine
workers need none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray
from openrlhf.trainer.ray import vllm_engine

from ead_vllm.vllm_ext.config import EAD_SAMPLER, SAMPLER_CONFIG_KEY
from openrlhf_bridge.sampling import tag_responses
from openrlhf_bridge.swaps import ROLLOUT


def with_ead_sampler(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``engine_kwargs`` with ``additional_config["sampler"] = "ead"`` (other keys kept).

    Raises ``ValueError`` when another sampler was asked for explicitly.
    """
    extra = dict(engine_kwargs.get("additional_config") or {})
    chosen = extra.get(SAMPLER_CONFIG_KEY)
    if chosen not in (None, EAD_SAMPLER):
        raise ValueError(
            f"EAD rollouts need the EAD sampler, but additional_config asks for {chosen!r}"
        )
    extra[SAMPLER_CONFIG_KEY] = EAD_SAMPLER
    return {**engine_kwargs, "additional_config": extra}


class _BridgeRolloutRayActor(vllm_engine.RolloutRayActor.__ray_actor_class__):
    """OpenRLHF's rollout engine actor whose training responses name their rollout instance."""

    async def bridge_generate_responses(self, instance: int, **kwargs: Any) -> list[dict]:
        """OpenRLHF's ``generate_responses(**kwargs)``, each response tagged with ``instance``."""
        return tag_responses(await self.generate_responses(**kwargs), instance)

    def bridge_role(self) -> str:
        """What this actor is, for the trainer's check that the swap took effect."""
        return ROLLOUT


class _EADRolloutRayActor(_BridgeRolloutRayActor):
    """The bridge's rollout engine actor with the EAD sampler switched on."""

    async def __init__(self, *args: Any, **kwargs: Any) -> None:
        await super().__init__(*args, **with_ead_sampler(kwargs))


BridgeRolloutRayActor = ray.remote(_BridgeRolloutRayActor)
EADRolloutRayActor = ray.remote(_EADRolloutRayActor)


@contextlib.contextmanager
def _rollout_actor(cls: Any) -> Iterator[None]:
    original = vllm_engine.RolloutRayActor
    vllm_engine.RolloutRayActor = cls
    try:
        yield
    finally:
        vllm_engine.RolloutRayActor = original


def create_bridge_vllm_engines(*args: Any, **kwargs: Any) -> list[Any]:
    """OpenRLHF's ``create_vllm_engines`` (same arguments), the engines the bridge's class.

    OpenRLHF's function builds the placement groups and engine arguments;
    only the actor class it instantiates is swapped, for this call.
    """
    with _rollout_actor(BridgeRolloutRayActor):
        return vllm_engine.create_vllm_engines(*args, **kwargs)


def create_ead_vllm_engines(*args: Any, **kwargs: Any) -> list[Any]:
    """:func:`create_bridge_vllm_engines` with the EAD sampler in every engine."""
    with _rollout_actor(EADRolloutRayActor):
        return vllm_engine.create_vllm_engines(*args, **kwargs)
