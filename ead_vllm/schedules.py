"""EAD temperature schedule and its training-step-aware decay.

Paper units throughout: ``tau_t = max(1 + tau_max - exp(t / decay), tau_min)``
with ``t`` the number of tokens the request has generated so far (prompt
excluded) and ``decay`` in tokens. The authors' released code divides by
``20 * d_s`` instead; use :meth:`ead_vllm.params.EADParams.reference_recipe`
to reproduce it, never a hidden factor here.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np
import torch

from ead_vllm.kernels.schedule import MAX_EXPONENT as _MAX_EXPONENT
from ead_vllm.kernels.schedule import ead_tau

T = TypeVar("T", float, np.ndarray, torch.Tensor)


def _torch_schedule(
    t: torch.Tensor, tau_max: Any, tau_min: Any, decay: Any, warmup: Any
) -> torch.Tensor:
    out_dtype = t.dtype if t.is_floating_point() else torch.float32
    if out_dtype != torch.float64:
        # fp32 (and half types, which overflow at 65504: t up to 1e12 must work)
        # goes through the one definition the sampling kernels use, bit for bit.
        tau = ead_tau(t, tau_max=tau_max, tau_min=tau_min, decay=decay, warmup=warmup)
        return tau.to(out_dtype)
    tt = t.to(torch.float64)

    def _as(x: Any) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float64, device=t.device)

    x = torch.clamp(tt / _as(decay), max=_MAX_EXPONENT)
    tau = torch.maximum(1.0 + _as(tau_max) - torch.exp(x), _as(tau_min))
    return torch.where(tt < _as(warmup), torch.ones_like(tau), tau)


def ead_temperature(
    t: T,
    *,
    tau_max: Any,
    tau_min: Any,
    decay: Any,
    warmup: Any = 0,
) -> T:
    """Annealed temperature multiplier for generated-token position ``t``.

    ``t`` is a float/int, a numpy array or a torch tensor of positions (>= 0);
    the parameters are scalars or arrays/tensors broadcastable with ``t`` (for
    example ``[B]`` parameters against ``[B]`` positions, one set per row).
    Returns the same kind as ``t`` (a float for a scalar ``t`` and scalar
    parameters; a tensor keeps ``t``'s floating dtype, integer ``t`` gives
    float32): 1.0 where ``t < warmup``, else
    ``max(1 + tau_max - exp(t / decay), tau_min)``. Never overflows nor gives
    NaN for valid parameters (see :class:`ead_vllm.params.EADParams`): huge
    ``t`` gives ``tau_min``.
    """
    if isinstance(t, torch.Tensor):
        return _torch_schedule(t, tau_max, tau_min, decay, warmup)

    tt = np.asarray(t, dtype=np.float64)
    x = np.minimum(tt / np.asarray(decay, dtype=np.float64), _MAX_EXPONENT)
    tau = np.maximum(
        1.0 + np.asarray(tau_max, dtype=np.float64) - np.exp(x),
        np.asarray(tau_min, dtype=np.float64),
    )
    out = np.where(tt < np.asarray(warmup, dtype=np.float64), 1.0, tau)
    if out.ndim == 0 and not isinstance(t, np.ndarray):
        return float(out)
    return out


def decay_at_step(step: float, *, d0: float, growth: float = 5.0, d_max: float = 40000.0) -> float:
    """Training-step-aware decay ``d_s = min(d0 + growth * step, d_max)``.

    ``step`` is the (global) training step, >= 0; the result is in the units
    of ``d0`` (tokens for the paper's formula). The paper prints growth 5 and
    d_max 40000; the authors' code applies them in its own units, before its
    x20 factor (see :meth:`ead_vllm.params.EADParams.reference_recipe`).
    """
    for name, value in (("step", step), ("d0", d0), ("growth", growth), ("d_max", d_max)):
        if isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    if d0 <= 0 or d_max <= 0:
        raise ValueError(f"d0 and d_max must be > 0, got d0={d0!r}, d_max={d_max!r}")
    if growth < 0:
        raise ValueError(f"growth must be >= 0, got {growth!r}")
    return float(min(d0 + growth * step, d_max))
