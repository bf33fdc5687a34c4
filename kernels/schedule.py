"""The one definition of the EAD factor ``tau_t`` that every backend uses.

``ead_tau`` is the only code that evaluates the schedule for sampling: the
torch reference, the numba kernel and the Triton kernel all receive the
per-row effective temperature ``base_temperature * ead_tau(...)`` computed
here, and never recompute it. Transcendental functions differ in their last
bits between numpy, Sleef (torch CPU), CUDA's libm and libdevice, so
computing the schedule once is the only way the backends can agree bit for
bit on the temperature.

Op order (all fp32, round-to-nearest; ``t`` is ``positions`` converted to fp32)::

    x   = min(t / decay, 60)          # IEEE fp32 division; 60 keeps exp finite
    e   = exp(x)                      # torch.exp on the positions' device
    tau = max((1 + tau_max) - e, tau_min)
    tau = 1  where positions < warmup  # compared in the inputs' own dtypes

The value of ``exp`` is torch's on the device of ``positions`` (Sleef on CPU,
CUDA's ``expf`` on GPU, both within 1-2 ulp of the true value): a CPU and a
GPU run may differ in the last bit of ``tau``, but within one run every
backend uses the same bits.
"""

from __future__ import annotations

from typing import Any

import torch

# exp(60) ~ 1.1e26: finite in fp32 and far past the point where any sane
# schedule has reached tau_min (exp(x) = 1 + tau_max - tau_min).
MAX_EXPONENT = 60.0


def _f32(value: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32, device=device)


def ead_tau(
    positions: torch.Tensor,
    *,
    tau_max: Any,
    tau_min: Any,
    decay: Any,
    warmup: Any = 0,
) -> torch.Tensor:
    """fp32 EAD factor ``tau_t`` of every row (the module docstring gives the op order).

    Args:
        positions: integer or floating tensor, usually [B], the ``t`` of each row
            (tokens generated so far, >= 0).
        tau_max, tau_min, decay: > 0; numbers or tensors broadcastable with
            ``positions`` (usually [] or [B]); converted to fp32.
        warmup: >= 0; a number or a tensor broadcastable with ``positions``.

    Returns:
        fp32 tensor of the broadcast shape, on ``positions``' device:
        1 where ``positions < warmup``, else ``max(1 + tau_max - exp(t / decay), tau_min)``.
    """
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"positions must be a torch.Tensor, got {type(positions).__name__}")
    dev = positions.device
    t = positions.to(torch.float32)
    x = torch.clamp(t / _f32(decay, dev), max=MAX_EXPONENT)
    tau = torch.maximum((1.0 + _f32(tau_max, dev)) - torch.exp(x), _f32(tau_min, dev))
    # Integer positions against an integer warm-up compare exactly (no fp32 rounding).
    w = warmup if isinstance(warmup, torch.Tensor) else torch.as_tensor(warmup, device=dev)
    if positions.is_floating_point() or w.is_floating_point():
        before = t < w.to(device=dev, dtype=torch.float32)
    else:
        before = positions < w.to(dev)
    return torch.where(before, torch.ones_like(tau), tau)


def effective_temperature(
    positions: torch.Tensor,
    *,
    tau_max: Any,
    tau_min: Any,
    decay: Any,
    warmup: Any,
    base_temperature: Any,
) -> torch.Tensor:
    """fp32 ``base_temperature * ead_tau(...)``: the temperature every backend samples at.

    One fp32 multiplication after :func:`ead_tau`; shapes broadcast as there.
    """
    tau = ead_tau(positions, tau_max=tau_max, tau_min=tau_min, decay=decay, warmup=warmup)
    return _f32(base_temperature, positions.device) * tau
