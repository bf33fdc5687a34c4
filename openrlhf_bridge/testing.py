"""Import OpenRLHF's training modules on a machine without CUDA (tests only).

flash-attn is CUDA-only (it cannot be installed here). As OpenRLHF's own CPU
tests do, :func:`import_openrlhf_training` imports the training modules with
stub modules for exactly the flash-attn names OpenRLHF imports
(:func:`openrlhf_bridge.imports.flash_attn_stubbed`), then removes them:
nothing of flash-attn is ever called on the paths tested (ring attention needs
CUDA; ``log_probs_from_logits`` falls back to torch on ``ImportError``).
``torch.compile`` is made a no-op during the import, so ``compute_entropy``
stays eager (compiling it takes about a minute on 2 cores).
"""

from __future__ import annotations

import importlib
import sys

import torch

from openrlhf_bridge.imports import flash_attn_stubbed

TRAINING_MODULES = (
    "openrlhf.models",
    "openrlhf.trainer.ppo_utils.experience_maker",
    "openrlhf.trainer.ray.launcher",
    "openrlhf.trainer.ray.ppo_actor",
    "openrlhf.trainer.ppo_trainer",
    "openrlhf.cli.train_ppo_ray",
)


def import_openrlhf_training() -> None:
    """Import OpenRLHF's training modules with flash-attn stubbed (idempotent)."""
    if all(name in sys.modules for name in TRAINING_MODULES):
        return
    original_compile = torch.compile
    torch.compile = lambda fn=None, **_: fn if fn is not None else (lambda f: f)
    try:
        with flash_attn_stubbed():
            for name in TRAINING_MODULES:
                importlib.import_module(name)
    finally:
        torch.compile = original_compile
