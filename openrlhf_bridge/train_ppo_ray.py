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

``--help`` and the flag checks work on a machine without flash-attn (a
laptop): the parser is built with flash-attn stubbed
(:mod:`openrlhf_bridge.imports`), and a real launch there stops with one
message saying what is missing. Without any bridge feature switched on,
OpenRLHF runs untouched.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from openrlhf_bridge.arguments import BRIDGE_PREFIXES, add_bridge_arguments, explicit_dests
from openrlhf_bridge.checks import BridgeFlagError
from openrlhf_bridge.combinations import finalize
from openrlhf_bridge.config import BridgeConfig
from openrlhf_bridge.imports import flash_attn_stubbed, missing_for_training
from openrlhf_bridge.install import bridge_installed
from openrlhf_bridge.swaps import BridgeSwapError, check_module_names
from openrlhf_bridge.upstream import UnsupportedOpenRLHFError, check_openrlhf

OPENRLHF_MAIN = "openrlhf.cli.train_ppo_ray"
PROG = "python -m openrlhf_bridge.train_ppo_ray"


class _ParserCaptured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def _run_main_once_patched(
    parse_args: Callable[[argparse.ArgumentParser, Mapping[str, Any]], Any],
) -> None:
    # ``parse_args`` gets the parser and the globals of OpenRLHF's module (its caller).
    original = argparse.ArgumentParser.parse_args

    def once(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        argparse.ArgumentParser.parse_args = original  # later parsers (libraries) are untouched
        return parse_args(self, sys._getframe(1).f_globals)

    argparse.ArgumentParser.parse_args = once
    try:
        with warnings.catch_warnings():
            # runpy warns when the module was imported before (harmless: it runs afresh)
            warnings.filterwarnings("ignore", "'openrlhf.cli.train_ppo_ray' found in sys.modules")
            runpy.run_module(OPENRLHF_MAIN, run_name="__main__", alter_sys=False)
    finally:
        argparse.ArgumentParser.parse_args = original


def openrlhf_parser() -> argparse.ArgumentParser:
    """OpenRLHF 0.11.2's own ``train_ppo_ray`` argument parser (nothing else runs).

    Where flash-attn is not installed, OpenRLHF's module is imported with it
    stubbed (building the parser calls none of it).
    """

    def capture(parser: argparse.ArgumentParser, caller: Mapping[str, Any]) -> Any:
        raise _ParserCaptured(parser)

    try:
        with flash_attn_stubbed():
            _run_main_once_patched(capture)
    except _ParserCaptured as captured:
        return captured.parser
    raise RuntimeError(f"{OPENRLHF_MAIN} finished without parsing its arguments")


def _one_line_error(parser: argparse.ArgumentParser) -> None:
    # OpenRLHF's usage is ~190 lines: an error about a bridge flag is one line instead.
    # Errors about OpenRLHF's own flags keep argparse's (stock) output.
    stock_error = parser.error

    def error(message: str) -> NoReturn:
        if any(prefix in message for prefix in BRIDGE_PREFIXES):
            fail(message)
        stock_error(message)

    parser.error = error  # type: ignore[method-assign]


def fail(message: str, status: int = 2) -> NoReturn:
    """Print ``<prog>: error: <message>`` (one line) to stderr and exit with ``status``."""
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(status)


def build_parser() -> argparse.ArgumentParser:
    """OpenRLHF's parser with the bridge's ``--ead.*`` / ``--e3.*`` flags added."""
    parser = openrlhf_parser()
    parser.prog = PROG
    add_bridge_arguments(parser)
    _one_line_error(parser)
    return parser


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, BridgeConfig]:
    """Parse ``argv`` with the combined parser and validate the bridge flags.

    Returns OpenRLHF's flat namespace (with the settings the bridge implies
    applied, e.g. TIS) and the resolved :class:`BridgeConfig`. A bad bridge
    value or combination exits with status 2 and one line on stderr naming
    the flag and the rule.
    """
    argv = list(argv)
    parser = build_parser()
    namespace = parser.parse_args(argv)
    try:
        config = finalize(namespace, explicit_dests(parser, argv))
    except BridgeFlagError as exc:
        fail(str(exc))
    return namespace, config


def run_openrlhf(namespace: argparse.Namespace, swaps: Sequence[tuple[Any, str, Any]] = ()) -> None:
    """Run OpenRLHF's ``train_ppo_ray`` main block on an already parsed namespace.

    ``swaps`` (the installed substitutions) are checked against the names
    OpenRLHF's module bound at import, before its ``train()`` runs: a name
    bound to OpenRLHF's own class exits with status 1 and one line.
    """

    def parsed(parser: argparse.ArgumentParser, caller: Mapping[str, Any]) -> argparse.Namespace:
        try:
            check_module_names(caller, swaps)
        except BridgeSwapError as exc:
            fail(str(exc), status=1)
        return namespace

    _run_main_once_patched(parsed)


class _StopBeforeTrain(Exception):
    pass


def check_openrlhf_args(namespace: argparse.Namespace) -> None:
    """Run OpenRLHF's post-parse checks on ``namespace`` and stop before its ``train()``.

    For a machine that cannot train (:func:`missing_for_training`): the whole
    command line is still checked as a real launch would check it; a failed
    OpenRLHF check exits with status 2 and its message on one line.
    """

    def stop(args: Any) -> NoReturn:
        raise _StopBeforeTrain

    def parsed(parser: argparse.ArgumentParser, caller: Mapping[str, Any]) -> argparse.Namespace:
        caller["train"] = stop  # type: ignore[index]  # looked up when the main block calls it
        return namespace

    try:
        with flash_attn_stubbed():
            _run_main_once_patched(parsed)
    except _StopBeforeTrain:
        return
    except AssertionError as exc:  # OpenRLHF's post-parse checks are assertions
        fail(f"OpenRLHF's argument checks refused the command line: {exc}")
    raise RuntimeError(f"{OPENRLHF_MAIN} finished without calling train()")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: parse, validate, check OpenRLHF (:mod:`.upstream`) and the machine,
    install the bridge, run OpenRLHF.

    On a machine without what training needs (flash-attn), the command line
    goes through OpenRLHF's own checks too, then the launcher exits with
    status 1 and one line naming what is missing.
    """
    namespace, config = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_openrlhf()
    except UnsupportedOpenRLHFError as exc:
        fail(str(exc), status=1)
    missing = missing_for_training()
    if missing:
        check_openrlhf_args(namespace)
        fail(
            "cannot start training on this machine: "
            + "; ".join(missing)
            + ". The command line passed OpenRLHF's and the bridge's checks.",
            status=1,
        )
    with bridge_installed(config) as swaps:
        run_openrlhf(namespace, swaps)


if __name__ == "__main__":
    main()
