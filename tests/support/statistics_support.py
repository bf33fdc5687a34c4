"""Shared statistics of the sampling tests (not a test module).

Statistical tests use fixed seeds and alpha = 1e-3: a correct sampler fails one of
them with probability 1e-3, and with fixed seeds the outcome is fixed.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from ead_vllm.schedules import ead_temperature

ALPHA = 1e-3

# Positions 3 (< warmup 10): T = base; 40: mid-anneal (tau 1.28); 10**6: at the floor (0.4).
PHASES = {"warmup": 3, "mid_anneal": 40, "floor": 10**6}
SCHEDULE = dict(tau_max=1.5, tau_min=0.4, decay=200.0, warmup=10, base_temperature=0.9)


def phase_temperature(position: int) -> float:
    """The effective temperature ``T * tau_t`` of :data:`SCHEDULE` at ``position``."""
    kw = {k: v for k, v in SCHEDULE.items() if k != "base_temperature"}
    return SCHEDULE["base_temperature"] * ead_temperature(float(position), **kw)


def phase_logits(position: int, vocab: int) -> torch.Tensor:
    """Logits [vocab] fp32 whose annealed distribution at ``position`` is
    softmax(0, .35, .7, ...): every bin keeps a healthy expected count, and a wrong
    temperature shows."""
    return torch.arange(vocab, dtype=torch.float32) * 0.35 * phase_temperature(position)


def chi_square_pvalue(tokens: torch.Tensor, logits: torch.Tensor, temperature: float) -> float:
    """Chi-square p-value of sampled ``tokens`` [N] int64 against
    ``softmax(logits / temperature)`` (every expected count must be >= 5)."""
    vocab = logits.shape[-1]
    p = torch.softmax(logits.double() / temperature, -1).numpy()
    counts = np.bincount(tokens.numpy(), minlength=vocab)
    assert counts.sum() == tokens.numel() and (p * tokens.numel() >= 5).all()
    return stats.chisquare(counts, p * tokens.numel()).pvalue
