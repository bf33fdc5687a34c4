"""OpenRLHF's vLLM rollout engines, started with the EAD sampler active.

:class:`EADRolloutRayActor` is OpenRLHF's ``RolloutRayActor`` whose engine
gets ``additional_config={"sampler": "ead"}``; this module imports no
training code (no DeepSpeed, no flash-attn), as the engine workers need none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray
from openrlhf.trainer.ray import vllm_engine

from ead_vllm.vllm_ext.config import EAD_SAMPLER, SAMPLER_CONFIG_KEY


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


class _EADRolloutRayActor(vllm_engine.RolloutRayActor.__ray_actor_class__):
    """OpenRLHF's rollout engine actor with the EAD sampler switched on."""

    async def __init__(self, *args: Any, **kwargs: Any) -> None:
        await super().__init__(*args, **with_ead_sampler(kwargs))


EADRolloutRayActor = ray.remote(_EADRolloutRayActor)


@contextlib.contextmanager
def _rollout_actor(cls: Any) -> Iterator[None]:
    original = vllm_engine.RolloutRayActor
    vllm_engine.RolloutRayActor = cls
    try:
        yield
    finally:
        vllm_engine.RolloutRayActor = original


def create_ead_vllm_engines(*args: Any, **kwargs: Any) -> list[Any]:
    """OpenRLHF's ``create_vllm_engines`` (same arguments), the engines with the EAD sampler.

    OpenRLHF's function builds the placement groups and engine arguments;
    only the actor class it instantiates is swapped, for this call.
    """
    with _rollout_actor(EADRolloutRayActor):
        return vllm_engine.create_vllm_engines(*args, **kwargs)
