"""min_p, top-k and top-p for EAD rows, at the row's effective temperature.

vLLM applies these after its temperature division (runner V1: temperature,
then argmax-invariant processors such as min_p, then top-k/top-p; runner V2:
temperature, min_p, top-k/top-p), so whether a token survives top-p or min_p
depends on the temperature. An EAD row is sampled at ``T * tau_t``; its masks
are computed on ``logits / (T * tau_t)`` exactly as vLLM would compute them
there, and then written back as ``-inf`` into the *unscaled* logits that the
fused kernel reads. The kernel divides by the same temperature itself, so a
row's kept tokens carry the same bits whether or not it has a mask, and its
sampled distribution (and log-prob) is the one vLLM's pipeline defines,
renormalised over the kept tokens.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p


def min_p_mask_(scaled: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf, in place, the entries whose probability is below ``min_p`` x the row's top one.

    ``scaled`` [N, V] fp32 logits already divided by the temperature; ``min_p``
    [N] fp32 (0 leaves a row unchanged). vLLM's definition (V1
    ``MinPLogitsProcessor`` and V2 ``apply_min_p``): keep token i iff
    ``p_i >= min_p * max_j p_j`` with ``p = softmax(scaled)``.
    """
    probs = torch.softmax(scaled, dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True).mul_(min_p.to(probs.dtype).unsqueeze(1))
    return scaled.masked_fill_(probs < threshold, float("-inf"))


def mask_ead_rows_(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    *,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    min_p: torch.Tensor | None,
) -> torch.Tensor:
    """Apply min_p, then top-k/top-p, at ``temperature``, to ``logits`` in place.

    ``logits`` [N, V] fp32 (processed, unscaled) rows of EAD requests;
    ``temperature`` [N] fp32, the effective ``T * tau_t`` of each row;
    ``top_k`` [N] integer (V or 0 = off), ``top_p`` [N] fp32 (1 = off),
    ``min_p`` [N] fp32 (0 = off), each optional. Returns ``logits`` with the
    removed tokens set to -inf; the kept entries are untouched (not scaled).
    One temporary [N, V] tensor (the scaled copy) is used; call it only on the
    rows that have a mask.
    """
    scaled = logits / temperature.to(logits.dtype).unsqueeze(1)
    if min_p is not None:
        min_p_mask_(scaled, min_p)
    scaled = apply_top_k_top_p(scaled, top_k, top_p)
    return logits.masked_fill_(torch.isneginf(scaled), float("-inf"))
