"""Plain torch reference of the fused EAD sampler: the oracle of every test.

Readable rather than fast: it materialises the softmax, the log-softmaxes and
the [B, V] noise. The kernels in ``cpu_sampler`` and ``triton_sampler`` compute
the same quantities in one pass. Like them, it takes the effective temperature
from ``ead_sample`` (``schedule.ead_tau``) instead of evaluating the schedule.
"""

from __future__ import annotations

import torch
from ead_vllm.kernels.noise import race_times

SampleTensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def degenerate_rows(x: torch.Tensor) -> torch.Tensor:
    """[B] bool: rows with a NaN or +inf, or with every entry -inf."""
    return torch.isnan(x).any(-1) | torch.isposinf(x).any(-1) | torch.isneginf(x).all(-1)


def ead_sample_reference(
    logits: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    temperatures: torch.Tensor,
    base_temperature: torch.Tensor,
    *,
    need_base: bool = True,
    need_entropy: bool = True,
) -> SampleTensors:
    """Reference EAD sample of every row; inputs already validated by ``ead_sample``.

    ``logits`` [B, V] (any float dtype, upcast to fp32); ``positions``, ``seeds``
    int64 [B] (the noise key); ``temperatures`` fp32 [B], the effective
    temperature ``base_temperature * ead_tau(...)`` computed once by
    ``ead_sample``; ``base_temperature`` fp32 [B]. Returns (token_ids int64,
    logprobs, base_logprobs or None, entropy or None), fp32; the optional ones
    are None when ``need_base`` / ``need_entropy`` is False.
    """
    x = logits.to(torch.float32)
    temperature = temperatures.to(torch.float32)
    logp = torch.log_softmax(x / temperature[:, None], dim=-1)
    p = logp.exp()

    # Exponential race: argmax p_i / E_i with E_i ~ Exp(1) from the shared hash.
    times = race_times(seeds, positions, x.shape[-1], device=x.device)
    token_ids = torch.argmax(p / times, dim=-1)
    logprobs = logp.gather(-1, token_ids[:, None]).squeeze(-1)

    bad = degenerate_rows(x)
    nan = torch.full_like(logprobs, float("nan"))
    token_ids = torch.where(bad, torch.zeros_like(token_ids), token_ids)
    logprobs = torch.where(bad, nan, logprobs)
    base_logprobs = entropy = None
    if need_base:
        base = base_temperature.to(torch.float32)
        base_logp = torch.log_softmax(x / base[:, None], dim=-1)
        base_logprobs = base_logp.gather(-1, token_ids[:, None]).squeeze(-1)
        base_logprobs = torch.where(bad, nan, base_logprobs)
    if need_entropy:
        entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
        entropy = torch.where(bad, nan, entropy)
    return token_ids, logprobs, base_logprobs, entropy
