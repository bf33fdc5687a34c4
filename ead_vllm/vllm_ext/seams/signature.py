"""Comparing a vLLM callable's parameters with the ones a seam adapter was written for."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from typing import Any


def attr(module: str, *names: str) -> Any:
    """``module.names[0].names[1]...``, importing ``module`` (raises ImportError/AttributeError)."""
    obj: Any = importlib.import_module(module)
    for name in names:
        obj = getattr(obj, name)
    return obj


@dataclasses.dataclass(frozen=True)
class Expectation:
    """``where``'s parameter names, in order, as ead-vllm calls or overrides it.

    ``get`` returns the object to inspect (it may raise ``ImportError`` or
    ``AttributeError`` when the seam is gone, which counts as a mismatch).
    ``fields=True`` compares the fields of a dataclass / NamedTuple instead.
    ``params=None`` asks only that the object exist (a method ead-vllm wraps with
    ``*args, **kwargs``, or a name it replaces).
    """

    where: str
    get: Callable[[], Any]
    params: tuple[str, ...] | None
    fields: bool = False

    def actual(self) -> tuple[str, ...] | str | None:
        """The seam's actual parameter (or field) names, or why they cannot be read
        (``None``: present, for a presence-only expectation)."""
        try:
            obj = self.get()
        except (ImportError, AttributeError) as exc:
            return f"missing ({type(exc).__name__}: {exc})"
        if self.params is None:
            return None
        if self.fields:
            return field_names(obj)
        try:
            return tuple(inspect.signature(obj).parameters)
        except (TypeError, ValueError) as exc:
            return f"unreadable ({exc})"

    def mismatch(self) -> str | None:
        """``None`` when the seam has the expected shape, else one line saying how it differs."""
        actual = self.actual()
        if actual == self.params:
            return None
        shown = actual if isinstance(actual, str) else f"({', '.join(actual or ())})"
        wanted = "present" if self.params is None else f"({', '.join(self.params)})"
        return f"{self.where} is {shown}, expected {wanted}"


def field_names(cls: Any) -> tuple[str, ...]:
    """Field names of a dataclass or NamedTuple class, in declaration order."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    fields = getattr(cls, "_fields", None)
    if fields is not None:
        return tuple(fields)
    raise TypeError(f"{cls!r} is neither a dataclass nor a NamedTuple")


def mismatches(expectations: tuple[Expectation, ...]) -> list[str]:
    """Every mismatch among ``expectations`` (empty when all seams fit)."""
    return [m for e in expectations if (m := e.mismatch()) is not None]
