"""Fused EAD sampler for CPUs: numba JIT, vectorised over vocabulary blocks.

Why numba: it is already a dependency, compiles at first use with no
toolchain, and its LLVM backend vectorises the block loops for the host
(AVX-512 here) once the loops are free of Python semantics (no
divide-by-zero checks, no negative-index wrap, explicit uint32 wrap-around,
``llvm.maxnum`` for the max). ``torch.compile`` was measured about 45x the
``amax`` floor on this job and a scalar numba loop about 140x (DESIGN.md 4).

Work per logit (the chunk is read from memory once; the second pass hits L2):

* max and NaN check, per block of 256;
* ``e = 2**t``, ``t = (x - m) log2(e) / T``, by a degree-5 polynomial: the
  annealed sum ``Z`` and ``sum e * t`` for the entropy; a second ``2**t`` for
  the base sum only when ``T != base_temperature``.

The exponential race (``noise.py``) costs one hash per block of 256 tokens in
most blocks: every race time in block b is at least its block minimum M_b,
so a block whose largest e is below ``best * M_b`` cannot hold the winner and
its tokens are never hashed. In the remaining blocks a vector loop hashes the
tokens and keeps those with ``(M_b + w_i) * best < e_i`` (necessary for
``e_i / E_i > best`` since ``E_i >= M_b + w_i``); only those get a logarithm
and a division, a handful per row. The skips are exact: the result equals the
argmax over every token.

Rows are cut into a fixed number of chunks that depend only on V, processed
in parallel over (row, chunk) and merged in chunk order, so a row's result
does not depend on the batch (batch invariance) and B = 1 still uses every
core.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from ead_vllm.kernels import noise
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# No "nnan"/"ninf": NaN checks must survive and -inf logits are legal (masked).
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_JIT = {"fastmath": _FASTMATH, "error_model": "numpy", "cache": True}
_INLINE = {"fastmath": _FASTMATH, "error_model": "numpy", "inline": "always"}

_F32 = np.float32
_I32 = np.int32
_U32 = np.uint32

BLOCK = noise.NOISE_BLOCK  # max / race granularity: one noise block
SUM_BLOCK = 4 * BLOCK  # entries per vectorised sum before the fp64 accumulation
NUM_CHUNKS = 8  # chunks per row when V is large; depends on V only
MIN_CHUNK = 16 * BLOCK

_LOG2E64 = 1.4426950408889634
# 2**f on [-0.5, 0.5] with p(0) = 1 exactly (so exp(0) = 1 and a one-token row
# has log-probability 0); relative error 1.9e-7 (weighted least squares).
_P0, _P1, _P2, _P3, _P4, _P5 = (
    _F32(1.0),
    _F32(0.6931470036506653),
    _F32(0.24022242426872253),
    _F32(0.05550733581185341),
    _F32(0.009671512991189957),
    _F32(0.0013264722656458616),
)
# Exponents are in log2 units, t = (x - m) * log2(e) / T, floored here: 2**t is
# then exactly 0 (see _exp2_neg), and e * t stays finite for -inf logits.
_T_FLOOR = _F32(-127.0)
_LN2 = math.log(2.0)
_TOKEN_MULT = _U32(noise.TOKEN_MULT)
_W_MAX = _F32(noise.W_MAX)
_INV_NB = _F32(1.0 / noise.NOISE_BLOCK)
_SHRINK = _F32(1.0 - 2.0**-10)  # slack for rounding in the skip tests


# ------------------------------------------------------------------ intrinsics


@intrinsic
def _i32_as_f32(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _minmax_intrinsic(name):
    @intrinsic
    def _op(typingctx, a, b):
        # nnan lets the loop vectoriser use a plain vmaxps/vminps; callers only
        # trust the result when the inputs are known to be NaN-free.
        def codegen(context, builder, sig, args):
            f = ir.FloatType()
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(f, [f, f]), f"llvm.{name}.f32"
            )
            return builder.call(fn, args, fastmath=("nnan", "nsz"))

        return types.float32(types.float32, types.float32), codegen

    return _op


_fmax = _minmax_intrinsic("maxnum")
_fmin = _minmax_intrinsic("minnum")


# ------------------------------------------------------------- scalar helpers


@njit(**_INLINE)
def _exp2_neg(t):
    """2**t for -127 <= t <= 0 (fp32); exactly 0 below -126.5."""
    n = _I32(t - _F32(0.5))  # round to nearest for t <= 0 (truncation toward 0)
    f = t - _F32(n)
    p = _P5
    p = p * f + _P4
    p = p * f + _P3
    p = p * f + _P2
    p = p * f + _P1
    p = p * f + _P0
    return p * _i32_as_f32(_I32(_I32(n + _I32(127)) << _I32(23)))


@njit(**_INLINE)
def _mix32(x):
    x = _U32(x ^ (x >> _U32(16)))
    x = _U32(x * _U32(noise.MIX_MULT_1))
    x = _U32(x ^ (x >> _U32(15)))
    x = _U32(x * _U32(noise.MIX_MULT_2))
    return _U32(x ^ (x >> _U32(15)))


@njit(**_INLINE)
def _uniform(h):
    hi = _F32(_I32(h >> _U32(8)))
    lo = _F32(_I32(h & _U32(0xFF))) + _F32(0.5)
    return _fmin((hi + lo * _F32(2.0**-8)) * _F32(2.0**-24), _W_MAX)


@njit(cache=True)
def _row_key(seed, pos):
    s = np.uint64(seed)
    p = np.uint64(pos)
    m = np.uint64(0xFFFFFFFF)
    k = _mix32(_U32(_U32(noise.ROW_SALT) ^ _U32(s & m)))
    k = _mix32(_U32(k ^ _U32(s >> np.uint64(32))))
    k = _mix32(_U32(k ^ _U32(p & m)))
    return _mix32(_U32(k ^ _U32(p >> np.uint64(32))))


@njit(**_INLINE)
def _block_key(key):
    return _mix32(_U32(key ^ _U32(noise.BLOCK_SALT)))


@njit(cache=True)
def _temperature(pos, tau_max, tau_min, decay, warmup, base):
    # Plain IEEE fp32 (no fastmath), mirroring reference.effective_temperature.
    t = _F32(pos)
    if t < _F32(warmup):
        tau = _F32(1.0)
    else:
        x = min(t / decay, _F32(60.0))
        tau = max((_F32(1.0) + tau_max) - _F32(math.exp(x)), tau_min)
    return base * tau


@njit(**_JIT)
def _race_time(w):
    return _F32(-math.log1p(-np.float64(w)))


# ------------------------------------------------------------- block loops


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


@njit(**_INLINE)
def _block_noise(bkey, block):
    """(M_b, J_b) of global noise block ``block``."""
    g = _mix32(_U32(bkey ^ _U32(_U32(block) * _TOKEN_MULT)))
    m_b = _race_time(_uniform(g)) * _INV_NB
    j_b = _I32(_mix32(_U32(g ^ _U32(noise.ARGMIN_SALT))) >> _U32(24))
    return m_b, j_b


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


@njit(parallel=True, **_JIT)
def _sample_kernel(
    flat,
    row_start,
    vocab,
    chunk,
    positions,
    seeds,
    tau_max,
    tau_min,
    decay,
    warmup,
    base_t,
    out_tok,
    out_lp,
    out_blp,
    out_t,
    out_h,
):
    n_rows = row_start.size
    n_chunks = (vocab + chunk - 1) // chunk
    p_m = np.empty((n_rows, n_chunks), np.float32)
    p_bad = np.empty((n_rows, n_chunks), np.int32)
    p_z = np.empty((n_rows, n_chunks), np.float64)
    p_s = np.empty((n_rows, n_chunks), np.float64)
    p_z0 = np.empty((n_rows, n_chunks), np.float64)
    p_best = np.empty((n_rows, n_chunks), np.float32)
    p_tok = np.empty((n_rows, n_chunks), np.int64)

    for it in prange(n_rows * n_chunks):
        r = it // n_chunks
        c = it - r * n_chunks
        temp = _temperature(positions[r], tau_max[r], tau_min[r], decay[r], warmup[r], base_t[r])
        scale_t = _F32(np.float64(_F32(1.0) / temp) * _LOG2E64)
        scale_b = _F32(np.float64(_F32(1.0) / base_t[r]) * _LOG2E64)
        lo = c * chunk
        hi = min(vocab, lo + chunk)
        row = flat[row_start[r] + lo : row_start[r] + hi]
        flags = np.empty(BLOCK, np.int32)
        block_max = np.empty((chunk + BLOCK - 1) // BLOCK, np.float32)
        key_bound = np.empty_like(block_max)
        key = _row_key(seeds[r], positions[r])
        same = temp == base_t[r]
        res = _scan_chunk(row, lo, scale_t, scale_b, same, key, flags, block_max, key_bound)
        p_m[r, c], p_bad[r, c], p_z[r, c], p_s[r, c], p_z0[r, c], p_best[r, c], p_tok[r, c] = res

    for r in prange(n_rows):
        temp = _temperature(positions[r], tau_max[r], tau_min[r], decay[r], warmup[r], base_t[r])
        out_t[r] = temp
        inv_t64 = np.float64(_F32(1.0) / temp)
        inv_b64 = np.float64(_F32(1.0) / base_t[r])
        m = _F32(-np.inf)
        bad = 0
        for c in range(n_chunks):
            bad |= p_bad[r, c]
            m = max(m, p_m[r, c])
        if bad or m == -np.inf:
            out_tok[r] = 0
            out_lp[r] = np.nan
            out_blp[r] = np.nan
            out_h[r] = np.nan
            continue
        big_z = 0.0
        big_s = 0.0
        big_z0 = 0.0
        best = -1.0
        tok = 0
        for c in range(n_chunks):
            if p_m[r, c] == -np.inf:
                continue
            dm = np.float64(p_m[r, c]) - np.float64(m)
            delta = dm * inv_t64
            scale = math.exp(delta) if delta > -100.0 else 0.0
            big_z += scale * p_z[r, c]
            big_s += scale * (_LN2 * p_s[r, c] + delta * p_z[r, c])
            delta0 = dm * inv_b64
            big_z0 += (math.exp(delta0) if delta0 > -100.0 else 0.0) * p_z0[r, c]
            k = np.float64(p_best[r, c]) * scale
            if k > best:
                best = k
                tok = p_tok[r, c]
        d_tok = np.float64(flat[row_start[r] + tok]) - np.float64(m)
        log_z = math.log(big_z)
        out_tok[r] = tok
        out_lp[r] = d_tok * inv_t64 - log_z
        out_blp[r] = d_tok * inv_b64 - math.log(big_z0)
        out_h[r] = log_z - big_s / big_z


def chunk_size(vocab: int) -> int:
    """Chunk length for a vocabulary of ``vocab`` entries (a function of V only)."""
    per = -(-vocab // NUM_CHUNKS)
    return max(MIN_CHUNK, -(-per // BLOCK) * BLOCK)


def _numpy_storage(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Flat fp32 numpy view over the rows of ``logits`` and each row's start offset.

    bf16/fp16 logits are upcast to an fp32 copy first: one compiled kernel
    instead of three (tens of seconds of JIT each), and vLLM hands the
    sampler fp32 logits anyway. fp32 rows are used in place, any row stride.
    """
    if logits.dtype != torch.float32 or logits.stride(1) != 1:
        logits = logits.to(torch.float32).contiguous()
    n_rows, vocab = logits.shape
    stride = logits.stride(0)
    flat = torch.as_strided(logits, ((n_rows - 1) * stride + vocab,), (1,))
    return flat.numpy(), np.arange(n_rows, dtype=np.int64) * stride


