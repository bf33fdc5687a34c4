"""Proof that the bridge's classes are the ones OpenRLHF actually instantiated.

The bridge swaps OpenRLHF classes by name while OpenRLHF's CLI runs
(:mod:`openrlhf_bridge.install`); an import through another path would
leave a stock class in place and the run would silently be partly stock.
Three checks, each raising :class:`BridgeSwapError` with a message naming
the class found and the one expected:

* the launcher, when OpenRLHF's main block calls ``parse_args`` (its
  module-level imports are done): the names ``train()`` will use
  (:func:`check_module_names`);
* the bridge's trainer, at its first step: the rollout generator and
  experience maker it holds (:func:`check_instance`), and the class of every
  rollout engine, policy and reference worker behind the Ray handles
  (:func:`check_handles`, by the ``bridge_role`` method only the bridge's
  actor classes have);
* the bridge's policy worker, at its first experience-making forward: that
  the bridge's trainer announced itself (a stock trainer never does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ROLE_METHOD = "bridge_role"
ROLLOUT, POLICY, REFERENCE = "rollout engine", "policy worker", "reference worker"


class BridgeSwapError(RuntimeError):
    """An OpenRLHF class that the bridge replaces was instantiated as OpenRLHF's own."""


def _describe(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def check_module_names(namespace: Mapping[str, Any], swaps: Iterable[tuple[Any, str, Any]]) -> None:
    """Every swapped name that ``namespace`` (a module's globals) binds is the bridge's object.

    ``swaps`` are the (module, name, replacement) of
    :func:`openrlhf_bridge.install.substitutions`. A name ``namespace`` does
    not bind is not checked here (OpenRLHF imports ``PPOTrainer`` inside
    ``train()``; the first-step checks cover it).
    """
    wrong = [
        f"{name} is {_name_of(namespace[name])}, expected {_name_of(replacement)}"
        for _, name, replacement in swaps
        if name in namespace and namespace[name] is not replacement
    ]
    if wrong:
        raise BridgeSwapError(
            "OpenRLHF's train_ppo_ray bound its own classes, not the bridge's: "
            + "; ".join(wrong)
            + " (it imported them through a path the bridge does not patch)"
        )


def _name_of(obj: Any) -> str:
    inner = getattr(obj, "__ray_actor_class__", None)  # a Ray actor class wraps the real one
    if inner is not None:
        return _describe(inner)
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def check_instance(what: str, obj: Any, expected: type) -> None:
    """``obj`` (what the trainer holds as ``what``) is an instance of the bridge's ``expected``."""
    if not isinstance(obj, expected):
        raise BridgeSwapError(
            f"the {what} is {_describe(obj)}, not the bridge's {_describe(expected)}: "
            "OpenRLHF replaced it after the bridge's trainer set it up"
        )


def check_handles(role: str, handles: Sequence[Any]) -> None:
    """Every Ray actor handle in ``handles`` is one of the bridge's actor classes.

    The bridge's actor classes have a ``bridge_role`` method; a Ray handle
    exposes exactly its class's methods as attributes, so a handle of
    OpenRLHF's own class has none (no remote call is needed to tell).
    """
    stock = [i for i, h in enumerate(handles) if not hasattr(h, ROLE_METHOD)]
    if stock:
        raise BridgeSwapError(
            f"{len(stock)} of {len(handles)} {role}(s) run OpenRLHF's own class, not the "
            f"bridge's (OpenRLHF created them through a path the bridge does not patch)"
        )


TRAINER_MISSING = (
    "this bridge policy worker was asked for log-probs by a trainer that is not the bridge's "
    "EADPPOTrainer (OpenRLHF's own PPOTrainer was instantiated: it imported the class through "
    "a path the bridge does not patch), so EAD/E3 would silently be off"
)
