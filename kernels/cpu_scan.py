"""The per-chunk scan of the CPU sampler: block maxima, exact race skipping, sums.

``_scan_chunk`` reads one chunk of one row twice (the chunk stays in L2):
block maxima first, then the exponential race with exact skipping (a block
whose largest possible key is below the running best is never hashed), then
the vectorised sums of ``2**t`` for the log-sum-exps and the entropy. See
``cpu_sampler``'s docstring for the method.
"""

from __future__ import annotations

import numpy as np
from ead_vllm.kernels import noise
from ead_vllm.kernels.cpu_intrinsics import (
    _F32,
    _I32,
    _INLINE,
    _JIT,
    _T_FLOOR,
    _U32,
    _exp2_neg,
    _fmax,
)
from ead_vllm.kernels.cpu_noise import (
    _INV_NB,
    _TOKEN_MULT,
    _block_key,
    _block_noise,
    _mix32,
    _race_time,
    _uniform,
)
from numba import njit

BLOCK = noise.NOISE_BLOCK  # max / race granularity: one noise block
SUM_BLOCK = 4 * BLOCK  # entries per vectorised sum before the fp64 accumulation
_SHRINK = _F32(1.0 - 2.0**-10)  # slack for rounding in the skip tests


@njit(**_INLINE)
def _block_max(blk):
    m = _F32(-np.inf)
    bad = _I32(0)
    for j in range(blk.size):
        v = blk[j]
        m = _fmax(m, v)
        bad |= _I32(v != v)
    return m, bad


@njit(**_INLINE)
def _block_sums(blk, m, scale_t, scale_b, same):
    """Sums of e = 2**t, e * t (log2 units) and the base-temperature e."""
    z = _F32(0.0)
    s = _F32(0.0)
    z0 = _F32(0.0)
    if same:
        for j in range(blk.size):
            t = _fmax((blk[j] - m) * scale_t, _T_FLOOR)
            e = _exp2_neg(t)
            z += e
            s += e * t
    else:
        for j in range(blk.size):
            dx = blk[j] - m
            t = _fmax(dx * scale_t, _T_FLOOR)
            e = _exp2_neg(t)
            z += e
            s += e * t
            z0 += _exp2_neg(_fmax(dx * scale_b, _T_FLOOR))
    return z, s, z0


@njit(**_INLINE)
def _block_flags(blk, m, scale_t, key, base, thr, m_b, flags):
    """``flags[j] = (M_b + w_j) * thr < e_j``: may token j beat ``thr``?"""
    anyf = _I32(0)
    for j in range(blk.size):
        e = _exp2_neg(_fmax((blk[j] - m) * scale_t, _T_FLOOR))
        h = _mix32(_U32(key ^ _U32(base + _U32(_U32(j) * _TOKEN_MULT))))
        f = _I32((m_b + _uniform(h)) * thr < e)
        flags[j] = f
        anyf |= f
    return anyf


@njit(**_INLINE)
def _token_e(blk, j, m, scale_t):
    return _exp2_neg(_fmax((blk[j] - m) * scale_t, _T_FLOOR))


@njit(**_JIT)
def _scan_chunk(row, tok_lo, scale_t, scale_b, same, key, flags, block_max, key_bound):
    """Two passes over ``row``, a chunk of one row starting at token ``tok_lo``.

    ``tok_lo`` is a multiple of BLOCK; ``scale_t`` = log2(e) / T and
    ``scale_b`` = log2(e) / base_temperature. The chunk (a few tens of KiB)
    stays in L2 for the second pass, so memory sees one pass. Returns
    (m, bad, Z, S, Z0, best, best_token): max logit, NaN/+inf flag, sum e,
    sum e * t (t in log2 units), base sum (relative to m, fp64), and the best
    race key e / E relative to m with its token (-1 if fully masked).
    """
    n = row.size
    n_blocks = (n + BLOCK - 1) // BLOCK
    m = _F32(-np.inf)
    for b in range(n_blocks):
        bm, bad = _block_max(row[b * BLOCK : (b + 1) * BLOCK])
        if bad or bm == np.inf:
            return m, 1, 0.0, 0.0, 0.0, _F32(-1.0), -1
        block_max[b] = bm
        m = max(m, bm)
    if m == -np.inf:
        return m, 0, 0.0, 0.0, 0.0, _F32(-1.0), -1

    bkey = _block_key(key)
    block0 = tok_lo // BLOCK
    # Seed the race with the chunk's max token, so the skip tests are tight
    # from the first block on.
    best = _F32(-1.0)
    best_tok = -1
    for b in range(n_blocks):
        if block_max[b] == m:
            blk = row[b * BLOCK : (b + 1) * BLOCK]
            for j in range(blk.size):
                if blk[j] == m:
                    m_b, j_b = _block_noise(bkey, block0 + b)
                    e_time = m_b
                    if j != j_b:
                        base = _U32(_U32(tok_lo + b * BLOCK) * _TOKEN_MULT)
                        h = _mix32(_U32(key ^ _U32(base + _U32(_U32(j) * _TOKEN_MULT))))
                        e_time = m_b + _race_time(_uniform(h))
                    best = _token_e(blk, j, m, scale_t) / e_time
                    best_tok = tok_lo + b * BLOCK + j
                    break
            break
    thr = best * _SHRINK

    # Upper bounds of every block's race keys, e_max / (w_b / 256) >= e / M_b,
    # one vector loop over the blocks (a hash each, no logarithm).
    for b in range(n_blocks):
        e_hi = _exp2_neg(_fmax((block_max[b] - m) * scale_t, _T_FLOOR))
        g = _mix32(_U32(bkey ^ _U32(_U32(block0 + b) * _TOKEN_MULT)))
        key_bound[b] = e_hi / (_uniform(g) * _INV_NB)

    for b in range(n_blocks):
        if key_bound[b] < thr:
            continue
        blk = row[b * BLOCK : (b + 1) * BLOCK]
        m_b, j_b = _block_noise(bkey, block0 + b)
        if _exp2_neg(_fmax((block_max[b] - m) * scale_t, _T_FLOOR)) < thr * m_b:
            continue
        tok0 = tok_lo + b * BLOCK
        if j_b < blk.size:  # the block minimum: E = M_b
            k = _token_e(blk, j_b, m, scale_t) / m_b
            if k > best or (k == best and tok0 + j_b < best_tok):
                best = k
                best_tok = tok0 + j_b
                thr = best * _SHRINK
        base = _U32(_U32(tok0) * _TOKEN_MULT)
        fl = flags[: blk.size]
        if _block_flags(blk, m, scale_t, key, base, thr, m_b, fl):
            for j in range(blk.size):
                if fl[j] and j != j_b:
                    e = _token_e(blk, j, m, scale_t)
                    h = _mix32(_U32(key ^ _U32(base + _U32(_U32(j) * _TOKEN_MULT))))
                    k = e / (m_b + _race_time(_uniform(h)))
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
