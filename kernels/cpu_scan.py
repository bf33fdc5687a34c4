"""The per-chunk scan of the CPU sampler: block maxima, exact race skipping, sums.

``scan_chunk`` reads one chunk of one row twice (the chunk stays in L2):
block maxima first, then the exponential race with exact skipping (a block
whose largest possible key is below the running best is never hashed), then
the vectorised sums of ``2**t`` for the log-sum-exps and the entropy. See
``cpu_sampler``'s docstring for the method.
"""

from __future__ import annotations

import numpy as np
from ead_vllm.kernels import noise
from ead_vllm.kernels.cpu_intrinsics import (
    F32,
    I32,
    INLINE_OPTIONS,
    JIT_OPTIONS,
    T_FLOOR,
    U32,
    exp2_neg,
    fmax,
)
from ead_vllm.kernels.cpu_noise import (
    INV_NOISE_BLOCK,
    TOKEN_MULT_U32,
    block_key,
    block_noise,
    mix32,
    race_time,
    uniform,
)
from numba import njit

BLOCK = noise.NOISE_BLOCK  # max / race granularity: one noise block
SUM_BLOCK = 4 * BLOCK  # entries per vectorised sum before the fp64 accumulation
_SHRINK = F32(1.0 - 2.0**-10)  # slack for rounding in the skip tests


@njit(**INLINE_OPTIONS)
def _block_max(blk):
    m = F32(-np.inf)
    bad = I32(0)
    for j in range(blk.size):
        v = blk[j]
        m = fmax(m, v)
        bad |= I32(v != v)
    return m, bad


@njit(**INLINE_OPTIONS)
def _block_sums(blk, m, scale_t, scale_b, same):
    """Sums of e = 2**t, e * t (log2 units) and the base-temperature e."""
    z = F32(0.0)
    s = F32(0.0)
    z0 = F32(0.0)
    if same:
        for j in range(blk.size):
            t = fmax((blk[j] - m) * scale_t, T_FLOOR)
            e = exp2_neg(t)
            z += e
            s += e * t
    else:
        for j in range(blk.size):
            dx = blk[j] - m
            t = fmax(dx * scale_t, T_FLOOR)
            e = exp2_neg(t)
            z += e
            s += e * t
            z0 += exp2_neg(fmax(dx * scale_b, T_FLOOR))
    return z, s, z0


@njit(**INLINE_OPTIONS)
def _block_flags(blk, m, scale_t, key, base, thr, m_b, flags):
    """``flags[j] = (M_b + w_j) * thr < e_j``: may token j beat ``thr``?"""
    anyf = I32(0)
    for j in range(blk.size):
        e = exp2_neg(fmax((blk[j] - m) * scale_t, T_FLOOR))
        h = mix32(U32(key ^ U32(base + U32(U32(j) * TOKEN_MULT_U32))))
        f = I32((m_b + uniform(h)) * thr < e)
        flags[j] = f
        anyf |= f
    return anyf


@njit(**INLINE_OPTIONS)
def _token_e(blk, j, m, scale_t):
    return exp2_neg(fmax((blk[j] - m) * scale_t, T_FLOOR))