def ead_sample_cpu(
    logits: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    tau_max: torch.Tensor,
    tau_min: torch.Tensor,
    decay: torch.Tensor,
    warmup: torch.Tensor,
    base_temperature: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CPU kernel entry; inputs validated and broadcast to [B] by ``ead_sample``.

    ``logits`` [B, V] fp32 (bf16/fp16 are upcast) on CPU, any strides; ``positions``,
    ``seeds``, ``warmup`` int64 [B]; ``tau_max``, ``tau_min``, ``decay``,
    ``base_temperature`` fp32 [B]. Returns (token_ids, logprobs,
    base_logprobs, temperatures, entropy).
    """
    n_rows, vocab = logits.shape
    out_tok = np.empty(n_rows, np.int64)
    out = [np.empty(n_rows, np.float32) for _ in range(4)]
    if n_rows > 0:
        flat, row_start = _numpy_storage(logits)

        def arr(t: torch.Tensor, dtype) -> np.ndarray:
            return np.ascontiguousarray(t.numpy(), dtype=dtype)

        _sample_kernel(
            flat,
            row_start,
            vocab,
            chunk_size(vocab),
            arr(positions, np.int64),
            arr(seeds, np.int64),
            arr(tau_max, np.float32),
            arr(tau_min, np.float32),
            arr(decay, np.float32),
            arr(warmup, np.int64),
            arr(base_temperature, np.float32),
            out_tok,
            out[0],
            out[1],
            out[2],
            out[3],
        )
    tok = torch.from_numpy(out_tok)
    lp, blp, temp, ent = (torch.from_numpy(a) for a in out)
    return tok, lp, blp, temp, ent


def num_threads() -> int:
    """Threads the CPU kernel uses (numba's setting)."""
    return numba.get_num_threads()
