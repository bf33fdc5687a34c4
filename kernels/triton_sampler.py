"""Fused EAD sampler for GPUs: a streaming kernel and a per-row race kernel.

``ead_stream_kernel`` runs on a (row, split) grid and reads each logit
once. Per logit it does what the log-sum-exp needs and nothing else: the
max of its noise block, ``t = (x - m) * log2(e) / T``, ``2**t`` and a sum
(plus ``e * t`` for the entropy and a second ``2**t`` for the
base-temperature sum, each only when asked for, as compile-time flags). It
writes the online max and sums of its slice and the max of every noise
block of 256 tokens ([B, ceil(V / 256)] floats, 0.4% of the logits' bytes).

``ead_race_kernel`` (one program per row) merges the slices and runs the
exponential race of ``noise.py`` exactly, using the whole row's block
maxima: every race time of block b is at least ``M_b = Exp(g_b) / 256``, so
``(bmax_b - m) log2(e) / T - log2(M_b)`` bounds every race key of the block
(log2 domain, no division; one hash and two logarithms per block). It
visits blocks in decreasing order of that bound, ``RACE_BLOCKS`` at a
time, re-reads their logits and computes their tokens' keys with the
per-token hash; it stops when no unvisited
block's bound reaches the best key found. On LLM-like logits that is one
or two steps (the blocks of the few strong tokens); the per-token hash and
logarithm never run on the rest of the row. The skip is exact: a skipped
block's every key is below an achieved key (with slack for rounding), so the
token is the argmax over every token, the same as the torch reference's
except at floating-point near-ties.

The split length depends on V only, never on B, and the race visits blocks in
an order that depends only on the row: a row's outputs are bit-identical in
any batch (batch invariance).

Precision: the temperature arrives computed (``schedule.ead_tau``); the
kernels use IEEE division (``div_rn``) for ``log2(e) / T`` and the log-probs,
libdevice ``log`` for the race times and ``log Z``, and the approximate
``ex2`` (MUFU) for the ``2**t`` of the sums (relative error ~2**-22 per term).

Importing this module imports triton; ``ead_vllm.kernels.api`` does so only
when the triton backend is used. Set ``TRITON_INTERPRET=1`` before the import
to run it on CPU tensors (the tests do). ``triton_variants`` lists the
variants the launcher compiles, for the GPU-less compile checks of ``sass``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from ead_vllm.kernels import noise

NOISE_BLOCK = noise.NOISE_BLOCK
TILE_BLOCKS = 16  # noise blocks per streaming tile: 4,096 logits, 32 per thread at 4 warps
STREAM_WARPS = 4
RACE_WARPS = 8
RACE_BLOCKS = 8  # blocks the race kernel visits per step (2,048 logits, 8 per thread)
MAX_SPLITS = 64  # slices per row, at most; the race kernel merges them in a [64] vector
MIN_RACE_VECTOR = 1024  # block-bound vector of the race kernel: V <= 262,144 in one size
MAX_RACE_VECTOR = 2048  # V <= 524,288; larger vocabularies go to the torch reference
MAX_VOCAB = MAX_RACE_VECTOR * NOISE_BLOCK

# noise.py constants, as compile-time constants of the kernels.
_MIX_MULT_1 = tl.constexpr(noise.MIX_MULT_1)
_MIX_MULT_2 = tl.constexpr(noise.MIX_MULT_2)
_TOKEN_MULT = tl.constexpr(noise.TOKEN_MULT)
_ROW_SALT = tl.constexpr(noise.ROW_SALT)
_BLOCK_SALT = tl.constexpr(noise.BLOCK_SALT)
_ARGMIN_SALT = tl.constexpr(noise.ARGMIN_SALT)
_NB = tl.constexpr(noise.NOISE_BLOCK)
_NB_LOG2 = tl.constexpr(float(noise.NOISE_BLOCK_SHIFT))
_INV_NB = tl.constexpr(1.0 / noise.NOISE_BLOCK)
_W_MAX = tl.constexpr(noise.W_MAX)
_W_LOW_SCALE = tl.constexpr(noise.W_LOW_SCALE)
_W_HIGH_SCALE = tl.constexpr(noise.W_HIGH_SCALE)
_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)
_NEG_INF = tl.constexpr(float("-inf"))
_BIG_TOKEN = tl.constexpr(2**31 - 1)
# The race stops when no unvisited block's bound reaches best - slack, slack =
# _SLACK_ABS + |best| * _SLACK_REL (log2 units): keys and bounds round
# differently (~1e-6 relative), and a block must not be skipped on rounding alone.
_SLACK_ABS = tl.constexpr(2.0**-8)
_SLACK_REL = tl.constexpr(2.0**-12)


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
    # Exact fp32 steps except one rounding (noise.py): the same bits as numpy.
    hi = (h >> 8).to(tl.int32).to(tl.float32)
    lo = (h & 0xFF).to(tl.int32).to(tl.float32) + 0.5
    w = (hi + lo * _W_LOW_SCALE) * _W_HIGH_SCALE
    return tl.minimum(w, _W_MAX)


@triton.jit
def _race_time(w):
    # -log1p(-w) with relative accuracy near w = 0, where the race is won:
    # 2 atanh(w / (2 - w)) as a series for w <= 1/2 (remainder < 1e-9 relative),
    # else -log(1 - w) (1 - w is exact there and its log is far from 0).
    s = tl.math.div_rn(w, 2.0 - w)
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


# ------------------------------------------------------------------ streaming


@triton.jit
def _tile_stats(
    x, m, z, s, z0, scale, scale_b, NEED_BASE: tl.constexpr, NEED_ENTROPY: tl.constexpr
):
    """Fold one [TILE_BLOCKS, 256] fp32 tile into the running (m, z, s, z0).

    ``z = sum 2**t``, ``s = sum 2**t * t`` and ``z0`` (the same at the base
    temperature), t in log2 units relative to the running max ``m``. A NaN or
    +inf logit makes ``z`` NaN, which is how the race kernel spots bad rows.
    """
    bm = tl.max(x, axis=1)
    m_new = tl.maximum(m, tl.max(bm, axis=0))
    # m_new is -inf while every logit so far is masked: then x - m_ref = -inf and 2**t = 0.
    m_ref = tl.where(m_new == _NEG_INF, 0.0, m_new)
    moved = m_new != m
    # Clamped so that an empty history (m = -inf, z = 0) gives alpha = 0, not NaN.
    delta = tl.where(moved, tl.maximum((m - m_ref) * scale, -1e30), 0.0)
    alpha = tl.exp2(delta)
    gap = x - m_ref
    t = gap * scale
    e = tl.exp2(t)
    if NEED_ENTROPY:
        # e * t with t floored: masked logits (t = -inf, e = 0) add 0, not NaN.
        s = alpha * (s + delta * z) + tl.sum(tl.sum(e * tl.maximum(t, -127.0), axis=1), axis=0)
    z = alpha * z + tl.sum(tl.sum(e, axis=1), axis=0)
    if NEED_BASE:
        delta0 = tl.where(moved, tl.maximum((m - m_ref) * scale_b, -1e30), 0.0)
        z0 = tl.exp2(delta0) * z0 + tl.sum(tl.sum(tl.exp2(gap * scale_b), axis=1), axis=0)
    return bm, m_new, z, s, z0


# Ints that vary with the batch are not specialised (Triton would otherwise compile
# new variants for B = 1 or B % 16 == 0, a stall on the first such batch).
@triton.jit(do_not_specialize=["n_rows", "num_splits", "tiles_per_split", "n_blocks"])
def ead_stream_kernel(
    # [n_rows, vocab] fp32/bf16/fp16 logits, row stride `stride_row` (vLLM may pad
    # rows), unit column stride (the entry points copy otherwise): vectorised loads.
    logits_ptr,
    stride_row,
    vocab,
    # [n_rows] fp32 effective temperature T (ead_tau * base, computed once by the
    # caller: no kernel evaluates the schedule).
    temp_ptr,
    # [n_rows] fp32 base temperature; read only when NEED_BASE.
    base_ptr,
    # Output, [4, n_rows, num_splits] fp32 planes m, z, s, z0 of each slice: the race
    # kernel loads each quantity of a row as one [SPLITS] vector. Planes 2 and 3 are
    # written only when NEED_ENTROPY / NEED_BASE (and read only then).
    part_ptr,
    # Output, [n_rows, n_blocks] fp32 max logit of each noise block, row stride
    # n_blocks: lets the race kernel bound a whole block without re-reading it.
    bmax_ptr,
    n_rows,
    num_splits,
    tiles_per_split,
    n_blocks,
    TILE_BLOCKS: tl.constexpr,
    NEED_BASE: tl.constexpr,
    NEED_ENTROPY: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    scale = tl.math.div_rn(_LOG2E, tl.load(temp_ptr + row))
    scale_b = 0.0
    if NEED_BASE:
        scale_b = tl.math.div_rn(_LOG2E, tl.load(base_ptr + row))
    row_ptr = logits_ptr + row.to(tl.int64) * stride_row
    bmax_row = bmax_ptr + row.to(tl.int64) * n_blocks
    TILE: tl.constexpr = TILE_BLOCKS * _NB
    jb = tl.arange(0, TILE_BLOCKS)
    offs = jb[:, None] * _NB + tl.arange(0, _NB)[None, :]

    m = tl.full((), _NEG_INF, tl.float32)
    z = tl.zeros((), tl.float32)
    s = tl.zeros((), tl.float32)
    z0 = tl.zeros((), tl.float32)
    first = split * tiles_per_split
    end = tl.minimum(first + tiles_per_split, tl.cdiv(vocab, TILE))
    full_end = tl.minimum(end, vocab // TILE)
    # Full tiles: unmasked loads (no predicate or fill value per logit).
    for tile in range(first, full_end):
        x = tl.load(row_ptr + tile * TILE + offs).to(tl.float32)
        bm, m, z, s, z0 = _tile_stats(x, m, z, s, z0, scale, scale_b, NEED_BASE, NEED_ENTROPY)
        tl.store(bmax_row + tile * TILE_BLOCKS + jb, bm)
    if full_end < end:  # the row's last, partial tile
        at = full_end * TILE + offs
        x = tl.load(row_ptr + at, mask=at < vocab, other=_NEG_INF).to(tl.float32)
        bm, m, z, s, z0 = _tile_stats(x, m, z, s, z0, scale, scale_b, NEED_BASE, NEED_ENTROPY)
        blk = full_end * TILE_BLOCKS + jb
        tl.store(bmax_row + blk, bm, mask=blk < n_blocks)

    out = row * num_splits + split
    plane = n_rows * num_splits
    tl.store(part_ptr + out, m)
    tl.store(part_ptr + plane + out, z)
    if NEED_ENTROPY:
        tl.store(part_ptr + 2 * plane + out, s)
    if NEED_BASE:
        tl.store(part_ptr + 3 * plane + out, z0)


# ------------------------------------------------------------------ race and merge


@triton.jit(do_not_specialize=["n_rows", "num_splits", "n_blocks", "need_base", "need_entropy"])
def ead_race_kernel(
    # The stream kernel's logits; only the visited blocks are re-read (plus the token's logit).
    logits_ptr,
    stride_row,
    vocab,
    # [n_rows] int64 positions and seeds, the noise key (hashed as two 32-bit halves
    # each, as noise.py does): a row's noise depends on its own key, never on the batch.
    pos_ptr,
    seed_ptr,
    # [n_rows] fp32 effective and base temperatures, as the stream kernel read them.
    temp_ptr,
    base_ptr,
    # The stream kernel's outputs: [4, n_rows, num_splits] slice partials and
    # [n_rows, n_blocks] block maxima.
    part_ptr,
    bmax_ptr,
    n_rows,
    num_splits,
    n_blocks,
    # [n_rows] int64 token (0 for a row with NaN/+inf or all -inf logits) and fp32
    # log-probability at T (NaN for such a row).
    out_tok_ptr,
    out_lp_ptr,
    # [n_rows] fp32 base log-probability and entropy (nats): written only when
    # need_base / need_entropy (ead_sample_triton returns None in their place otherwise).
    out_blp_ptr,
    out_h_ptr,
    # [n_rows] int32 blocks the race re-read: the cost model's input (race_visits).
    out_visits_ptr,
    need_base,
    need_entropy,
    SPLITS: tl.constexpr,
    NBLK: tl.constexpr,
    RACE_BLOCKS: tl.constexpr,
):
    row = tl.program_id(0)
    temp = tl.load(temp_ptr + row)
    scale = tl.math.div_rn(_LOG2E, temp)
    row_ptr = logits_ptr + row.to(tl.int64) * stride_row

    # Merge the slices (log2 units relative to the row max m).
    j = tl.arange(0, SPLITS)
    live_split = j < num_splits
    plane = n_rows * num_splits
    at = row * num_splits + j
    m_s = tl.load(part_ptr + at, mask=live_split, other=_NEG_INF)
    z_s = tl.load(part_ptr + plane + at, mask=live_split, other=0.0)
    m = tl.max(m_s, axis=0)
    live = m_s > _NEG_INF
    d = tl.where(live, (m_s - m) * scale, 0.0)
    w_s = tl.where(live, tl.exp2(d), 0.0)
    big_z = tl.sum(w_s * z_s, axis=0)
    # NaN or +inf anywhere makes some z (hence big_z) NaN; all -inf leaves m = -inf.
    good = (big_z == big_z) & (m > _NEG_INF) & (m < float("inf"))

    # Block bounds: every race time of block b is >= M_b = Exp(g_b) / 256, so
    # key_i = (x_i - m) log2(e) / T - log2(E_i) <= (bmax_b - m) * scale - log2(M_b).
    key = _row_key(tl.load(seed_ptr + row), tl.load(pos_ptr + row))
    block_key = _mix32(key ^ _BLOCK_SALT)
    b = tl.arange(0, NBLK)
    bmax = tl.load(bmax_ptr + row.to(tl.int64) * n_blocks + b, mask=b < n_blocks, other=_NEG_INF)
    g = _mix32(block_key ^ (b.to(tl.uint32) * _TOKEN_MULT))
    bound = (bmax - m) * scale + (_NB_LOG2 - tl.log(_race_time(_uniform(g))) * _LOG2E)
    bound = tl.where(good, tl.where(bmax > _NEG_INF, bound, _NEG_INF), _NEG_INF)

    k = tl.arange(0, RACE_BLOCKS)
    jt = tl.arange(0, _NB)
    best = tl.full((), _NEG_INF, tl.float32)
    best_tok = tl.zeros((), tl.int32)
    visits = tl.zeros((), tl.int32)
    thr = tl.full((), _NEG_INF, tl.float32)
    while tl.max(bound, axis=0) > thr:
        # The RACE_BLOCKS unvisited blocks with the largest bounds (ties: lowest index).
        pick = tl.zeros((RACE_BLOCKS,), tl.int32)
        ok = tl.zeros((RACE_BLOCKS,), tl.int32)
        for i in tl.static_range(RACE_BLOCKS):
            top, arg = tl.max(bound, axis=0, return_indices=True)  # one reduction for both
            arg = arg.to(tl.int32)
            pick = tl.where(k == i, arg, pick)
            ok = tl.where(k == i, (top > thr).to(tl.int32), ok)
            bound = tl.where(b == arg, _NEG_INF, bound)
        tok = pick[:, None] * _NB + jt[None, :]
        inside = (ok[:, None] != 0) & (tok < vocab)
        x = tl.load(row_ptr + tok, mask=inside, other=_NEG_INF).to(tl.float32)
        # Race times (noise.py): E = M_b at the block minimum J_b, else M_b + F_i.
        gk = _mix32(block_key ^ (pick.to(tl.uint32) * _TOKEN_MULT))
        m_b = _race_time(_uniform(gk)) * _INV_NB
        j_b = (_mix32(gk ^ _ARGMIN_SALT) >> 24).to(tl.int32)
        f = _race_time(_uniform(_mix32(key ^ (tok.to(tl.uint32) * _TOKEN_MULT))))
        e_time = tl.where(jt[None, :] == j_b[:, None], m_b[:, None], m_b[:, None] + f)
        kval = tl.where(x > _NEG_INF, (x - m) * scale - tl.log(e_time) * _LOG2E, _NEG_INF)
        k_max = tl.max(tl.max(kval, axis=1), axis=0)
        k_tok = tl.min(tl.min(tl.where(kval == k_max, tok, _BIG_TOKEN), axis=1), axis=0)
        better = (k_max > best) | ((k_max == best) & (k_tok < best_tok))
        best = tl.where(better, k_max, best)
        best_tok = tl.where(better, k_tok, best_tok)
        thr = best - (_SLACK_ABS + tl.abs(best) * _SLACK_REL)
        visits += tl.sum(ok, axis=0)

    tok = tl.where(good, best_tok, 0)
    gap = tl.load(row_ptr + tok).to(tl.float32) - m
    log_z = tl.log(big_z)
    nan = float("nan")
    tl.store(out_tok_ptr + row, tok.to(tl.int64))
    tl.store(out_lp_ptr + row, tl.where(good, tl.math.div_rn(gap, temp) - log_z, nan))
    tl.store(out_visits_ptr + row, visits)
    if need_entropy:
        s_s = tl.load(part_ptr + 2 * plane + at, mask=live_split, other=0.0)
        big_s = tl.sum(tl.where(live, w_s * (s_s + d * z_s), 0.0), axis=0)
        ent = log_z - tl.math.div_rn(big_s * _LN2, big_z)
        tl.store(out_h_ptr + row, tl.where(good, ent, nan))
    if need_base:
        base = tl.load(base_ptr + row)
        scale_b = tl.math.div_rn(_LOG2E, base)
        z0_s = tl.load(part_ptr + 3 * plane + at, mask=live_split, other=0.0)
        big_z0 = tl.sum(tl.where(live, tl.exp2((m_s - m) * scale_b), 0.0) * z0_s, axis=0)
        blp = tl.math.div_rn(gap, base) - tl.log(big_z0)
        tl.store(out_blp_ptr + row, tl.where(good, blp, nan))


# ------------------------------------------------------------------ wrapper


class SplitConfig(NamedTuple):
    """Launch shape for a vocabulary size (a function of V only: batch invariance)."""

    tiles_per_split: int
    num_splits: int
    n_blocks: int  # noise blocks per row, ceil(V / 256)
    race_vector: int  # NBLK of the race kernel, a power of two >= n_blocks


def split_config(vocab: int, max_splits: int = MAX_SPLITS) -> SplitConfig:
    """Slices of ``TILE_BLOCKS * 256`` logits per row; at most ``max_splits`` slices."""
    tile = TILE_BLOCKS * NOISE_BLOCK
    n_tiles = triton.cdiv(vocab, tile)
    tiles_per_split = triton.cdiv(n_tiles, max_splits)
    n_blocks = triton.cdiv(vocab, NOISE_BLOCK)
    race_vector = max(MIN_RACE_VECTOR, triton.next_power_of_2(n_blocks))
    return SplitConfig(
        tiles_per_split, triton.cdiv(n_tiles, tiles_per_split), n_blocks, race_vector
    )


def race_warps(race_vector: int) -> int:
    """Warps of the race kernel (8 for every block-vector size).

    8 warps: a race step's [RACE_BLOCKS, 256] tile is 8 logits per thread. A
    [4096] vector (V > 2**19) needs more than 128 registers at 8 warps and
    spills at 16 (ptxas caps those at 64), hence ``MAX_RACE_VECTOR``."""
    return RACE_WARPS


class Workspace(NamedTuple):
    parts: torch.Tensor  # [4, B, num_splits] fp32: m, z, s, z0 of each slice
    bmax: torch.Tensor  # [B, n_blocks] fp32: max logit of each noise block
    visits: torch.Tensor  # [B] int32: blocks the race visited (for the cost model)


def _launch(
    logits: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    temperatures: torch.Tensor,
    base_temperature: torch.Tensor,
    need_base: bool,
    need_entropy: bool,
    max_splits: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Workspace]:
    n_rows, vocab = logits.shape
    dev = logits.device
    cfg = split_config(vocab, max_splits)
    ws = Workspace(
        torch.empty((4, n_rows, cfg.num_splits), dtype=torch.float32, device=dev),
        torch.empty((n_rows, cfg.n_blocks), dtype=torch.float32, device=dev),
        torch.zeros(n_rows, dtype=torch.int32, device=dev),
    )
    out_tok = torch.empty(n_rows, dtype=torch.int64, device=dev)
    out_lp, out_blp, out_h = (torch.empty(n_rows, dtype=torch.float32, device=dev) for _ in "abc")
    if n_rows == 0:
        return out_tok, out_lp, out_blp, out_h, ws
    ead_stream_kernel[(n_rows, cfg.num_splits)](
        logits,
        logits.stride(0),
        vocab,
        temperatures,
        base_temperature,
        ws.parts,
        ws.bmax,
        n_rows,
        cfg.num_splits,
        cfg.tiles_per_split,
        cfg.n_blocks,
        TILE_BLOCKS=TILE_BLOCKS,
        NEED_BASE=need_base,
        NEED_ENTROPY=need_entropy,
        num_warps=STREAM_WARPS,
    )
    ead_race_kernel[(n_rows,)](
        logits,
        logits.stride(0),
        vocab,
        positions,
        seeds,
        temperatures,
        base_temperature,
        ws.parts,
        ws.bmax,
        n_rows,
        cfg.num_splits,
        cfg.n_blocks,
        out_tok,
        out_lp,
        out_blp,
        out_h,
        ws.visits,
        int(need_base),
        int(need_entropy),
        SPLITS=MAX_SPLITS,
        NBLK=cfg.race_vector,
        RACE_BLOCKS=RACE_BLOCKS,
        num_warps=race_warps(cfg.race_vector),
    )
    return out_tok, out_lp, out_blp, out_h, ws


def ead_sample_triton(
    logits: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    temperatures: torch.Tensor,
    base_temperature: torch.Tensor,
    *,
    need_base: bool = True,
    need_entropy: bool = True,
    max_splits: int = MAX_SPLITS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Triton entry; inputs validated and broadcast to [B] by ``ead_sample``.

    ``logits`` [B, V] fp32/bf16/fp16, any row stride (a non-unit column stride
    is copied to contiguous first); ``positions``, ``seeds`` int64 [B];
    ``temperatures`` fp32 [B] (``schedule.effective_temperature``);
    ``base_temperature`` fp32 [B], all on the logits' device. Returns
    (token_ids, logprobs, base_logprobs or None, entropy or None).
    ``max_splits`` exists for tests (several tiles per program at small V).
    Vocabularies above ``MAX_VOCAB`` (2**19) use the torch reference.
    """
    if logits.shape[1] > MAX_VOCAB:
        from ead_vllm.kernels.reference import ead_sample_reference

        return ead_sample_reference(
            logits,
            positions,
            seeds,
            temperatures,
            base_temperature,
            need_base=need_base,
            need_entropy=need_entropy,
        )
    if logits.shape[0] > 0 and logits.stride(1) != 1:
        logits = logits.contiguous()
    tok, lp, blp, ent, _ = _launch(
        logits,
        positions,
        seeds,
        temperatures.to(torch.float32).contiguous(),
        base_temperature.to(torch.float32).contiguous(),
        bool(need_base),
        bool(need_entropy),
        max_splits,
    )
    return tok, lp, blp if need_base else None, ent if need_entropy else None


