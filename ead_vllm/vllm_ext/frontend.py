"""Frontend patches: the ``--sampler`` flag, start-up refusals and request validation."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

from ead_vllm.vllm_ext.config import (
    DEFAULT_SAMPLER,
    SAMPLER_CHOICES,
    SAMPLER_CONFIG_KEY,
    check_ead_config,
    ead_sampler_enabled,
    sampler_from_env,
    with_env_settings,
)
from ead_vllm.vllm_ext.seams.frontend import ARG_UTILS_MODULE, INPUT_PROCESSOR_MODULE
from ead_vllm.vllm_ext.seams.patching import wrap_once

__all__ = ["ARG_UTILS_MODULE", "INPUT_PROCESSOR_MODULE", "patch_arg_utils", "patch_input_processor"]

SAMPLER_HELP = (
    "Sampler of the model runner. 'ead' samples requests that carry ead_* keys "
    "in extra_args (vllm_xargs) with exploratory annealed decoding, and every "
    "other request exactly as 'default' (stock vLLM) does. Stored as "
    "additional_config['sampler']."
)


def add_sampler_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--sampler {default,ead}`` to ``parser`` (once)."""
    if any("--sampler" in action.option_strings for action in parser._actions):
        return
    group = parser.add_argument_group("EAD", "Exploratory annealed decoding (ead-vllm)")
    group.add_argument("--sampler", choices=list(SAMPLER_CHOICES), default=None, help=SAMPLER_HELP)


def sampler_into_additional_config(engine_args: Any, args: argparse.Namespace) -> None:
    """Copy a given ``--sampler`` into ``engine_args.additional_config``."""
    choice = getattr(args, "sampler", None)
    if choice is None:
        return
    extra = dict(engine_args.additional_config or {})
    previous = extra.get(SAMPLER_CONFIG_KEY)
    if previous is not None and previous != choice:
        raise ValueError(
            f"--sampler {choice} contradicts --additional-config "
            f"{{{SAMPLER_CONFIG_KEY!r}: {previous!r}}}"
        )
    # an explicit "default" is recorded only where it must beat EAD_VLLM_SAMPLER
    if choice != DEFAULT_SAMPLER or previous is not None or sampler_from_env() is not None:
        extra[SAMPLER_CONFIG_KEY] = choice
    engine_args.additional_config = extra


def patch_arg_utils(module: ModuleType) -> None:
    """Add ``--sampler`` to vLLM's engine CLI and refuse bad EAD configs at start-up."""
    cls = module.EngineArgs

    def wrap_add_cli_args(add_cli_args: Any) -> Any:
        def patched(parser: Any, *args: Any, **kwargs: Any) -> Any:
            parser = add_cli_args(parser, *args, **kwargs)
            add_sampler_arg(parser)
            return parser

        return patched

    def wrap_from_cli_args(from_cli_args: Any) -> Any:
        def patched(klass: Any, args: argparse.Namespace) -> Any:
            engine_args = from_cli_args(klass, args)
            sampler_into_additional_config(engine_args, args)
            return engine_args

        return patched

    def wrap_create_engine_config(create_engine_config: Any) -> Any:
        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            # EAD_VLLM_SAMPLER, for engines built by code the user does not control
            self.additional_config = with_env_settings(self.additional_config)
            config = create_engine_config(self, *args, **kwargs)
            check_ead_config(config)
            return config

        return patched

    wrap_once(cls, "add_cli_args", wrap_add_cli_args)
    wrap_once(cls, "from_cli_args", wrap_from_cli_args)
    wrap_once(cls, "create_engine_config", wrap_create_engine_config)


def patch_input_processor(module: ModuleType) -> None:
    """Validate ``ead_*`` extra_args where vLLM validates requests, when the EAD sampler is on."""

    def wrap(original: Any) -> Any:
        def _validate_params(self: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, params, *args, **kwargs)
            if ead_sampler_enabled(self.vllm_config) and hasattr(params, "extra_args"):
                from ead_vllm.vllm_ext.config import engine_ead_defaults
                from ead_vllm.vllm_ext.validation import parse_ead_params

                parse_ead_params(params, engine_ead_defaults(self.vllm_config))
            return result

        return _validate_params

    wrap_once(module.InputProcessor, "_validate_params", wrap)
