"""Seam: where vLLM's OpenAI-server helpers live (``ead-vllm serve`` and its tests).

* ``cli_env_setup`` (the environment set-up ``vllm serve`` runs first):
  ``vllm.entrypoints.serve.utils.api_utils`` in vLLM 0.24.0-0.32.0,
  ``vllm.entrypoints.common.startup`` from 0.33.0 (:data:`~.versions.SERVE_COMMON_MODULES`);
* ``make_arg_parser`` (the server's argument parser):
  ``vllm.entrypoints.openai.cli_args`` in 0.24.0-0.28.0,
  ``vllm.entrypoints.launchers.cli_args`` in 0.29.0-0.32.0
  (:data:`~.versions.SERVE_LAUNCHERS_MODULE`), ``vllm.entrypoints.common.cli_args`` from
  0.33.0;
* ``vllm.entrypoints.cli.serve.ServeSubcommand`` (``subparser_init``, ``validate``,
  ``cmd``) and ``vllm.utils.argparse_utils.FlexibleArgumentParser``: the same in all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ead_vllm.vllm_ext.seams.versions import (
    SERVE_COMMON_MODULES,
    SERVE_LAUNCHERS_MODULE,
    installed_release,
)


def _cli_env_setup_module(version: str) -> str:
    if SERVE_COMMON_MODULES.holds(version):
        return "vllm.entrypoints.common.startup"
    return "vllm.entrypoints.serve.utils.api_utils"


def _make_arg_parser_module(version: str) -> str:
    if SERVE_COMMON_MODULES.holds(version):
        return "vllm.entrypoints.common.cli_args"
    if SERVE_LAUNCHERS_MODULE.holds(version):
        return "vllm.entrypoints.launchers.cli_args"
    return "vllm.entrypoints.openai.cli_args"


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
    module = _cli_env_setup_module(installed_release())
    return importlib.import_module(module).cli_env_setup


def make_arg_parser() -> Callable[[Any], Any]:
    """vLLM's ``make_arg_parser`` function (``ImportError``/``AttributeError`` if it moved)."""
    module = _make_arg_parser_module(installed_release())
    return importlib.import_module(module).make_arg_parser
