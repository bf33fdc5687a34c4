"""Seam: where vLLM's OpenAI-server helpers live (``ead-vllm serve`` and its tests).

* ``cli_env_setup`` (the environment set-up ``vllm serve`` runs first):
  ``vllm.entrypoints.serve.utils.api_utils`` in vLLM 0.29.0-0.32.0,
  ``vllm.entrypoints.common.startup`` from 0.33.0 (:data:`~.versions.SERVE_COMMON_MODULES`);
* ``make_arg_parser`` (the server's argument parser):
  ``vllm.entrypoints.launchers.cli_args`` in 0.29.0-0.32.0,
  ``vllm.entrypoints.common.cli_args`` from 0.33.0;
* ``vllm.entrypoints.cli.serve.ServeSubcommand`` (``subparser_init``, ``validate``,
  ``cmd``) and ``vllm.utils.argparse_utils.FlexibleArgumentParser``: the same in all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ead_vllm.vllm_ext.seams.versions import SERVE_COMMON_MODULES, installed_release

# (module, name) by layout: from 0.33.0, before 0.33.0
_CLI_ENV_SETUP = (
    ("vllm.entrypoints.common.startup", "cli_env_setup"),
    ("vllm.entrypoints.serve.utils.api_utils", "cli_env_setup"),
)
_MAKE_ARG_PARSER = (
    ("vllm.entrypoints.common.cli_args", "make_arg_parser"),
    ("vllm.entrypoints.launchers.cli_args", "make_arg_parser"),
)


def _located(candidates: tuple[tuple[str, str], ...]) -> Callable[..., Any]:
    new, old = candidates
    module, name = new if SERVE_COMMON_MODULES.holds(installed_release()) else old
    return getattr(importlib.import_module(module), name)


def serve_subcommand() -> type:
    """vLLM's ``ServeSubcommand`` (``subparser_init``, ``validate``, ``cmd``)."""
    return importlib.import_module("vllm.entrypoints.cli.serve").ServeSubcommand


def argument_parser() -> type:
    """vLLM's ``FlexibleArgumentParser``."""
    return importlib.import_module("vllm.utils.argparse_utils").FlexibleArgumentParser


def current_platform() -> Any:
    """vLLM's ``current_platform`` (``is_cpu()``)."""
    return importlib.import_module("vllm.platforms").current_platform


def cli_env_setup() -> Callable[[], None]:
    """vLLM's ``cli_env_setup`` function (``ImportError``/``AttributeError`` if it moved)."""
    return _located(_CLI_ENV_SETUP)


def make_arg_parser() -> Callable[[Any], Any]:
    """vLLM's ``make_arg_parser`` function (``ImportError``/``AttributeError`` if it moved)."""
    return _located(_MAKE_ARG_PARSER)