@njit(**JIT_OPTIONS)
def scan_chunk(row, tok_lo, scale_t, scale_b, same, key, flags, block_max, key_bound):
    """Two passes over ``row``, a chunk of one row starting at token ``tok_lo``.

    ``row`` [n] fp32 (contiguous), ``tok_lo`` its first token id, a multiple
    of BLOCK; ``scale_t`` = log2(e) / T and ``scale_b`` = log2(e) /
    base_temperature (fp32, log2 units per logit unit); ``same``: skip the
    base sum (Z0 = Z); ``key`` the uint32 row key (``cpu_noise.row_key``).
    Scratch, overwritten: ``flags`` [BLOCK] int32, ``block_max`` and
    ``key_bound`` [>= ceil(n / BLOCK)] fp32. The chunk (a few tens of KiB)
    stays in L2 for the second pass, so memory sees one pass. Returns
    (m, bad, Z, S, Z0, best, best_token): max logit (fp32), NaN/+inf flag,
    sum e, sum e * t (t in log2 units) and base sum (fp64, relative to m),
    and the best race key e / E (fp32, relative to m) with its token id (-1
    if fully masked).
    """
    n = row.size
    n_blocks = (n + BLOCK - 1) // BLOCK
    m = F32(-np.inf)
    for b in range(n_blocks):
        bm, bad = _block_max(row[b * BLOCK : (b + 1) * BLOCK])
        if bad or bm == np.inf:
            return m, 1, 0.0, 0.0, 0.0, F32(-1.0), -1
        block_max[b] = bm
        m = max(m, bm)
    if m == -np.inf:
        return m, 0, 0.0, 0.0, 0.0, F32(-1.0), -1

    bkey = block_key(key)
    block0 = tok_lo // BLOCK
    # Seed the race with the chunk's max token, so the skip tests are tight
    # from the first block on.
    best = F32(-1.0)
    best_tok = -1
    for b in range(n_blocks):
        if block_max[b] == m:
            blk = row[b * BLOCK : (b + 1) * BLOCK]
            for j in range(blk.size):
                if blk[j] == m:
                    m_b, j_b = block_noise(bkey, block0 + b)
                    e_time = m_b
                    if j != j_b:
                        base = U32(U32(tok_lo + b * BLOCK) * TOKEN_MULT_U32)
                        h = mix32(U32(key ^ U32(base + U32(U32(j) * TOKEN_MULT_U32))))
                        e_time = m_b + race_time(uniform(h))
                    best = _token_e(blk, j, m, scale_t) / e_time
                    best_tok = tok_lo + b * BLOCK + j
                    break
            break
    thr = best * _SHRINK

    # Upper bounds of every block's race keys, e_max / (w_b / 256) >= e / M_b,
    # one vector loop over the blocks (a hash each, no logarithm).
    for b in range(n_blocks):
        e_hi = exp2_neg(fmax((block_max[b] - m) * scale_t, T_FLOOR))
        g = mix32(U32(bkey ^ U32(U32(block0 + b) * TOKEN_MULT_U32)))
        key_bound[b] = e_hi / (uniform(g) * INV_NOISE_BLOCK)

    for b in range(n_blocks):
        if key_bound[b] < thr:
            continue
        blk = row[b * BLOCK : (b + 1) * BLOCK]
        m_b, j_b = block_noise(bkey, block0 + b)
        if exp2_neg(fmax((block_max[b] - m) * scale_t, T_FLOOR)) < thr * m_b:
            continue
        tok0 = tok_lo + b * BLOCK
        if j_b < blk.size:  # the block minimum: E = M_b
            k = _token_e(blk, j_b, m, scale_t) / m_b
            if k > best or (k == best and tok0 + j_b < best_tok):
                best = k
                best_tok = tok0 + j_b
                thr = best * _SHRINK
        base = U32(U32(tok0) * TOKEN_MULT_U32)
        fl = flags[: blk.size]
        if _block_flags(blk, m, scale_t, key, base, thr, m_b, fl):
            for j in range(blk.size):
                if fl[j] and j != j_b:
                    e = _token_e(blk, j, m, scale_t)
                    h = mix32(U32(key ^ U32(base + U32(U32(j) * TOKEN_MULT_U32))))
                    k = e / (m_b + race_time(uniform(h)))
                    if k > best or (k == best and tok0 + j < best_tok):
                        best = k
                        best_tok = tok0 + j
                        thr = best * _SHRINK

    big_z = 0.0
    big_s = 0.0
    big_z0 = 0.0
    for i in range(0, n, SUM_BLOCK):
        z, s, z0 = _block_sums(row[i : i + SUM_BLOCK], m, scale_t, scale_b, same)
        big_z += z
        big_s += s
        big_z0 += z0
    if same:
        big_z0 = big_z
    return m, 0, big_z, big_s, big_z0, best, best_tok
