"""numba versions of the shared counter-based noise (``noise.py``), bit for bit.

Hashes wrap modulo 2**32 through explicit uint32 casts; the uniform is built
with the same exact fp32 steps as ``noise.uniform_np``; the race time
``-log1p(-w)`` is evaluated in fp64 and rounded once, as ``noise.exponential_np``.
"""

from __future__ import annotations

import math

import numpy as np
from ead_vllm.kernels import noise
from ead_vllm.kernels.cpu_intrinsics import _F32, _I32, _INLINE, _JIT, _U32, _fmin
from numba import njit

_TOKEN_MULT = _U32(noise.TOKEN_MULT)
_W_MAX = _F32(noise.W_MAX)
_INV_NB = _F32(1.0 / noise.NOISE_BLOCK)


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


@njit(**_JIT)
def _race_time(w):
    return _F32(-math.log1p(-np.float64(w)))


@njit(**_INLINE)
def _block_noise(bkey, block):
    """(M_b, J_b) of global noise block ``block``."""
    g = _mix32(_U32(bkey ^ _U32(_U32(block) * _TOKEN_MULT)))
    m_b = _race_time(_uniform(g)) * _INV_NB
    j_b = _I32(_mix32(_U32(g ^ _U32(noise.ARGMIN_SALT))) >> _U32(24))
    return m_b, j_b