def race_visits(
    logits: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    temperatures: torch.Tensor,
) -> torch.Tensor:
    """[B] int32: noise blocks the race kernel re-read for each row (cost-model input)."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    temps = temperatures.to(torch.float32).contiguous()
    return _launch(logits, positions, seeds, temps, temps, False, False, MAX_SPLITS)[4].visits


@functools.cache
def _warmed(device: str, dtype: torch.dtype, vocab_size: int) -> bool:
    flags = (False, True)
    n = 1
    logits = torch.zeros((n, vocab_size), dtype=dtype, device=device)
    one = torch.ones(n, dtype=torch.int64, device=device)
    temps = torch.ones(n, dtype=torch.float32, device=device)
    for need_base in flags:
        for need_entropy in flags:
            _launch(logits, one, one, temps, temps, need_base, need_entropy, MAX_SPLITS)
    if logits.is_cuda:
        torch.cuda.synchronize(logits.device)
    return True


def prepare_triton(device: torch.device, dtype: torch.dtype, vocab_size: int) -> None:
    """Compile and load every kernel variant for (device, dtype, V): all four flag pairs.

    Triton compiles at the first launch of a variant (seconds) and caches the
    binary on disk; one tiny launch per variant moves that cost to start-up.
    Idempotent: a second call for the same triple returns at once.
    """
    _warmed(str(torch.device(device)), dtype, int(vocab_size))
