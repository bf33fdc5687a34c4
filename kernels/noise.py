"""Counter-based sampling noise shared bit-exactly by every backend.

A row samples ``argmax_i p_i / E_i`` with ``E_i`` i.i.d. Exp(1): the
exponential race, an exact draw from ``p`` (equivalently Gumbel-max with
``-log E_i`` as the Gumbel noise). The ``E_i`` come from 32-bit hashes of
(seed, position, token id), built in blocks of ``NOISE_BLOCK`` = 256 tokens
so that kernels can rule out whole blocks cheaply:

* the block's minimum ``M_b = Exp(1) / 256`` is drawn from a hash of
  (seed, position, block index), and its position ``J_b`` in the block from
  the same hash;
* every other token of the block gets ``E_i = M_b + F_i`` with ``F_i`` an
  Exp(1) drawn from the token's own hash, and ``E_{J_b} = M_b``.

By the memorylessness of the exponential distribution (the minimum of 256
i.i.d. Exp(1) is Exp(256), its position is uniform and independent, and the
others exceed it by i.i.d. Exp(1)), the ``E_i`` are exactly i.i.d. Exp(1).
Since every ``E_i >= M_b``, a block whose largest ``p_i`` is below
``best * M_b`` cannot contain the winner; ``M_b`` is typically ``1/256``, so
most blocks of a peaked distribution are skipped with one hash. A block's
noise does not depend on V: tokens past V simply do not exist (``J_b`` may
point at one).

Exponential variates: ``Exp(h) = -log1p(-w(h))`` with
``w = (h + 0.5) / 2**32`` rounded once to fp32 and capped at
``W_MAX = 1 - 2**-24``. The race is won where E is small (w near 0), where
this keeps 2**-32 resolution; ``w`` is computed as
``(float(h >> 8) + (float(h & 0xFF) + 0.5) * 2**-8) * 2**-24`` in fp32
(``W_LOW_SCALE``, ``W_HIGH_SCALE``), where every step is exact except one
round-to-nearest-even addition, so any IEEE backend gets the same bits.
``log1p`` may differ in the last bit between backends, which changes a token
only at floating-point near-ties.

Hashes (arithmetic modulo 2**32; seed and position are 64-bit two's complement)::

    mix32(x):    x ^= x >> 16; x *= 0x21F0AAAD; x ^= x >> 15; x *= 0xD35A2D97; x ^= x >> 15
    row key:     k = mix32(ROW_SALT ^ lo32(seed)); k = mix32(k ^ hi32(seed))
                 k = mix32(k ^ lo32(position));    k = mix32(k ^ hi32(position))
    token i:     h_i = mix32(k ^ (i * TOKEN_MULT))                     -> F_i = Exp(h_i)
    block b:     g_b = mix32(mix32(k ^ BLOCK_SALT) ^ (b * TOKEN_MULT)) -> M_b = Exp(g_b) / 256
                 J_b = mix32(g_b ^ ARGMIN_SALT) >> 24

``mix32`` uses the constants of C. Wellons' low-bias 32-bit integer hash
(hash-prospector). The Triton and numba kernels mirror these functions; the
tests pin them to the versions here.
"""

from __future__ import annotations

import numpy as np
import torch

MIX_MULT_1 = 0x21F0AAAD
MIX_MULT_2 = 0xD35A2D97
TOKEN_MULT = 0x9E3779B9  # 2**32 / golden ratio, odd
ROW_SALT = 0x243F6A88  # hex digits of pi, as nothing-up-my-sleeve salts
BLOCK_SALT = 0x85A308D3
ARGMIN_SALT = 0x13198A2E
MASK32 = 0xFFFFFFFF
NOISE_BLOCK = 256  # tokens per noise block (a power of two)
NOISE_BLOCK_SHIFT = 8

# The two scales of w = (float(h >> 8) + (float(h & 0xFF) + 0.5) * W_LOW_SCALE) * W_HIGH_SCALE.
# h >> 8 has 24 bits, an fp32 significand, and W_HIGH_SCALE maps it onto [0, 1);
# W_LOW_SCALE puts the low byte (+ 0.5, the middle of the hash's 2**-32 interval)
# 8 bits below it. Powers of two, so both products are exact in fp32 and the
# addition is the one rounding: every IEEE backend gets the same bits.
W_LOW_SCALE = 2.0**-8
W_HIGH_SCALE = 2.0**-24
# Largest fp32 below 1, one high-part step below it: keeps E = -log1p(-w) finite (<= 24 ln 2).
W_MAX = 1.0 - W_HIGH_SCALE
# Bounds of Exp(h) over all hashes: [-log1p(-2**-33), -log(2**-24) = 24 ln 2].
EXP_MIN = 2.0**-33
EXP_MAX = 16.6355324


# ---------------------------------------------------------------- numpy (uint32)


def mix32_np(x: np.ndarray) -> np.ndarray:
    """``mix32`` on a uint32 array (numpy wraps uint32 arithmetic modulo 2**32)."""
    x = np.asarray(x, dtype=np.uint32)
    with np.errstate(over="ignore"):  # wrap-around is the point (numpy warns on scalars)
        x = x ^ (x >> np.uint32(16))
        x = x * np.uint32(MIX_MULT_1)
        x = x ^ (x >> np.uint32(15))
        x = x * np.uint32(MIX_MULT_2)
        return x ^ (x >> np.uint32(15))


