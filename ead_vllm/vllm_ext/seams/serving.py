"""Seam: where vLLM's OpenAI-server helpers live (``ead-vllm serve`` and its tests).

* ``cli_env_setup`` (the environment set-up ``vllm serve`` runs first):
  ``vllm.entrypoints.serve.utils.api_utils`` in vLLM 0.29.0-0.32.0,
  ``vllm.entrypoints.common.startup`` in 0.33.0;
* ``make_arg_parser`` (the server's argument parser):
  ``vllm.entrypoints.launchers.cli_args`` in 0.29.0-0.32.0,
  ``vllm.entrypoints.common.cli_args`` in 0.33.0;
* ``vllm.entrypoints.cli.serve.ServeSubcommand`` (``subparser_init``, ``validate``,
  ``cmd``) and ``vllm.utils.argparse_utils.FlexibleArgumentParser``: the same in all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

VERSIONS: tuple[str, ...] = ("0.29.0", "0.30.0", "0.31.0", "0.32.0", "0.33.0")

# (module, name) candidates, newest layout first
_CLI_ENV_SETUP = (
    ("vllm.entrypoints.common.startup", "cli_env_setup"),  # 0.33.0
    ("vllm.entrypoints.serve.utils.api_utils", "cli_env_setup"),  # 0.29.0-0.32.0
)
_MAKE_ARG_PARSER = (
    ("vllm.entrypoints.common.cli_args", "make_arg_parser"),  # 0.33.0
    ("vllm.entrypoints.launchers.cli_args", "make_arg_parser"),  # 0.29.0-0.32.0
)


def _first(candidates: tuple[tuple[str, str], ...]) -> Callable[..., Any]:
    errors = []
    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{module}.{name}: {exc}")
    raise ImportError("none of the known locations has it: " + "; ".join(errors))


def cli_env_setup() -> Callable[[], None]:
    """vLLM's ``cli_env_setup`` function (raises ``ImportError`` if no known module has it)."""
    return _first(_CLI_ENV_SETUP)


def make_arg_parser() -> Callable[[Any], Any]:
    """vLLM's ``make_arg_parser`` function (raises ``ImportError`` if no known module has it)."""
    return _first(_MAKE_ARG_PARSER)
