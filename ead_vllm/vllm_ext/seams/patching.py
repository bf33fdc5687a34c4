"""The one way ead-vllm wraps a vLLM function: :func:`wrap_once`.

The plugin's hooks run in every vLLM process and may run twice in one (a module
imported again, a test re-registering); wrapping twice would run our checks twice
and stack wrappers. The mark on the wrapper makes every install idempotent.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

_MARK = "_ead_patched"


def wrap_once(
    owner: Any, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> bool:
    """Replace ``owner.<name>`` (a class's method or a module's function) by ``wrap(original)``.

    ``wrap`` receives the plain function (a ``staticmethod``/``classmethod`` is
    unwrapped, and its wrapper re-wrapped the same way) and returns the replacement,
    which gets the original's name and docstring. Returns False, changing nothing,
    when ``owner.<name>`` is already one of our wrappers. Raises ``AttributeError``
    when ``owner`` has no ``name``.
    """
    raw = inspect.getattr_static(owner, name)
    kind = type(raw) if isinstance(raw, staticmethod | classmethod) else None
    original = raw.__func__ if kind is not None else raw
    if getattr(original, _MARK, False):
        return False
    replacement = functools.wraps(original)(wrap(original))
    setattr(replacement, _MARK, True)
    setattr(owner, name, kind(replacement) if kind is not None else replacement)
    return True


def is_wrapped(owner: Any, name: str) -> bool:
    """True when ``owner.<name>`` is a :func:`wrap_once` wrapper."""
    raw = inspect.getattr_static(owner, name, None)
    return bool(getattr(getattr(raw, "__func__", raw), _MARK, False))
