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


def torch_padding_helpers() -> dict[str, object]:
    """flash-attn's padding helpers that OpenRLHF's packing uses, in plain torch (CPU only).

    ``flash_attn.bert_padding`` is plain torch, but flash-attn cannot be installed
    without CUDA. Returns the replacements for ``openrlhf.models.ring_attn_utils``'s
    names ``unpad_input``, ``index_first_axis``, ``pad_input`` and ``rearrange``, with
    flash-attn's semantics (``unpad_input`` -> (flat tokens, indices, cu_seqlens,
    max_seqlen, seqlens); ``pad_input`` the inverse).
    """
    import einops

    def unpad_input(hidden: torch.Tensor, attention_mask: torch.Tensor):
        seqlens = attention_mask.sum(dim=-1, dtype=torch.int32)
        indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()
        cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens, 0, dtype=torch.int32), (1, 0))
        flat = einops.rearrange(hidden, "b s ... -> (b s) ...")
        return flat[indices], indices, cu_seqlens, int(seqlens.max()), seqlens

    def pad_input(hidden: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int):
        out = torch.zeros(batch * seqlen, *hidden.shape[1:], dtype=hidden.dtype)
        out[indices] = hidden
        return einops.rearrange(out, "(b s) ... -> b s ...", b=batch)

    return {
        "unpad_input": unpad_input,
        "index_first_axis": lambda x, indices: x[indices],
        "pad_input": pad_input,
        "rearrange": einops.rearrange,
    }


# A minimal GRPO command line for OpenRLHF's parser (tests of the launcher and flags).
GRPO_ARGS: tuple[str, ...] = (
    "--actor.model_name_or_path", "some/model",
    "--reward.remote_url", "reward.py",
    "--vllm.num_engines", "1",
    "--algo.advantage.estimator", "group_norm",
    "--rollout.n_samples_per_prompt", "4",
)  # fmt: skip
