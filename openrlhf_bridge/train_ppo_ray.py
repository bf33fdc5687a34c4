"""``python -m openrlhf_bridge.train_ppo_ray <OpenRLHF train_ppo_ray flags> [--ead.* --e3.*]``.

OpenRLHF builds its parser inline, under ``if __name__ == "__main__"`` of
``openrlhf.cli.train_ppo_ray``, and has no function that returns it. The
launcher runs that module with ``runpy`` twice, each time intercepting
``ArgumentParser.parse_args`` exactly once:

1. :func:`openrlhf_parser` stops the module at its ``parse_args`` call and
   keeps the parser it built, to which the bridge adds its flags;
2. :func:`run_openrlhf` lets the module run to the end with ``parse_args``
   returning the namespace parsed here, so OpenRLHF's own post-parse checks,
   ``hierarchize`` and ``train(args)`` run unchanged, with the bridge's
   classes installed (:func:`openrlhf_bridge.install.bridge_installed`).

Without any bridge feature switched on, OpenRLHF runs untouched.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from openrlhf_bridge.flags import (
    BridgeConfig,
    BridgeFlagError,
    add_bridge_arguments,
    explicit_dests,
    finalize,
)
from openrlhf_bridge.install import bridge_installed

OPENRLHF_MAIN = "openrlhf.cli.train_ppo_ray"


class _ParserCaptured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def _run_main_once_patched(parse_args: Callable[..., Any]) -> None:
    original = argparse.ArgumentParser.parse_args

    def once(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        argparse.ArgumentParser.parse_args = original  # later parsers (libraries) are untouched
        return parse_args(self, *args, **kwargs)

    argparse.ArgumentParser.parse_args = once
    try:
        with warnings.catch_warnings():
            # runpy warns when the module was imported before (harmless: it runs afresh)
            warnings.filterwarnings("ignore", "'openrlhf.cli.train_ppo_ray' found in sys.modules")
            runpy.run_module(OPENRLHF_MAIN, run_name="__main__", alter_sys=False)
    finally:
        argparse.ArgumentParser.parse_args = original


def openrlhf_parser() -> argparse.ArgumentParser:
    """OpenRLHF 0.11.2's own ``train_ppo_ray`` argument parser (nothing else runs)."""

    def capture(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _ParserCaptured(parser)

    try:
        _run_main_once_patched(capture)
    except _ParserCaptured as captured:
        return captured.parser
    raise RuntimeError(f"{OPENRLHF_MAIN} finished without parsing its arguments")


def build_parser() -> argparse.ArgumentParser:
    """OpenRLHF's parser with the bridge's ``--ead.*`` / ``--e3.*`` flags added."""
    parser = openrlhf_parser()
    parser.prog = "python -m openrlhf_bridge.train_ppo_ray"
    add_bridge_arguments(parser)
    return parser


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, BridgeConfig]:
    """Parse ``argv`` with the combined parser and validate the bridge flags.

    Returns OpenRLHF's flat namespace (with the settings the bridge implies
    applied, e.g. TIS) and the resolved :class:`BridgeConfig`. Bad values or
    combinations exit like any argparse error (status 2, message on stderr).
    """
    argv = list(argv)
    parser = build_parser()
    namespace = parser.parse_args(argv)
    try:
        config = finalize(namespace, explicit_dests(parser, argv))
    except BridgeFlagError as exc:
        parser.error(str(exc))
    return namespace, config


def run_openrlhf(namespace: argparse.Namespace) -> None:
    """Run OpenRLHF's ``train_ppo_ray`` main block on an already parsed namespace."""
    _run_main_once_patched(lambda parser, *args, **kwargs: namespace)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: parse, validate, install the bridge, run OpenRLHF's trainer."""
    namespace, config = parse_args(sys.argv[1:] if argv is None else argv)
    with bridge_installed(config):
        run_openrlhf(namespace)


if __name__ == "__main__":
    main()
