"""What OpenRLHF's training code needs from this machine, and importing it where that is absent.

OpenRLHF 0.11.2's ``openrlhf.models.ring_attn_utils`` imports ``flash_attn`` at
module level, and ``openrlhf.cli.train_ppo_ray`` (which builds the parser the
launcher extends) imports the models. flash-attn builds only with CUDA, so on
a laptop the parser could not even be built. :func:`flash_attn_stubbed` puts
stub modules for exactly the flash-attn names OpenRLHF imports into
``sys.modules`` while importing (nothing of them is called to build a parser
or check flags), and :func:`missing_for_training` says what a real launch
would lack, so that the launcher stops with that message instead of starting
Ray with stubbed modules.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

# module -> names OpenRLHF 0.11.2 imports from it
FLASH_ATTN_NAMES: dict[str, tuple[str, ...]] = {
    "flash_attn": (),
    "flash_attn.bert_padding": ("index_first_axis", "pad_input", "rearrange", "unpad_input"),
    "flash_attn.utils": (),
    "flash_attn.utils.distributed": ("all_gather",),
}
_STUB_MARK = "__openrlhf_bridge_stub__"


def _unavailable(module: str, name: str) -> Callable[..., Any]:
    def stub(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{module}.{name} is a stub: flash-attn is not installed (it needs CUDA)"
        )

    return stub


def is_stub(module: Any) -> bool:
    """True for a module object made by :func:`flash_attn_stubbed`."""
    return bool(getattr(module, _STUB_MARK, False))


def flash_attn_installed() -> bool:
    """True when the real ``flash_attn`` package can be imported (a stub does not count)."""
    loaded = sys.modules.get("flash_attn")
    if loaded is not None:
        return not is_stub(loaded)
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def flash_attn_stubbed() -> Iterator[list[str]]:
    """Inside the block, the flash-attn modules OpenRLHF imports exist (as stubs) if missing.

    Yields the names stubbed (empty when flash-attn is installed: nothing
    changes then). The stubs leave ``sys.modules`` at the end; modules that
    imported them keep their references, which is why a process that needed
    the stubs must not train (:func:`missing_for_training`).
    """
    inserted: list[str] = []
    if not flash_attn_installed():
        for module, names in FLASH_ATTN_NAMES.items():
            if module in sys.modules:
                continue
            stub = types.ModuleType(module)
            stub.__spec__ = importlib.machinery.ModuleSpec(module, None)
            setattr(stub, _STUB_MARK, True)
            for name in names:
                setattr(stub, name, _unavailable(module, name))
            sys.modules[module] = stub
            inserted.append(module)
    try:
        yield inserted
    finally:
        for module in inserted:
            sys.modules.pop(module, None)


def cuda_available() -> bool:
    """True when torch sees a CUDA device on this machine."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def missing_for_training() -> list[str]:
    """One sentence per requirement of a real ``train_ppo_ray`` launch that this machine lacks.

    flash-attn is required (OpenRLHF's model code imports it at module level,
    in the driver and in every model worker). Without CUDA flash-attn cannot
    be installed; the missing CUDA device is named as its reason.
    """
    missing = []
    if not flash_attn_installed():
        reason = "OpenRLHF's model code (openrlhf.models) imports it at module level"
        if not cuda_available():
            reason += "; it builds only with CUDA, and torch sees no CUDA device here"
        missing.append(f"flash-attn (module flash_attn) is not installed: {reason}")
    return missing
