"""Plain torch reference of the fused EAD sampler: the oracle of every test.

Readable rather than fast: it materialises the softmax, the log-softmaxes and
the [B, V] noise. The kernels in ``cpu_sampler`` and ``triton_sampler`` compute
the same quantities in one pass.
"""

from __future__ import annotations

import torch
from ead_vllm.kernels.noise import race_times

from ead_vllm.schedules import ead_temperature

SampleTensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def effective_temperature(
    positions: torch.Tensor,
    tau_max: torch.Tensor,
    tau_min: torch.Tensor,
    decay: torch.Tensor,
    warmup: torch.Tensor,
    base_temperature: torch.Tensor,
) -> torch.Tensor:
    """[B] fp32 ``base_temperature * tau_t``, all arithmetic in fp32.

    The kernels repeat exactly these fp32 steps (``t / decay`` clamped at 60,
    ``(1 + tau_max) - exp(.)``, max with ``tau_min``, 1 before warm-up), so the
    backends agree up to the last-bit differences of their ``exp``.
    """
    tau = ead_temperature(
        positions.to(torch.float32),
        tau_max=tau_max.to(torch.float32),
        tau_min=tau_min.to(torch.float32),
        decay=decay.to(torch.float32),
        warmup=warmup.to(torch.float32),
    )
    return base_temperature.to(torch.float32) * tau


def degenerate_rows(x: torch.Tensor) -> torch.Tensor:
    """[B] bool: rows with a NaN or +inf, or with every entry -inf."""
    return torch.isnan(x).any(-1) | torch.isposinf(x).any(-1) | torch.isneginf(x).all(-1)


def ead_sample_reference(
    logits: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    tau_max: torch.Tensor,
    tau_min: torch.Tensor,
    decay: torch.Tensor,
    warmup: torch.Tensor,
    base_temperature: torch.Tensor,
) -> SampleTensors:
    """Reference EAD sample of every row; inputs already validated by ``ead_sample``.

    ``logits`` [B, V] (any float dtype, upcast to fp32); the other arguments are
    [B] tensors (``positions``, ``seeds``, ``warmup`` int64, the rest fp32).
    Returns (token_ids int64, logprobs, base_logprobs, temperatures, entropy), fp32.
    """
    x = logits.to(torch.float32)
    temperature = effective_temperature(
        positions, tau_max, tau_min, decay, warmup, base_temperature
    )
    base = base_temperature.to(torch.float32)

    logp = torch.log_softmax(x / temperature[:, None], dim=-1)
    base_logp = torch.log_softmax(x / base[:, None], dim=-1)
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)

    # Exponential race: argmax p_i / E_i with E_i ~ Exp(1) from the shared hash.
    times = race_times(seeds, positions, x.shape[-1], device=x.device)
    token_ids = torch.argmax(p / times, dim=-1)

    logprobs = logp.gather(-1, token_ids[:, None]).squeeze(-1)
    base_logprobs = base_logp.gather(-1, token_ids[:, None]).squeeze(-1)

    bad = degenerate_rows(x)
    nan = torch.full_like(logprobs, float("nan"))
    token_ids = torch.where(bad, torch.zeros_like(token_ids), token_ids)
    logprobs = torch.where(bad, nan, logprobs)
    base_logprobs = torch.where(bad, nan, base_logprobs)
    entropy = torch.where(bad, nan, entropy)
    return token_ids, logprobs, base_logprobs, temperature, entropy
