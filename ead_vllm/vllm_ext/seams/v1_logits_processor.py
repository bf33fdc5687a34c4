"""Seam: runner V1's logits-processor interface (``vllm/v1/sample/logits_processor/``).

Handles every release with runner V1 (:data:`~.versions.RUNNER_V1`: 0.24.0-0.33.0; one
shape). The EAD batch
tracker of the sampler override and the no-fork ``EADLogitsProcessor`` are V1
logits processors; they read ``BatchUpdate`` through vLLM's ``process_dict_updates``
and whether min_p is active through ``MinPLogitsProcessor.min_p_count``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ead_vllm.vllm_ext.seams.signature import Expectation, attr

INTERFACE_MODULE = "vllm.v1.sample.logits_processor.interface"
BUILTIN_MODULE = "vllm.v1.sample.logits_processor.builtin"


def process_dict_updates() -> Callable[..., Any]:
    """vLLM's ``process_dict_updates(req_entries, batch_update, new_state)``."""
    return attr(BUILTIN_MODULE, "process_dict_updates")


def min_p_processor_class() -> type:
    """vLLM's built-in ``MinPLogitsProcessor`` (its ``min_p_count`` says whether min_p is on)."""
    return attr(BUILTIN_MODULE, "MinPLogitsProcessor")


def _processor(method: str) -> Any:
    return attr(INTERFACE_MODULE, "LogitsProcessor", method)


EXPECTED: tuple[Expectation, ...] = (
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.__init__",
        lambda: _processor("__init__"),
        ("self", "vllm_config", "device", "is_pin_memory"),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.apply",
        lambda: _processor("apply"),
        ("self", "logits"),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.update_state",
        lambda: _processor("update_state"),
        ("self", "batch_update"),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.is_argmax_invariant",
        lambda: _processor("is_argmax_invariant"),
        ("self",),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.validate_params",
        lambda: _processor("validate_params"),
        ("sampling_params",),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.BatchUpdate",
        lambda: attr(INTERFACE_MODULE, "BatchUpdate"),
        ("batch_size", "removed", "added", "moved"),
        fields=True,
    ),
    Expectation(
        f"{BUILTIN_MODULE}.process_dict_updates",
        lambda: attr(BUILTIN_MODULE, "process_dict_updates"),
        ("req_entries", "batch_update", "new_state"),
    ),
    Expectation(
        f"{BUILTIN_MODULE}.MinPLogitsProcessor.__init__",
        lambda: attr(BUILTIN_MODULE, "MinPLogitsProcessor", "__init__"),
        ("self", "vllm_config", "device", "is_pin_memory"),
    ),
)
