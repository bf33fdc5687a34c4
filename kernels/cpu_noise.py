"""numba versions of the shared counter-based noise (``noise.py``), bit for bit.

Hashes wrap modulo 2**32 through explicit uint32 casts; the uniform is built
with the same exact fp32 steps as ``noise.uniform_np``; the race time
``-log1p(-w)`` is evaluated in fp64 and rounded once, as ``noise.exponential_np``.

Scalar functions for the numba code of ``cpu_scan`` and ``cpu_sampler``:
hashes and keys are uint32, ``w`` and race times fp32.
"""

from __future__ import annotations

import math

import numpy as np
from ead_vllm.kernels import noise
from ead_vllm.kernels.cpu_intrinsics import F32, I32, INLINE_OPTIONS, JIT_OPTIONS, U32, fmin
from numba import njit

TOKEN_MULT_U32 = U32(noise.TOKEN_MULT)  # noise.TOKEN_MULT as a numba uint32 constant
INV_NOISE_BLOCK = F32(1.0 / noise.NOISE_BLOCK)  # fp32 1/256: M_b = Exp(g_b) / 256, exact
_W_MAX = F32(noise.W_MAX)
_W_LOW_SCALE = F32(noise.W_LOW_SCALE)
_W_HIGH_SCALE = F32(noise.W_HIGH_SCALE)


@njit(**INLINE_OPTIONS)
def mix32(x):
    """``mix32`` of ``noise.py`` on a uint32 (wraps modulo 2**32); uint32 result."""
    x = U32(x ^ (x >> U32(16)))
    x = U32(x * U32(noise.MIX_MULT_1))
    x = U32(x ^ (x >> U32(15)))
    x = U32(x * U32(noise.MIX_MULT_2))
    return U32(x ^ (x >> U32(15)))


@njit(**INLINE_OPTIONS)
def uniform(h):
    """fp32 ``w`` in (0, 1) of a uint32 hash, the bits of ``noise.uniform_np``."""
    hi = F32(I32(h >> U32(8)))
    lo = F32(I32(h & U32(0xFF))) + F32(0.5)
    return fmin((hi + lo * _W_LOW_SCALE) * _W_HIGH_SCALE, _W_MAX)


@njit(cache=True)
def row_key(seed, pos):
    """uint32 key of a row from its int64 seed and position (``noise.row_key_np``)."""
    s = np.uint64(seed)
    p = np.uint64(pos)
    m = np.uint64(0xFFFFFFFF)
    k = mix32(U32(U32(noise.ROW_SALT) ^ U32(s & m)))
    k = mix32(U32(k ^ U32(s >> np.uint64(32))))
    k = mix32(U32(k ^ U32(p & m)))
    return mix32(U32(k ^ U32(p >> np.uint64(32))))


@njit(**INLINE_OPTIONS)
def block_key(key):
    """uint32 ``mix32(key ^ BLOCK_SALT)``: the key the block hashes ``g_b`` derive from."""
    return mix32(U32(key ^ U32(noise.BLOCK_SALT)))


@njit(**JIT_OPTIONS)
def race_time(w):
    """fp32 Exp(1) variate ``-log1p(-w)`` of an fp32 ``w`` (fp64, rounded once)."""
    return F32(-math.log1p(-np.float64(w)))


@njit(**INLINE_OPTIONS)
def block_noise(bkey, block):
    """(M_b, J_b) of global noise block ``block`` (an int index, not a token id).

    ``bkey`` is ``block_key(row key)``; ``M_b`` is the block's fp32 minimum race
    time ``Exp(g_b) / 256`` and ``J_b`` (int32 in [0, 256)) its offset in the block.
    """
    g = mix32(U32(bkey ^ U32(U32(block) * TOKEN_MULT_U32)))
    m_b = race_time(uniform(g)) * INV_NOISE_BLOCK
    j_b = I32(mix32(U32(g ^ U32(noise.ARGMIN_SALT))) >> U32(24))
    return m_b, j_b
