"""The swap checks: a missed swap of any bridge class stops the run with a clear error.

Simulated misses: OpenRLHF's module binding a stock class (the launcher's
check, through ``train_ppo_ray.main``); the trainer holding a stock
generator, experience maker, or Ray handles of stock engines or workers (the
trainer's first-step check); a stock trainer asking a bridge policy worker
for log-probs (the worker's check). The Ray handles are stand-ins that
expose, as Ray's ``ActorHandle`` does, exactly the methods of the real actor
class they stand for (no Ray cluster is started; the rollout smoke test
checks real handles). ``ray.get`` is the identity on their plain values.
CPU stub: ``flash_attn`` is stubbed while OpenRLHF's training modules are
imported (``openrlhf_bridge.testing``).
"""

from __future__ import annotations

import inspect
import sys
import types

import openrlhf.utils
import pytest
import ray
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
from openrlhf.trainer.ray import vllm_engine
from openrlhf.trainer.ray.launcher import RayActorGroup, ReferenceModelActor
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

from openrlhf_bridge import install, train_ppo_ray
from openrlhf_bridge.config import BridgeConfig
from openrlhf_bridge.experience import GroupedExperienceMaker
from openrlhf_bridge.rollout import EADSamplesGenerator
from openrlhf_bridge.swaps import BridgeSwapError
from openrlhf_bridge.testing import GRPO_ARGS
from openrlhf_bridge.trainer import _EADPPOTrainer
from openrlhf_bridge.vllm_engine import (
    _BridgeRolloutRayActor,
    create_bridge_vllm_engines,
    create_ead_vllm_engines,
)
from openrlhf_bridge.workers import (
    EADPolicyModelActor,
    _EADPolicyModelActor,
    _EADReferenceModelActor,
)

GRPO = list(GRPO_ARGS)


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class Handle:
    """A Ray actor handle's surface: one ``.remote`` attribute per method of ``cls``, no other."""

    def __init__(self, cls: type) -> None:
        self.calls: list[str] = []
        for name, _ in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("__"):
                setattr(self, name, _Remote(lambda *a, _name=name, **k: self.calls.append(_name)))


def group(cls: type, size: int = 2) -> RayActorGroup:
    """OpenRLHF's RayActorGroup (its own methods) over ``size`` handles of ``cls``."""
    actors = object.__new__(RayActorGroup)
    actors._actor_handlers = [Handle(cls) for _ in range(size)]
    return actors


def trainer(
    engine=_BridgeRolloutRayActor,
    policy=_EADPolicyModelActor,
    reference=_EADReferenceModelActor,
    generator=EADSamplesGenerator,
    maker=GroupedExperienceMaker,
):
    """The bridge's trainer holding what OpenRLHF would have instantiated (uninitialised)."""
    t = object.__new__(_EADPPOTrainer)
    t.vllm_engines = [Handle(engine), Handle(engine)]
    t.actor_model_group = group(policy)
    t.reference_model_group = None if reference is None else group(reference)
    t.samples_generator = object.__new__(generator)
    t.experience_maker = object.__new__(maker)
    return t


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    monkeypatch.setattr(ray, "get", lambda value, **_: value)


def test_first_step_check_passes_with_every_bridge_class_and_announces_the_trainer():
    t = trainer()
    t.bridge_check_swaps()
    assert t.bridge_swaps_checked
    assert all(
        h.calls == ["bridge_trainer_checked_in"] for h in t.actor_model_group._actor_handlers
    )
    trainer(reference=None).bridge_check_swaps()  # no reference model (no KL)


STOCK = {
    "engine": (vllm_engine.RolloutRayActor.__ray_actor_class__, "2 of 2 rollout engine(s) run"),
    "policy": (PolicyModelActor.__ray_actor_class__, "2 of 2 policy worker(s) run OpenRLHF"),
    "reference": (ReferenceModelActor.__ray_actor_class__, "2 of 2 reference worker(s) run"),
    "generator": (SamplesGenerator, "the rollout generator is openrlhf.trainer.ppo_utils."),
    "maker": (RemoteExperienceMaker, "the experience maker is openrlhf.trainer.ppo_utils."),
}


