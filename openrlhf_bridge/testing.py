"""Import OpenRLHF's training modules on a machine without CUDA (tests only).

``openrlhf.models.ring_attn_utils`` imports ``flash_attn`` at module level,
and flash-attn is CUDA-only (it cannot be installed here). As OpenRLHF's own
CPU tests do, :func:`import_openrlhf_training` puts stub modules for exactly
the flash-attn names OpenRLHF imports into ``sys.modules`` while importing,
then removes them: nothing of flash-attn is ever called on the paths tested
(ring attention needs CUDA; ``log_probs_from_logits`` falls back to torch on
``ImportError``). ``torch.compile`` is made a no-op during the import, so
``compute_entropy`` stays eager (compiling it takes about a minute on 2 cores).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Callable
from typing import Any

import torch

# module -> names OpenRLHF 0.11.2 imports from it
FLASH_ATTN_NAMES: dict[str, tuple[str, ...]] = {
    "flash_attn": (),
    "flash_attn.bert_padding": ("index_first_axis", "pad_input", "rearrange", "unpad_input"),
    "flash_attn.utils": (),
    "flash_attn.utils.distributed": ("all_gather",),
}

TRAINING_MODULES = (
    "openrlhf.models",
    "openrlhf.trainer.ppo_utils.experience_maker",
    "openrlhf.trainer.ray.launcher",
    "openrlhf.trainer.ray.ppo_actor",
    "openrlhf.trainer.ppo_trainer",
    "openrlhf.cli.train_ppo_ray",
)


def _unavailable(module: str, name: str) -> Callable[..., Any]:
    def stub(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{module}.{name} is a CPU test stub (flash-attn needs CUDA)")

    return stub


def import_openrlhf_training() -> None:
    """Import OpenRLHF's training modules with flash-attn stubbed (idempotent)."""
    if all(name in sys.modules for name in TRAINING_MODULES):
        return
    inserted = []
    for module, names in FLASH_ATTN_NAMES.items():
        if module in sys.modules:
            continue
        stub = types.ModuleType(module)
        stub.__spec__ = importlib.machinery.ModuleSpec(module, None)
        for name in names:
            setattr(stub, name, _unavailable(module, name))
        sys.modules[module] = stub
        inserted.append(module)
    original_compile = torch.compile
    torch.compile = lambda fn=None, **_: fn if fn is not None else (lambda f: f)
    try:
        for name in TRAINING_MODULES:
            importlib.import_module(name)
    finally:
        torch.compile = original_compile
        for module in inserted:
            del sys.modules[module]
