"""The shared noise and the torch reference sampler, checked by hand.

Statistical tests use :mod:`statistics_support` (fixed seeds, alpha = 1e-3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ead_vllm.kernels import ead_sample, noise
from ead_vllm.kernels.schedule import effective_temperature
from scipy import stats
from statistics_support import (
    ALPHA,
    PHASES,
    SCHEDULE,
    chi_square_pvalue,
    phase_logits,
    phase_temperature,
)

from ead_vllm.schedules import ead_temperature

M32 = 0xFFFFFFFF


def _mix32_py(x: int) -> int:
    """noise.mix32 written with Python ints, independent of numpy and torch."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & M32
    x ^= x >> 15
    x = (x * 0xD35A2D97) & M32
    return x ^ (x >> 15)


def _row_key_py(seed: int, pos: int) -> int:
    s, p = seed & (2**64 - 1), pos & (2**64 - 1)
    k = _mix32_py(0x243F6A88 ^ (s & M32))
    k = _mix32_py(k ^ (s >> 32))
    k = _mix32_py(k ^ (p & M32))
    return _mix32_py(k ^ (p >> 32))


SEEDS = [0, 1, -1, 12345, 2**62 + 7, -(2**40), 2**63 - 1]
POSITIONS = [0, 1, 9, 10, 4095, 2**32 + 5, 10**12]


def test_hash_matches_python_ints_in_numpy_and_torch():
    seeds = np.array(SEEDS, dtype=np.int64)
    pos = np.array(POSITIONS, dtype=np.int64)
    want = [_row_key_py(s, p) for s, p in zip(SEEDS, POSITIONS, strict=True)]
    assert noise.row_key_np(seeds, pos).tolist() == want
    assert noise.row_key_torch(torch.from_numpy(seeds), torch.from_numpy(pos)).tolist() == want

    tokens = np.array([0, 1, 2, 151935, 262143, 2**31 - 1], dtype=np.int64)
    want_h = [[_mix32_py(k ^ ((t * 0x9E3779B9) & M32)) for t in tokens.tolist()] for k in want]
    keys_np = np.array(want, dtype=np.uint32)
    assert noise.token_hash_np(keys_np[:, None], tokens[None, :]).tolist() == want_h
    keys_t = torch.tensor(want, dtype=torch.int64)
    got = noise.token_hash_torch(keys_t[:, None], torch.from_numpy(tokens)[None, :])
    assert got.tolist() == want_h


def test_block_noise_matches_python_ints():
    key = _row_key_py(77, 5)
    k2 = _mix32_py(key ^ 0x85A308D3)
    blocks = [0, 1, 593, 1023]
    want_g = [_mix32_py(k2 ^ ((b * 0x9E3779B9) & M32)) for b in blocks]
    g = noise.block_hash_np(np.uint32(key), np.array(blocks))
    assert g.tolist() == want_g
    assert noise.block_argmin_np(g).tolist() == [_mix32_py(x ^ 0x13198A2E) >> 24 for x in want_g]


def test_race_times_structure():
    e = noise.race_times(torch.tensor([5, -9]), torch.tensor([0, 2**40]), 1000)
    assert torch.allclose(e[0], torch.from_numpy(noise.race_times_np(5, 0, 1000)), rtol=1e-6)
    # Independent of V: a token's time does not depend on the vocabulary size.
    assert torch.equal(noise.race_times(torch.tensor([5]), torch.tensor([0]), 300)[0], e[0, :300])
    # Each full block's minimum sits at J_b and equals M_b; the others exceed it.
    blocks = e[:, :768].reshape(2, 3, 256)
    key = noise.row_key_np(np.int64(5), np.int64(0))
    g = noise.block_hash_np(key, np.arange(3))
    assert blocks[0].argmin(-1).tolist() == noise.block_argmin_np(g).tolist()
    want_m = noise.exponential_np(g) / 256
    assert np.allclose(blocks[0].min(-1).values.numpy(), want_m, rtol=1e-6)
    assert int((blocks == blocks.min(-1, keepdim=True).values).sum()) == 6


def test_uniform_is_one_rounding_of_h_plus_half_over_2_32():
    h = np.concatenate(
        [
            np.array([0, 1, 255, 256, 2**23, 2**24 - 1, 2**24, 2**31, 2**32 - 1], np.uint64),
            np.random.default_rng(0).integers(0, 2**32, 20000, dtype=np.uint64),
        ]
    ).astype(np.uint32)
    exact = ((h.astype(np.float64) + 0.5) * 2.0**-32).astype(np.float32)  # one RNE rounding
    want = np.minimum(exact, np.float32(noise.W_MAX))
    w_np = noise.uniform_np(h)
    w_t = noise.uniform_torch(torch.from_numpy(h.astype(np.int64))).numpy()
    assert np.array_equal(w_np, want) and np.array_equal(w_t, want)
    assert w_np.min() > 0 and w_np.max() < 1
    e = noise.exponential_np(h)
    assert e.min() >= noise.EXP_MIN and e.max() <= noise.EXP_MAX
    # The winning tail keeps 32-bit resolution: h = 0 and h = 1 give distinct times.
    assert e[0] < e[1] < 1e-9