@pytest.mark.parametrize("missed", list(STOCK))
def test_a_missed_swap_stops_the_first_step(missed):
    stock, message = STOCK[missed]
    t = trainer(**{missed: stock})
    with pytest.raises(BridgeSwapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        t.bridge_check_swaps()
    assert not t.bridge_swaps_checked
    assert all(h.calls == [] for h in t.actor_model_group._actor_handlers)


def test_a_bridge_policy_worker_refuses_a_stock_trainer(monkeypatch):
    monkeypatch.setattr(PolicyModelActor.__ray_actor_class__, "forward", lambda self, **kw: "ran")
    worker = object.__new__(_EADPolicyModelActor)
    with pytest.raises(BridgeSwapError, match="not the bridge's EADPPOTrainer"):
        worker.forward(sequences=None)  # what a stock trainer's experience maker calls
    worker.bridge_trainer_checked_in()  # what the bridge's trainer calls at its first step
    assert worker.forward(sequences=None) == "ran"


class _ReachedTrain(Exception):
    pass


def test_a_name_openrlhf_bound_to_its_own_class_stops_the_launch(monkeypatch, capsys):
    """OpenRLHF's module imports PolicyModelActor through a path the bridge does not patch."""
    elsewhere = types.ModuleType("elsewhere")  # e.g. a re-export the bridge patches instead
    elsewhere.PolicyModelActor = PolicyModelActor
    real = install.substitutions

    def missed(config):
        return [
            (elsewhere, name, new) if name == "PolicyModelActor" else (module, name, new)
            for module, name, new in real(config)
        ]

    def fake_get_strategy(args):
        raise _ReachedTrain

    monkeypatch.setattr(install, "substitutions", missed)
    monkeypatch.setattr(openrlhf.utils, "get_strategy", fake_get_strategy)
    monkeypatch.setattr("ray.is_initialized", lambda: True)
    # flash-attn cannot be installed here (CUDA only): the launch check is told it is
    monkeypatch.setattr(train_ppo_ray, "missing_for_training", lambda: [])
    with pytest.raises(SystemExit) as exc:
        train_ppo_ray.main([*GRPO, "--e3.dynamic_budget"])
    assert exc.value.code == 1  # stopped before OpenRLHF's train() (never reached)
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert "OpenRLHF's train_ppo_ray bound its own classes, not the bridge's" in line
    assert (
        "PolicyModelActor is openrlhf.trainer.ray.ppo_actor.PolicyModelActor, expected "
        "openrlhf_bridge.workers._EADPolicyModelActor" in line
    )
    # everything the launcher installed is restored
    assert sys.modules["openrlhf.trainer.ray.ppo_actor"].PolicyModelActor is PolicyModelActor
    assert EADPolicyModelActor is not PolicyModelActor


@pytest.mark.parametrize(
    "flags",
    [["--ead.enable", "--ead.d0", "9"], ["--e3.dynamic_budget"], ["--e3.temperature_controller"]],
)
def test_any_bridge_feature_swaps_every_class(flags):
    namespace, config = train_ppo_ray.parse_args([*GRPO, *flags])
    swaps = {name: new for _, name, new in install.substitutions(config)}
    assert list(swaps) == ["PPOTrainer", "PolicyModelActor", "ReferenceModelActor",
                           "create_vllm_engines"]  # fmt: skip
    ead = config.ead is not None
    assert swaps["create_vllm_engines"] is (
        create_ead_vllm_engines if ead else create_bridge_vllm_engines
    )
    assert not BridgeConfig.from_args(train_ppo_ray.parse_args(GRPO)[0]).active