def _split64_np(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(v, dtype=np.int64).astype(np.uint64)
    return (u & np.uint64(MASK32)).astype(np.uint32), (u >> np.uint64(32)).astype(np.uint32)


def row_key_np(seeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per-row 32-bit key of (seed, position); int64 inputs, uint32 output."""
    s_lo, s_hi = _split64_np(seeds)
    p_lo, p_hi = _split64_np(positions)
    k = mix32_np(np.uint32(ROW_SALT) ^ s_lo)
    k = mix32_np(k ^ s_hi)
    k = mix32_np(k ^ p_lo)
    return mix32_np(k ^ p_hi)


def token_hash_np(row_keys: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """32-bit hash of (row key, token id); broadcasts, uint32 output."""
    t = np.asarray(token_ids).astype(np.uint32)
    with np.errstate(over="ignore"):
        return mix32_np(np.asarray(row_keys, dtype=np.uint32) ^ (t * np.uint32(TOKEN_MULT)))


def uniform_np(h: np.ndarray) -> np.ndarray:
    """fp32 ``w`` in (0, 1) from hashes (see module docstring)."""
    h = np.asarray(h, dtype=np.uint32)
    hi = (h >> np.uint32(8)).astype(np.float32)
    lo = (h & np.uint32(0xFF)).astype(np.float32) + np.float32(0.5)
    w = (hi + lo * np.float32(W_LOW_SCALE)) * np.float32(W_HIGH_SCALE)
    return np.minimum(w, np.float32(W_MAX))


def exponential_np(h: np.ndarray) -> np.ndarray:
    """fp32 Exp(1) variates ``-log1p(-w)`` from hashes (computed in fp64, rounded)."""
    return (-np.log1p(-uniform_np(h).astype(np.float64))).astype(np.float32)


def block_hash_np(row_keys: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """``g_b`` of (row key, block index); broadcasts, uint32 output."""
    k2 = mix32_np(np.asarray(row_keys, dtype=np.uint32) ^ np.uint32(BLOCK_SALT))
    return token_hash_np(k2, blocks)


def block_argmin_np(g: np.ndarray) -> np.ndarray:
    """``J_b``, the position of the block minimum, from block hashes."""
    return mix32_np(np.asarray(g, dtype=np.uint32) ^ np.uint32(ARGMIN_SALT)) >> np.uint32(24)


def race_times_np(seed: int, position: int, vocab_size: int) -> np.ndarray:
    """[V] fp32 race times E_i of one row (see the module docstring)."""
    key = row_key_np(np.int64(seed), np.int64(position))
    tokens = np.arange(vocab_size, dtype=np.int64)
    blocks = tokens >> NOISE_BLOCK_SHIFT
    g = block_hash_np(key, np.arange(blocks[-1] + 1))
    m = exponential_np(g) * np.float32(1.0 / NOISE_BLOCK)
    f = exponential_np(token_hash_np(key, tokens))
    at_min = (tokens & (NOISE_BLOCK - 1)) == block_argmin_np(g)[blocks]
    return np.where(at_min, m[blocks], m[blocks] + f)


# ------------------------------------------------ torch (int64 holding uint32 values)

# torch has no general uint32 arithmetic on CPU, so values in [0, 2**32) live in
# int64. Products are split into 16-bit halves so that no intermediate exceeds
# 2**48 and nothing relies on signed overflow.


def _mul32_t(x: torch.Tensor, c: int) -> torch.Tensor:
    lo = (x * (c & 0xFFFF)) & MASK32
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def mix32_torch(x: torch.Tensor) -> torch.Tensor:
    """``mix32`` on an int64 tensor holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32_t(x, MIX_MULT_1)
    x = x ^ (x >> 15)
    x = _mul32_t(x, MIX_MULT_2)
    return x ^ (x >> 15)


def row_key_torch(seeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Per-row key of int64 (seed, position), as int64 in [0, 2**32)."""
    seeds = seeds.to(torch.int64)
    positions = positions.to(torch.int64)
    k = mix32_torch((seeds & MASK32) ^ ROW_SALT)
    k = mix32_torch(k ^ ((seeds >> 32) & MASK32))
    k = mix32_torch(k ^ (positions & MASK32))
    return mix32_torch(k ^ ((positions >> 32) & MASK32))


def token_hash_torch(row_keys: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Hash of (row key, token id); broadcasts, int64 in [0, 2**32)."""
    return mix32_torch(row_keys ^ _mul32_t(token_ids.to(torch.int64), TOKEN_MULT))


def uniform_torch(h: torch.Tensor) -> torch.Tensor:
    """fp32 ``w`` in (0, 1) from hashes held in int64."""
    hi = (h >> 8).to(torch.float32)
    lo = (h & 0xFF).to(torch.float32) + 0.5
    w = (hi + lo * W_LOW_SCALE) * W_HIGH_SCALE
    return torch.clamp(w, max=W_MAX)


def exponential_torch(h: torch.Tensor) -> torch.Tensor:
    """fp32 Exp(1) variates ``-log1p(-w)`` from hashes held in int64."""
    return -torch.log1p(-uniform_torch(h))


def race_times(
    seeds: torch.Tensor, positions: torch.Tensor, vocab_size: int, device=None
) -> torch.Tensor:
    """[B, V] fp32 race times E for every (row, token): the noise every backend draws."""
    keys = row_key_torch(seeds, positions).to(device or seeds.device)
    tokens = torch.arange(vocab_size, dtype=torch.int64, device=keys.device)
    blocks = tokens >> NOISE_BLOCK_SHIFT
    g = token_hash_torch(mix32_torch(keys ^ BLOCK_SALT)[:, None], torch.unique(blocks)[None, :])
    m = (exponential_torch(g) * (1.0 / NOISE_BLOCK))[:, blocks]
    argmin = (mix32_torch(g ^ ARGMIN_SALT) >> 24)[:, blocks]
    f = exponential_torch(token_hash_torch(keys[:, None], tokens[None, :]))
    return torch.where((tokens & (NOISE_BLOCK - 1)) == argmin, m, m + f)