def test_race_times_are_iid_exponential():
    # Block minimum + Exp(1) offsets: i.i.d. Exp(1) by memorylessness.
    seeds = torch.arange(40, dtype=torch.int64) * 7919
    positions = torch.arange(40, dtype=torch.int64) * 13
    times = noise.race_times(seeds, positions, 5000).numpy().astype(np.float64)
    assert stats.kstest(times.ravel(), "expon").pvalue > ALPHA
    in_block = times[:, :4864].reshape(40, 19, 256)  # the smallest time of each block
    assert stats.kstest(in_block.min(-1).ravel() * 256, "expon").pvalue > ALPHA
    # Neighbouring tokens, neighbouring positions: uncorrelated uniforms.
    u = 1 - np.exp(-times)
    n = u[:, 1:].size
    r_tok = np.corrcoef(u[:, 1:].ravel(), u[:, :-1].ravel())[0, 1]
    r_row = np.corrcoef(u[1:].ravel(), u[:-1].ravel())[0, 1]
    bound = 4 / math.sqrt(n)  # ~4 sigma of the sample correlation of independent data
    assert abs(r_tok) < bound and abs(r_row) < bound


def _sample(logits, **kw):
    b = logits.shape[0]
    kw.setdefault("positions", torch.zeros(b, dtype=torch.int64))
    kw.setdefault("seeds", torch.arange(b, dtype=torch.int64))
    kw.setdefault("tau_max", 1.5)
    kw.setdefault("tau_min", 0.3)
    kw.setdefault("decay", 100.0)
    return ead_sample(logits, backend="torch", **kw)


def test_reference_against_hand_computation():
    x = np.array([[1.0, 2.0, -0.5, 0.25, 3.0], [0.0, -np.inf, 5.0, 4.0, -1.0]])
    pos = np.array([3, 40])
    seeds = np.array([11, -3])
    tau_max, tau_min, decay, warmup, base = 1.5, 0.3, 100.0, 5, 0.8
    out = _sample(
        torch.tensor(x, dtype=torch.float32),
        positions=torch.tensor(pos),
        seeds=torch.tensor(seeds),
        tau_max=tau_max,
        tau_min=tau_min,
        decay=decay,
        warmup=warmup,
        base_temperature=base,
    )
    for b in range(2):
        tau = 1.0 if pos[b] < warmup else max(1 + tau_max - math.exp(pos[b] / decay), tau_min)
        t = base * tau
        logp = x[b] / t - np.logaddexp.reduce(x[b] / t)
        base_logp = x[b] / base - np.logaddexp.reduce(x[b] / base)
        p = np.exp(logp)
        ent = -sum(pi * li for pi, li in zip(p, logp, strict=True) if pi > 0)
        tok = int(np.argmax(p / noise.race_times_np(seeds[b], pos[b], 5)))
        assert out.token_ids[b].item() == tok
        assert out.temperatures[b].item() == pytest.approx(t, rel=1e-6)
        assert out.logprobs[b].item() == pytest.approx(logp[tok], abs=1e-5)
        assert out.base_logprobs[b].item() == pytest.approx(base_logp[tok], abs=1e-5)
        assert out.entropy[b].item() == pytest.approx(ent, abs=1e-5)
    assert out.token_ids[1].item() != 1  # masked


def test_temperature_is_the_schedule_in_fp32():
    pos = torch.tensor([0, 5, 9, 10, 11, 100, 1000, 10**6, 10**9])
    kw = dict(tau_max=2.0, tau_min=0.2, decay=300.0, warmup=10)
    t = effective_temperature(
        pos,
        **{k: torch.full((9,), v) for k, v in kw.items()},
        base_temperature=torch.ones(9),
    )
    want = ead_temperature(pos.double(), **kw)
    assert torch.allclose(t.double(), want, rtol=1e-6)
    assert t[:4].tolist() == [1.0, 1.0, 1.0, pytest.approx(2.0 + 1 - math.exp(10 / 300))]
    assert t[-1].item() == pytest.approx(0.2)


@pytest.mark.parametrize("phase", PHASES)
def test_reference_samples_the_annealed_distribution(phase):
    position, vocab, n = PHASES[phase], 8, 20000
    logits = phase_logits(position, vocab).expand(n, vocab)
    out = _sample(
        logits,
        positions=torch.full((n,), position),
        seeds=torch.arange(n) * 7 + 1,
        **SCHEDULE,
    )
    temperature = phase_temperature(position)
    assert out.temperatures[0].item() == pytest.approx(temperature, rel=1e-6)
    assert chi_square_pvalue(out.token_ids, logits[0], temperature) > ALPHA
    if phase != "warmup":  # the test has power: the un-annealed distribution is rejected
        assert chi_square_pvalue(out.token_ids, logits[0], SCHEDULE["base_temperature"]) < ALPHA
