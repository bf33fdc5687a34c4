"""Fused EAD sampler for GPUs: two small Triton kernels.

``_ead_partials_kernel`` runs on a (row, split) grid: each program streams
one slice of one row once, keeping an online max, the annealed and base
sums, the entropy sum and the best exponential-race key of its slice
(computing every token's race time: on a GPU the arithmetic is cheaper than
the branching the CPU kernel uses to skip it), and writes those seven
numbers to a small workspace. ``_ead_combine_kernel``
merges a row's slices in split order and writes the outputs. No [B, V]
tensor besides the logits is read or written.

The split length depends on V only (at most ``MAX_SPLITS`` slices), never on
B: a row is then reduced in the same order whatever batch it is in, which
keeps the outputs bit-identical under batching (batch invariance). Small
batches still get ``B * num_splits`` programs (50 for V = 151,936).

Importing this module imports triton; ``ead_vllm.kernels.api`` does so only
when the triton backend is used. Set ``TRITON_INTERPRET=1`` before the import
to run it on CPU tensors (the tests do).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from ead_vllm.kernels import noise

MAX_TILE = 1024
MAX_SPLITS = 64

# noise.py constants, as compile-time constants of the kernels.
_MIX_MULT_1 = tl.constexpr(noise.MIX_MULT_1)
_MIX_MULT_2 = tl.constexpr(noise.MIX_MULT_2)
_TOKEN_MULT = tl.constexpr(noise.TOKEN_MULT)
_ROW_SALT = tl.constexpr(noise.ROW_SALT)
_BLOCK_SALT = tl.constexpr(noise.BLOCK_SALT)
_ARGMIN_SALT = tl.constexpr(noise.ARGMIN_SALT)
_NB_SHIFT = tl.constexpr(noise.NOISE_BLOCK_SHIFT)
_NB_MASK = tl.constexpr(noise.NOISE_BLOCK - 1)
_INV_NB = tl.constexpr(1.0 / noise.NOISE_BLOCK)
_W_MAX = tl.constexpr(noise.W_MAX)


@triton.jit
def _mix32(x):
    x ^= x >> 16
    x *= _MIX_MULT_1
    x ^= x >> 15
    x *= _MIX_MULT_2
    x ^= x >> 15
    return x


@triton.jit
def _row_key(seed, pos):
    k = _mix32((seed & 0xFFFFFFFF).to(tl.uint32) ^ _ROW_SALT)
    k = _mix32(k ^ ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32))
    k = _mix32(k ^ (pos & 0xFFFFFFFF).to(tl.uint32))
    return _mix32(k ^ ((pos >> 32) & 0xFFFFFFFF).to(tl.uint32))


@triton.jit
def _uniform(h):
    hi = (h >> 8).to(tl.int32).to(tl.float32)
    lo = (h & 0xFF).to(tl.int32).to(tl.float32) + 0.5
    w = (hi + lo * 0.00390625) * 5.9604644775390625e-08
    return tl.minimum(w, _W_MAX)


@triton.jit
def _race_time(w):
    # -log1p(-w) with relative accuracy near w = 0, where the race is won:
    # 2 atanh(w / (2 - w)) as a series for w <= 1/2, else -log(1 - w)
    # (1 - w is exact there and its log is far from 0).
    s = w / (2.0 - w)
    s2 = s * s
    p = 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    series = 2.0 * s * p
    return tl.where(w <= 0.5, series, -tl.log(1.0 - w))


@triton.jit
def _temperature(pos_ptr, tau_max_ptr, tau_min_ptr, decay_ptr, warmup_ptr, base_ptr, row):
    # fp32, step for step as reference.effective_temperature.
    t = tl.load(pos_ptr + row).to(tl.float32)
    warm = tl.load(warmup_ptr + row).to(tl.float32)
    x = tl.minimum(tl.math.div_rn(t, tl.load(decay_ptr + row)), 60.0)
    tau = tl.maximum((1.0 + tl.load(tau_max_ptr + row)) - tl.exp(x), tl.load(tau_min_ptr + row))
    tau = tl.where(t < warm, 1.0, tau)
    base = tl.load(base_ptr + row)
    return base * tau, base


@triton.jit
def _ead_partials_kernel(
    logits_ptr,
    stride_row,
    stride_col,
    vocab,
    pos_ptr,
    seed_ptr,
    tau_max_ptr,
    tau_min_ptr,
    decay_ptr,
    warmup_ptr,
    base_ptr,
    part_m_ptr,
    part_z_ptr,
    part_s_ptr,
    part_z0_ptr,
    part_best_ptr,
    part_tok_ptr,
    part_bad_ptr,
    num_splits,
    tiles_per_split,
    TILE: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    temp, base = _temperature(
        pos_ptr, tau_max_ptr, tau_min_ptr, decay_ptr, warmup_ptr, base_ptr, row
    )
    inv_t = tl.math.div_rn(1.0, temp)
    inv_b = tl.math.div_rn(1.0, base)
    key = _row_key(tl.load(seed_ptr + row), tl.load(pos_ptr + row))
    block_key = _mix32(key ^ _BLOCK_SALT)
    row_ptr = logits_ptr + row.to(tl.int64) * stride_row

    neg_inf = float("-inf")
    m = tl.full((), neg_inf, tl.float32)
    z = tl.zeros((), tl.float32)
    s = tl.zeros((), tl.float32)
    z0 = tl.zeros((), tl.float32)
    best = tl.full((), -1.0, tl.float32)
    best_tok = tl.zeros((), tl.int32)
    n_bad = tl.zeros((), tl.int32)
    lo = split * tiles_per_split * TILE
    for i in range(0, tiles_per_split):
        offs = lo + i * TILE + tl.arange(0, TILE)
        in_row = offs < vocab
        x = tl.load(row_ptr + offs.to(tl.int64) * stride_col, mask=in_row, other=neg_inf)
        x = x.to(tl.float32)
        n_bad += tl.sum(((x != x) | (x == float("inf"))).to(tl.int32), axis=0)

        # Online rescaling when this tile raises the max (m may be -inf).
        m_new = tl.maximum(m, tl.max(x, axis=0))
        moved = m_new != m
        # Clamped so that an empty history (m = -inf, z = 0) gives 0, not NaN.
        delta = tl.where(moved, tl.maximum((m - m_new) * inv_t, -1e30), 0.0)
        alpha = tl.exp(delta)
        s = alpha * (s + delta * z)
        z = alpha * z
        z0 = tl.exp(tl.where(moved, tl.maximum((m - m_new) * inv_b, -1e30), 0.0)) * z0
        best = tl.where(best > 0.0, best * alpha, best)
        m = m_new

        valid = x > neg_inf
        gap = tl.where(valid, x - m, 0.0)
        d = gap * inv_t
        e = tl.where(valid, tl.exp(d), 0.0)
        z += tl.sum(e, axis=0)
        s += tl.sum(tl.where(e > 0.0, e * d, 0.0), axis=0)
        z0 += tl.sum(tl.where(valid, tl.exp(gap * inv_b), 0.0), axis=0)

        # Race times (noise.py): E = M_b at the block minimum J_b, else M_b + F_i.
        tok = offs.to(tl.uint32)
        g = _mix32(block_key ^ ((tok >> _NB_SHIFT) * _TOKEN_MULT))
        m_b = _race_time(_uniform(g)) * _INV_NB
        at_min = (tok & _NB_MASK) == (_mix32(g ^ _ARGMIN_SALT) >> 24)
        f = _race_time(_uniform(_mix32(key ^ (tok * _TOKEN_MULT))))
        k = tl.where(valid, e / tl.where(at_min, m_b, m_b + f), -1.0)
        k_max = tl.max(k, axis=0)
        k_arg = tl.argmax(k, axis=0, tie_break_left=True)
        better = k_max > best
        best = tl.where(better, k_max, best)
        best_tok = tl.where(better, (lo + i * TILE + k_arg).to(tl.int32), best_tok)

    out = row * num_splits + split
    tl.store(part_m_ptr + out, m)
    tl.store(part_z_ptr + out, z)
    tl.store(part_s_ptr + out, s)
    tl.store(part_z0_ptr + out, z0)
    tl.store(part_best_ptr + out, best)
    tl.store(part_tok_ptr + out, best_tok)
    tl.store(part_bad_ptr + out, n_bad)


@triton.jit
def _ead_combine_kernel(
    logits_ptr,
    stride_row,
    stride_col,
    pos_ptr,
    tau_max_ptr,
    tau_min_ptr,
    decay_ptr,
    warmup_ptr,
    base_ptr,
    part_m_ptr,
    part_z_ptr,
    part_s_ptr,
    part_z0_ptr,
    part_best_ptr,
    part_tok_ptr,
    part_bad_ptr,
    out_tok_ptr,
    out_lp_ptr,
    out_blp_ptr,
    out_t_ptr,
    out_h_ptr,
    num_splits,
    SPLITS: tl.constexpr,
):
    row = tl.program_id(0)
    temp, base = _temperature(
        pos_ptr, tau_max_ptr, tau_min_ptr, decay_ptr, warmup_ptr, base_ptr, row
    )
    inv_t = tl.math.div_rn(1.0, temp)
    inv_b = tl.math.div_rn(1.0, base)
    neg_inf = float("-inf")

    j = tl.arange(0, SPLITS)
    mask = j < num_splits
    at = row * num_splits + j
    m_s = tl.load(part_m_ptr + at, mask=mask, other=neg_inf)
    z_s = tl.load(part_z_ptr + at, mask=mask, other=0.0)
    s_s = tl.load(part_s_ptr + at, mask=mask, other=0.0)
    z0_s = tl.load(part_z0_ptr + at, mask=mask, other=0.0)
    best_s = tl.load(part_best_ptr + at, mask=mask, other=-1.0)
    tok_s = tl.load(part_tok_ptr + at, mask=mask, other=0)
    bad = tl.sum(tl.load(part_bad_ptr + at, mask=mask, other=0), axis=0) > 0

    m = tl.max(m_s, axis=0)
    live = m_s > neg_inf
    gap = tl.where(live, m_s - m, 0.0)
    delta = gap * inv_t
    scale = tl.where(live, tl.exp(delta), 0.0)
    big_z = tl.sum(scale * z_s, axis=0)
    big_s = tl.sum(tl.where(scale > 0.0, scale * (s_s + delta * z_s), 0.0), axis=0)
    big_z0 = tl.sum(tl.where(live, tl.exp(gap * inv_b), 0.0) * z0_s, axis=0)
    k = tl.where(live & (best_s > 0.0), best_s * scale, -1.0)
    winner = tl.argmax(k, axis=0, tie_break_left=True)
    tok = tl.sum(tl.where(j == winner, tok_s, 0), axis=0)

    degenerate = bad | (m == neg_inf) | (m != m)
    tok = tl.where(degenerate, 0, tok)
    x_tok = tl.load(logits_ptr + row.to(tl.int64) * stride_row + tok.to(tl.int64) * stride_col)
    d_tok = x_tok.to(tl.float32) - m
    log_z = tl.log(big_z)
    nan = float("nan")
    tl.store(out_tok_ptr + row, tok.to(tl.int64))
    tl.store(out_lp_ptr + row, tl.where(degenerate, nan, d_tok * inv_t - log_z))
    tl.store(out_blp_ptr + row, tl.where(degenerate, nan, d_tok * inv_b - tl.log(big_z0)))
    tl.store(out_t_ptr + row, temp)
    tl.store(out_h_ptr + row, tl.where(degenerate, nan, log_z - big_s / big_z))


def split_config(vocab: int, max_splits: int = MAX_SPLITS) -> tuple[int, int, int]:
    """(TILE, tiles_per_split, num_splits) for a vocabulary size; depends on V only."""
    tile = min(MAX_TILE, triton.next_power_of_2(max(vocab, 1)))
    n_tiles = triton.cdiv(vocab, tile)
    tiles_per_split = triton.cdiv(n_tiles, max_splits)
    return tile, tiles_per_split, triton.cdiv(n_tiles, tiles_per_split)


def ead_sample_triton(
    logits: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    tau_max: torch.Tensor,
    tau_min: torch.Tensor,
    decay: torch.Tensor,
    warmup: torch.Tensor,
    base_temperature: torch.Tensor,
    *,
    max_splits: int = MAX_SPLITS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton entry; inputs validated and broadcast to [B] by ``ead_sample``.

    ``logits`` [B, V] fp32/bf16/fp16, any strides; ``positions``, ``seeds``,
    ``warmup`` int64 [B]; ``tau_max``, ``tau_min``, ``decay``,
    ``base_temperature`` fp32 [B], all on the logits' device. Returns
    (token_ids, logprobs, base_logprobs, temperatures, entropy).
    ``max_splits`` exists for tests (several tiles per program at small V).
    """
    n_rows, vocab = logits.shape
    dev = logits.device
    out_tok = torch.empty(n_rows, dtype=torch.int64, device=dev)
    out = [torch.empty(n_rows, dtype=torch.float32, device=dev) for _ in range(4)]
    if n_rows == 0:
        return out_tok, *out
    tile, tiles_per_split, num_splits = split_config(vocab, max_splits)
    f32 = torch.empty((7, n_rows, num_splits), dtype=torch.float32, device=dev)
    part_m, part_z, part_s, part_z0, part_best = f32[0], f32[1], f32[2], f32[3], f32[4]
    part_tok, part_bad = f32[5].view(torch.int32), f32[6].view(torch.int32)
    sched = (positions, tau_max, tau_min, decay, warmup, base_temperature)
    parts = (part_m, part_z, part_s, part_z0, part_best, part_tok, part_bad)
    _ead_partials_kernel[(n_rows, num_splits)](
        logits,
        logits.stride(0),
        logits.stride(1),
        vocab,
        positions,
        seeds,
        *sched[1:],
        *parts,
        num_splits,
        tiles_per_split,
        TILE=tile,
        num_warps=4,
    )
    _ead_combine_kernel[(n_rows,)](
        logits,
        logits.stride(0),
        logits.stride(1),
        *sched,
        *parts,
        out_tok,
        *out,
        num_splits,
        SPLITS=triton.next_power_of_2(num_splits),
        num_warps=1,
    )
    return out_tok, *out
