"""EAD schedule: tau_t = max(1 + tau_max - exp(t / d), tau_min), d_s = min(d0 + k s, d_max)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ead_vllm.schedules import decay_at_step, ead_temperature

P = {"tau_max": 1.2, "tau_min": 0.1, "decay": 500.0}


def by_hand(t: float, tau_max: float, tau_min: float, decay: float, warmup: float = 0) -> float:
    if t < warmup:
        return 1.0
    return max(1.0 + tau_max - math.exp(t / decay), tau_min)


def test_scalar_values_follow_the_formula():
    assert ead_temperature(0, **P) == pytest.approx(1.2)
    assert ead_temperature(100, **P) == pytest.approx(2.2 - math.exp(0.2))
    assert ead_temperature(300.0, **P) == pytest.approx(2.2 - math.exp(0.6))
    # exp(t/d) = 2.1 reaches tau_min
    assert ead_temperature(500 * math.log(2.1) + 1, **P) == pytest.approx(0.1)
    assert isinstance(ead_temperature(7, **P), float)
    # decay is in tokens: doubling it stretches the curve by two
    assert ead_temperature(200, tau_max=1.2, tau_min=0.1, decay=1000.0) == pytest.approx(
        ead_temperature(100, **P)
    )


def test_warmup_gives_one_then_the_schedule_at_the_absolute_position():
    assert ead_temperature(0, **P, warmup=10) == 1.0
    assert ead_temperature(9, **P, warmup=10) == 1.0
    # after the warm-up t is not shifted (the authors' code uses the full length)
    assert ead_temperature(10, **P, warmup=10) == pytest.approx(2.2 - math.exp(10 / 500))


def test_numpy_and_torch_agree_with_the_scalar_formula():
    t = np.array([0, 5, 50, 300, 800, 10_000])
    expected = np.array([by_hand(x, 1.2, 0.1, 500.0, 6) for x in t])
    out_np = ead_temperature(t, **P, warmup=6)
    assert isinstance(out_np, np.ndarray)
    np.testing.assert_allclose(out_np, expected, rtol=1e-12)
    for dtype in (torch.float64, torch.float32, torch.int64):
        out = ead_temperature(torch.as_tensor(t, dtype=dtype), **P, warmup=6)
        assert isinstance(out, torch.Tensor)
        assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-6)


def test_parameters_broadcast_per_row():
    t = torch.tensor([0, 100, 100, 20])
    tau_max = torch.tensor([1.2, 1.5, 1.2, 1.0])
    tau_min = torch.tensor([0.1, 0.2, 0.3, 0.1])
    decay = torch.tensor([500.0, 500.0, 50.0, 500.0])
    warmup = torch.tensor([0, 0, 0, 30])
    out = ead_temperature(t, tau_max=tau_max, tau_min=tau_min, decay=decay, warmup=warmup)
    rows = zip(t.tolist(), tau_max, tau_min, decay, warmup.tolist(), strict=True)
    expected = [by_hand(a, float(b), float(c), float(d), e) for a, b, c, d, e in rows]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    # [B, T] positions against [B, 1] parameters
    grid = np.arange(6)[None, :] * np.array([[10], [400]])
    out2 = ead_temperature(grid, tau_max=1.2, tau_min=np.array([[0.1], [0.5]]), decay=500.0)
    assert out2.shape == (2, 6)
    assert out2[1, -1] == pytest.approx(max(2.2 - math.exp(4.0), 0.5))
    # scalar t against per-row parameters gives an array, not a crash
    assert ead_temperature(0, tau_max=np.array([1.2, 1.5]), tau_min=0.1, decay=500.0).shape == (2,)


@pytest.mark.parametrize(
    "t",
    [
        1e12,
        np.array([0.0, 1e6, 1e9, 1e12]),
        torch.tensor([0.0, 1e6, 1e12]),
        torch.tensor([0, 10**12], dtype=torch.int64),
        torch.tensor([0.0, 6e4], dtype=torch.float16),
        torch.tensor([0.0, 1e12], dtype=torch.bfloat16),
    ],
)
def test_huge_positions_give_tau_min_without_overflow_or_nan(t):
    out = ead_temperature(t, tau_max=1.2, tau_min=0.1, decay=1.0, warmup=0)
    arr = np.asarray(out.float() if isinstance(out, torch.Tensor) else out, dtype=np.float64)
    assert np.all(np.isfinite(arr))
    assert arr.reshape(-1)[-1] == pytest.approx(0.1, rel=1e-2)


def test_tiny_decay_does_not_overflow_at_t_zero_and_one():
    out = ead_temperature(np.array([0.0, 1.0]), tau_max=1.2, tau_min=0.1, decay=1e-9)
    np.testing.assert_allclose(out, [1.2, 0.1])


@settings(max_examples=150, deadline=None)
@given(
    t=st.floats(0, 1e12, allow_nan=False),
    tau_max=st.floats(0.05, 5.0),
    frac=st.floats(0.001, 1.0),
    decay=st.floats(1e-3, 1e7),
    warmup=st.integers(0, 50),
)
def test_matches_the_formula_everywhere(t, tau_max, frac, decay, warmup):
    tau_min = tau_max * frac
    got = ead_temperature(t, tau_max=tau_max, tau_min=tau_min, decay=decay, warmup=warmup)
    x = t / decay
    ref = 1.0 if t < warmup else (tau_min if x > 700 else by_hand(t, tau_max, tau_min, decay))
    assert math.isfinite(got)
    assert got == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert got >= min(tau_min, 1.0)


@settings(max_examples=60, deadline=None)
@given(tau_max=st.floats(0.5, 3.0), decay=st.floats(1.0, 1e5), warmup=st.integers(0, 20))
def test_non_increasing_after_the_warmup(tau_max, decay, warmup):
    t = np.linspace(warmup, warmup + 20 * decay, 257)
    tau = ead_temperature(t, tau_max=tau_max, tau_min=0.05, decay=decay, warmup=warmup)
    assert np.all(np.diff(tau) <= 1e-12)
    assert tau[0] <= tau_max + 1e-12


def test_decay_at_step():
    assert decay_at_step(0, d0=25) == 25.0
    assert decay_at_step(10, d0=25) == 75.0
    assert decay_at_step(3, d0=500.0, growth=100.0) == 800.0
    assert decay_at_step(10_000, d0=25) == 40000.0
    assert decay_at_step(10**9, d0=25, d_max=123.0) == 123.0
    assert isinstance(decay_at_step(1, d0=25), float)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"step": -1, "d0": 25},
        {"step": float("nan"), "d0": 25},
        {"step": 1, "d0": 0},
        {"step": 1, "d0": 25, "growth": -1.0},
        {"step": 1, "d0": 25, "d_max": float("inf")},
    ],
)
def test_decay_at_step_rejects_bad_arguments(kwargs):
    step = kwargs.pop("step")
    with pytest.raises(ValueError):
        decay_at_step(step, **kwargs)


def test_fp32_torch_schedule_is_the_kernels_ead_tau_bit_for_bit():
    from ead_vllm.kernels import ead_tau

    t = torch.tensor([0, 3, 9, 10, 57, 400, 2000, 10**6, 10**12])
    kw = dict(tau_max=torch.full((9,), 1.7), tau_min=0.2, decay=torch.full((9,), 333.0))
    want = ead_tau(t, **kw, warmup=10)
    assert want.dtype == torch.float32
    for x in (t, t.to(torch.float32)):
        got = ead_temperature(x, **kw, warmup=10)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    half = ead_temperature(t.to(torch.float32).to(torch.bfloat16), **kw, warmup=10)
    assert half.dtype == torch.bfloat16
    # fp64 keeps its own fp64 evaluation (not the kernels' fp32 one).
    assert ead_temperature(t.double(), **kw, warmup=10).dtype == torch.float64
