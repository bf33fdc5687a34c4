"""Put the bridge's classes where OpenRLHF's ``train_ppo_ray`` looks them up (driver side).

OpenRLHF has no plugin registry: its ``train()`` reads ``PolicyModelActor``,
``ReferenceModelActor`` and ``create_vllm_engines`` from its module globals and
imports ``PPOTrainer`` inside the function. :func:`bridge_installed` rebinds
those names in their defining modules for the duration of a run. Only the
driver needs this: the classes themselves are importable subclasses, which
Ray workers load by reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from openrlhf_bridge.config import BridgeConfig


def substitutions(config: BridgeConfig) -> list[tuple[Any, str, Any]]:
    """(module, name, bridge object) for every OpenRLHF name the bridge replaces.

    With any bridge feature on, all of them: the trainer, the policy and
    reference workers (stock behaviour unless the actor follows the bridge's
    temperature; they also check that the trainer is the bridge's) and the
    rollout engines (which echo each request's rollout instance; with
    ``--ead.enable`` they also run the EAD sampler).
    """
    import openrlhf.trainer.ppo_trainer as ppo_trainer
    import openrlhf.trainer.ray as ray_package
    import openrlhf.trainer.ray.launcher as launcher
    import openrlhf.trainer.ray.ppo_actor as ppo_actor

    from openrlhf_bridge.trainer import EADPPOTrainer
    from openrlhf_bridge.vllm_engine import create_bridge_vllm_engines, create_ead_vllm_engines
    from openrlhf_bridge.workers import EADPolicyModelActor, EADReferenceModelActor

    engines = create_ead_vllm_engines if config.ead is not None else create_bridge_vllm_engines
    return [
        (ppo_trainer, "PPOTrainer", EADPPOTrainer),
        (ppo_actor, "PolicyModelActor", EADPolicyModelActor),
        (launcher, "ReferenceModelActor", EADReferenceModelActor),
        (ray_package, "create_vllm_engines", engines),
    ]


@contextlib.contextmanager
def bridge_installed(config: BridgeConfig) -> Iterator[list[tuple[Any, str, Any]]]:
    """Rebind OpenRLHF's names to the bridge's classes inside the block; restore after.

    Does nothing when no bridge feature is on.
    """
    swaps = substitutions(config) if config.active else []
    saved = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    try:
        for module, name, replacement in swaps:
            setattr(module, name, replacement)
        yield swaps
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
