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

T = TypeVar("T", float, np.ndarray, torch.Tensor)

# exp() of this is ~1.1e26: finite in fp32, and far past the point where any
# sane schedule has reached tau_min (that happens at exp(x) = 1 + tau_max - tau_min).
_MAX_EXPONENT = 60.0


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
    the parameters are scalars or arrays/tensors broadcastable with ``t``.
    Returns the same kind as ``t`` (a float for a scalar ``t``): 1.0 where
    ``t < warmup``, else ``max(1 + tau_max - exp(t / decay), tau_min)``.
    Never overflows: huge ``t`` gives ``tau_min``.
    """
    if isinstance(t, torch.Tensor):
        dtype = t.dtype if t.is_floating_point() else torch.float32
        tt = t.to(dtype)

        def _as(x: Any) -> torch.Tensor:
            return torch.as_tensor(x, dtype=dtype, device=t.device)

        x = torch.clamp(tt / _as(decay), max=_MAX_EXPONENT)
        tau = torch.maximum(1.0 + _as(tau_max) - torch.exp(x), _as(tau_min))
        return torch.where(tt < _as(warmup), torch.ones_like(tau), tau)

    scalar = np.ndim(t) == 0 and not isinstance(t, np.ndarray)
    tt = np.asarray(t, dtype=np.float64)
    x = np.minimum(tt / np.asarray(decay, dtype=np.float64), _MAX_EXPONENT)
    tau = np.maximum(1.0 + np.asarray(tau_max, dtype=np.float64) - np.exp(x), tau_min)
    out = np.where(tt < np.asarray(warmup, dtype=np.float64), 1.0, tau)
    return float(out) if scalar else out


def decay_at_step(step: float, *, d0: float, growth: float = 5.0, d_max: float = 40000.0) -> float:
    """Training-step-aware decay ``d_s = min(d0 + growth * step, d_max)`` in tokens.

    ``step`` is the (global) training step, >= 0. The paper uses growth 5 and
    d_max 40000.
    """
    if step < 0 or not math.isfinite(step):
        raise ValueError(f"step must be a finite number >= 0, got {step!r}")
    return float(min(d0 + growth * step, d_max))
