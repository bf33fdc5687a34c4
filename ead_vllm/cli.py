"""The ``ead-vllm`` command line.

Each subcommand lives in its own module and exposes ``add_parser(subparsers)``,
which registers the subcommand and sets ``func`` (taking the parsed namespace,
returning an exit code). A subcommand that forwards its arguments to another
parser (``serve`` hands them to vLLM's) sets ``passthrough=True`` and finds them
in ``args.passthrough_args``. Modules are imported lazily so ``ead-vllm --help``
stays fast and does not import vLLM.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ead_vllm import __version__

# subcommand module names, in the order ``--help`` lists them
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "ead_vllm.serve.launcher",
    "ead_vllm.evaluation.cli",
    "ead_vllm.plot_schedule",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ead-vllm",
        description="Exploratory annealed decoding (EAD) and E3 exploration for vLLM and OpenRLHF.",
    )
    parser.add_argument("--version", action="version", version=f"ead-vllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ead-vllm`` console script; returns the exit code."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.passthrough_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
