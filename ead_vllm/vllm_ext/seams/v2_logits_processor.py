"""Seam: runner V2's logits-processor interface (``vllm/v1/worker/gpu/sample/logits_processor/``).

* vLLM 0.31.0 and later (:data:`~.versions.V2_LOGITS_PROCESSORS`; ``interface.py``
  identical in 0.31.0-0.34.0): the package exists: ``LogitsProcessor(vllm_config,
  req_states)``, ``add_request(idx, sp) -> bool``, ``apply_staged_writes()``,
  ``apply(logits, ctx)``, ``LogitsContext``,
  ``LogitsProcRequestState.from_request_state``. This module re-exports vLLM's.
* vLLM 0.24.0-0.30.0: the package does not exist and runner V2 ignores
  ``--logits-processors``. This module then provides stand-ins with the same
  fields, so the EAD annealing stage (which the V2 sampler override drives
  itself on these versions, see :mod:`.v2_sampler`) still imports; registering
  ``EADLogitsProcessorV2`` with ``--logits-processors`` has no effect there.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from ead_vllm.vllm_ext.seams.signature import Expectation
from ead_vllm.vllm_ext.seams.versions import V2_LOGITS_PROCESSORS, installed_release

INTERFACE_MODULE = "vllm.v1.worker.gpu.sample.logits_processor.interface"

#: True when this vLLM has runner V2's logits-processor API (0.31.0 and later).
AVAILABLE = V2_LOGITS_PROCESSORS.holds(installed_release())

if AVAILABLE:
    _interface: Any = importlib.import_module(INTERFACE_MODULE)
    LogitsContext = _interface.LogitsContext
    LogitsProcRequestState = _interface.LogitsProcRequestState
    LogitsProcessorV2 = _interface.LogitsProcessor
else:

    @dataclasses.dataclass(frozen=True)
    class LogitsContext:  # type: ignore[no-redef]
        """Stand-in for vLLM >= 0.31's ``LogitsContext`` (same fields, same meaning)."""

        expanded_idx_mapping: Any
        idx_mapping: Any
        idx_mapping_np: Any
        expanded_local_pos: Any
        input_ids: Any
        pos: Any
        # runner V2 of vLLM 0.24-0.30 does not compute it
        seq_lens_upper_bound_np: Any = None

    class LogitsProcRequestState:  # type: ignore[no-redef]
        """Stand-in: on vLLM 0.24-0.30 processors read runner V2's ``RequestState`` itself.

        ``RequestState`` there already has the fields the EAD stage reads
        (``max_num_reqs``, ``prompt_len``).
        """

        @classmethod
        def from_request_state(cls, req_states: Any) -> Any:
            return req_states

    class LogitsProcessorV2:  # type: ignore[no-redef]
        """Stand-in base class for vLLM 0.24-0.30, which have no V2 logits-processor API."""

        def __init__(self, vllm_config: Any, req_states: Any) -> None:
            pass

        @classmethod
        def validate_params(cls, sampling_params: Any) -> None:
            return None

        def add_request(self, req_idx: int, sampling_params: Any) -> bool:
            return False

        def apply_staged_writes(self) -> None:
            return None

        def apply(self, logits: Any, ctx: Any) -> Any:
            return logits


BUFFERS_MODULE = "vllm.v1.worker.gpu.buffer_utils"


def uva_backed_tensor() -> Any:
    """Runner V2's ``UvaBackedTensor(size, dtype)`` class: a host array (``.np``) with a
    device view (``.gpu``), copied by ``copy_to_uva()``."""
    return importlib.import_module(BUFFERS_MODULE).UvaBackedTensor


def request_state_view(req_states: Any) -> Any:
    """What a V2 logits processor is built with, from runner V2's ``RequestState``."""
    return LogitsProcRequestState.from_request_state(req_states)


def _processor(method: str) -> Any:
    return getattr(importlib.import_module(INTERFACE_MODULE).LogitsProcessor, method)


#: Every release: the per-slot buffers of the EAD stage.
BUFFERS_EXPECTED = Expectation(
    f"{BUFFERS_MODULE}.UvaBackedTensor.__init__",
    lambda: uva_backed_tensor().__init__,
    ("self", "size", "dtype", "max_concurrency"),
)

#: Checked only where :data:`AVAILABLE` (the package's absence is itself a known shape).
EXPECTED: tuple[Expectation, ...] = (
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.__init__",
        lambda: _processor("__init__"),
        ("self", "vllm_config", "req_states"),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.add_request",
        lambda: _processor("add_request"),
        ("self", "req_idx", "sampling_params"),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.apply_staged_writes",
        lambda: _processor("apply_staged_writes"),
        ("self",),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcessor.apply",
        lambda: _processor("apply"),
        ("self", "logits", "ctx"),
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsContext",
        lambda: importlib.import_module(INTERFACE_MODULE).LogitsContext,
        (
            "expanded_idx_mapping",
            "idx_mapping",
            "idx_mapping_np",
            "expanded_local_pos",
            "input_ids",
            "pos",
            "seq_lens_upper_bound_np",
        ),
        fields=True,
    ),
    Expectation(
        f"{INTERFACE_MODULE}.LogitsProcRequestState.from_request_state",
        lambda: importlib.import_module(INTERFACE_MODULE).LogitsProcRequestState.from_request_state,
        ("req_states",),
    ),
)


def expected(version: str) -> tuple[Expectation, ...]:
    """The expectations for vLLM ``version`` (a release such as ``"0.32.0"``).

    Versions before 0.31 have no interface to check (only the buffers); on later ones
    a missing package is a mismatch like any other.
    """
    if V2_LOGITS_PROCESSORS.holds(version):
        return (BUFFERS_EXPECTED, *EXPECTED)
    return (BUFFERS_EXPECTED,)
