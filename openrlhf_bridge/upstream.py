"""The OpenRLHF gate: the release the bridge was written for, and the methods it overrides.

The bridge subclasses OpenRLHF classes, overrides some of their methods, re-implements
one (``RemoteExperienceMaker.compute_advantages_and_returns``, grouped by prompt) and
reads one private attribute (``RayActorGroup._actor_handlers``). Before a launch,
:func:`check_openrlhf` compares the installed OpenRLHF's version and the parameter
names of every such method with what the bridge expects (the same
:class:`~ead_vllm.vllm_ext.seams.signature.Expectation` machinery as vLLM's seams) and
stops with one line otherwise. ``tests/bridge/test_bridge_upstream.py`` also fingerprints the
source of each overridden method, so an OpenRLHF upgrade names what to re-read.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable
from typing import Any

from ead_vllm.vllm_ext.errors import EADStartupError
from ead_vllm.vllm_ext.seams.signature import Expectation, attr, mismatches

SUPPORTED_OPENRLHF: tuple[str, ...] = ("0.11.2",)

EXPERIENCE_MAKER = "openrlhf.trainer.ppo_utils.experience_maker"
SAMPLES_GENERATOR = "openrlhf.trainer.ppo_utils.samples_generator"
PPO_TRAINER = "openrlhf.trainer.ppo_trainer"
VLLM_ENGINE = "openrlhf.trainer.ray.vllm_engine"
PPO_ACTOR = "openrlhf.trainer.ray.ppo_actor"
LAUNCHER = "openrlhf.trainer.ray.launcher"
# Ray wraps actor classes; their methods gain Ray's tracing parameter
_RAY = ("_ray_trace_ctx",)

#: (module, class, method, its parameters); ``ray=True`` for Ray actor classes
OVERRIDDEN: tuple[tuple[str, str, str, tuple[str, ...], bool], ...] = (
    (
        EXPERIENCE_MAKER,
        "RemoteExperienceMaker",
        "__init__",
        (
            "self",
            "actor_model_group",
            "critic_model_group",
            "reward_model_group",
            "initial_model_group",
            "kl_controller",
            "strategy",
            "tokenizer",
            "kwargs",
        ),
        False,
    ),
    (
        EXPERIENCE_MAKER,
        "RemoteExperienceMaker",
        "compute_advantages_and_returns",
        ("self", "experiences"),
        False,
    ),  # fmt: skip
    (
        SAMPLES_GENERATOR,
        "SamplesGenerator",
        "__init__",
        ("self", "strategy", "prompts_dataloader", "eval_dataloader", "tokenizer", "vllm_engines"),
        False,
    ),  # fmt: skip
    (SAMPLES_GENERATOR, "SamplesGenerator", "generate_samples", ("self", "generate_kwargs"), False),
    (
        SAMPLES_GENERATOR,
        "SamplesGenerator",
        "_process_response_into_experience",
        ("self", "response", "generate_kwargs"),
        False,
    ),  # fmt: skip
    (
        SAMPLES_GENERATOR,
        "SamplesGenerator",
        "generate_eval_samples",
        ("self", "generate_kwargs"),
        False,
    ),  # fmt: skip
    (PPO_TRAINER, "PPOTrainer", "train_step", ("self", "rollout_samples", "global_step"), True),
    (PPO_TRAINER, "PPOTrainer", "init_checkpoint_states", ("self",), True),
    (
        VLLM_ENGINE,
        "RolloutRayActor",
        "__init__",
        (
            "self",
            "args",
            "bundle_indices",
            "agent_func_path",
            "remote_rm_url",
            "mm_pad_token_ids",
            "_ray_trace_ctx",
            "kwargs",
        ),
        False,
    ),  # fmt: skip
    (
        PPO_ACTOR,
        "PolicyModelActor",
        "init_model_from_pretrained",
        ("self", "strategy", "pretrain", "max_steps", "vllm_engines"),
        True,
    ),  # fmt: skip
    (
        PPO_ACTOR,
        "PolicyModelActor",
        "forward",
        (
            "self",
            "sequences",
            "action_mask",
            "attention_mask",
            "packed_seq_lens",
            "mm_train_inputs_list",
        ),
        True,
    ),  # fmt: skip
)


def upstream_method(module: str, cls: str, name: str) -> Callable[..., Any]:
    """OpenRLHF's ``module.cls.name`` (a Ray actor class's underlying class when wrapped)."""
    owner = attr(module, cls)
    owner = getattr(owner, "__ray_actor_class__", owner)
    return getattr(owner, name)


def _actor_handlers() -> Any:
    source = inspect.getsource(attr(LAUNCHER, "RayActorGroup"))
    if "self._actor_handlers" not in source:
        raise AttributeError("RayActorGroup no longer keeps its handles in _actor_handlers")
    return source


EXPECTED: tuple[Expectation, ...] = (
    *(
        Expectation(
            f"{module}.{cls}.{name}",
            lambda module=module, cls=cls, name=name: upstream_method(module, cls, name),
            (*params, *_RAY) if ray else params,
        )
        for module, cls, name, params, ray in OVERRIDDEN
    ),
    Expectation(f"{LAUNCHER}.RayActorGroup._actor_handlers", _actor_handlers, None),
)


class UnsupportedOpenRLHFError(EADStartupError):
    """The installed OpenRLHF is not the one the bridge was written for."""


WAY_OUT = (
    f"install openrlhf=={SUPPORTED_OPENRLHF[-1]} (pip install 'ead-vllm[openrlhf]'), or run "
    "OpenRLHF's own launcher without the bridge"
)


def installed_openrlhf_version() -> str:
    """The installed OpenRLHF distribution's version ("not installed" when absent)."""
    try:
        return importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def check_openrlhf(version: str | None = None) -> None:
    """Raise :class:`UnsupportedOpenRLHFError` unless OpenRLHF is a supported release whose
    overridden methods have the parameters the bridge expects (imports OpenRLHF's
    training modules, flash-attn stubbed where it is missing)."""
    found = installed_openrlhf_version() if version is None else version
    if found not in SUPPORTED_OPENRLHF:
        raise UnsupportedOpenRLHFError(
            f"the bridge does not start on OpenRLHF {found}: it was written for OpenRLHF "
            f"{', '.join(SUPPORTED_OPENRLHF)}",
            way_out=WAY_OUT,
        )
    from openrlhf_bridge.imports import flash_attn_stubbed

    with flash_attn_stubbed():
        wrong = mismatches(EXPECTED)
    if wrong:
        raise UnsupportedOpenRLHFError(
            f"the bridge does not start on this OpenRLHF {found}: the methods it overrides "
            f"have changed: {'; '.join(wrong)}",
            way_out=WAY_OUT,
        )
