"""Fused EAD sampler for CPUs: numba JIT, vectorised over vocabulary blocks.

Why numba: it is already a dependency, compiles at first use with no
toolchain, and its LLVM backend vectorises the block loops for the host
(AVX-512 here) once the loops are free of Python semantics (no
divide-by-zero checks, no negative-index wrap, explicit uint32 wrap-around,
``llvm.maxnum`` for the max). ``torch.compile`` was measured about 45x the
``amax`` floor on this job and a scalar numba loop about 140x (measured on this
project's 2-core CPU machine while designing the kernel).

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
from ead_vllm.kernels.cpu_intrinsics import F32, JIT_OPTIONS
from ead_vllm.kernels.cpu_noise import row_key
from ead_vllm.kernels.cpu_scan import BLOCK, scan_chunk
from numba import njit, prange

NUM_CHUNKS = 8  # chunks per row when V is large; depends on V only
MIN_CHUNK = 16 * BLOCK
_LOG2E64 = 1.4426950408889634
_LN2 = math.log(2.0)


@njit(parallel=True, **JIT_OPTIONS)
def _sample_kernel(
    flat,
    row_start,
    vocab,
    chunk,
    positions,
    seeds,
    temps,
    base_t,
    need_base,
    out_tok,
    out_lp,
    out_blp,
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
        temp = temps[r]
        scale_t = F32(np.float64(F32(1.0) / temp) * _LOG2E64)
        scale_b = F32(np.float64(F32(1.0) / base_t[r]) * _LOG2E64)
        lo = c * chunk
        hi = min(vocab, lo + chunk)
        row = flat[row_start[r] + lo : row_start[r] + hi]
        flags = np.empty(BLOCK, np.int32)
        block_max = np.empty((chunk + BLOCK - 1) // BLOCK, np.float32)
        key_bound = np.empty_like(block_max)
        key = row_key(seeds[r], positions[r])
        # Without base log-probs the base sum is never used: take the cheap branch.
        same = temp == base_t[r] or not need_base
        res = scan_chunk(row, lo, scale_t, scale_b, same, key, flags, block_max, key_bound)
        p_m[r, c], p_bad[r, c], p_z[r, c], p_s[r, c], p_z0[r, c], p_best[r, c], p_tok[r, c] = res

    for r in prange(n_rows):
        temp = temps[r]
        inv_t64 = np.float64(F32(1.0) / temp)
        inv_b64 = np.float64(F32(1.0) / base_t[r])
        m = F32(-np.inf)
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
    temperatures: torch.Tensor,
    base_temperature: torch.Tensor,
    *,
    need_base: bool = True,
    need_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """CPU kernel entry; inputs validated and broadcast to [B] by ``ead_sample``.

    ``logits`` [B, V] fp32 (bf16/fp16 are upcast) on CPU, any strides; ``positions``,
    ``seeds`` int64 [B] (the noise key); ``temperatures`` fp32 [B], the effective
    temperature from ``schedule.effective_temperature``; ``base_temperature``
    fp32 [B]. Returns (token_ids, logprobs, base_logprobs or None, entropy or
    None). Without ``need_base`` the second ``2**t`` per logit is skipped; the
    entropy sum costs one multiply-add per logit and is always accumulated.
    """
    n_rows, vocab = logits.shape
    out_tok = np.empty(n_rows, np.int64)
    out = [np.empty(n_rows, np.float32) for _ in range(3)]
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
            arr(temperatures, np.float32),
            arr(base_temperature, np.float32),
            bool(need_base),
            out_tok,
            out[0],
            out[1],
            out[2],
        )
    tok = torch.from_numpy(out_tok)
    lp, blp, ent = (torch.from_numpy(a) for a in out)
    return tok, lp, blp if need_base else None, ent if need_entropy else None


def prepare_cpu(vocab_size: int = 1024) -> None:
    """Compile (or load from numba's on-disk cache) the CPU kernel: one tiny call.

    Every kernel function is ``cache=True``, so a second process loads the
    machine code from ``__pycache__`` instead of compiling it (tens of
    seconds). bf16/fp16 logits are upcast, so one fp32 signature serves every
    dtype; ``vocab_size`` only sizes the warm-up call.
    """
    v = max(1, min(int(vocab_size), 4096))
    one = torch.ones(1, dtype=torch.int64)
    ead_sample_cpu(torch.zeros(1, v), one, one, torch.ones(1), torch.ones(1))


def num_threads() -> int:
    """Threads the CPU kernel uses (numba's setting)."""
    return numba.get_num_threads()
