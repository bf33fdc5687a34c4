"""The Triton sampler's kernel variants, as targets to compile without a GPU.

``compile_variants`` lists what ``triton_sampler``'s launcher can launch for
[B, V] logits of a dtype: the streaming kernel for each (need_base,
need_entropy) pair and the race kernel for V's block-vector size, as
``sass.Variant`` objects that ``sass.compile_variant`` builds for
``GPUTarget("cuda", arch, 32)`` (``tests/kernels/test_kernels_compile.py``,
``benchmarks/kernel_sass.py``). Each signature is read from the kernel's own
parameter list (``sass.signature``); only the pointers that are not fp32 are
named here, and a name that no longer matches a kernel argument raises. The
compile-time constants and warps are the launcher's.

Importing this module imports torch and triton; compile in a process without
``TRITON_INTERPRET`` (the kernels must be ``triton.JITFunction`` objects).
"""

from __future__ import annotations

import torch
from ead_vllm.kernels.sass import Variant, pointer_attrs, signature
from ead_vllm.kernels.triton_sampler import (
    MAX_SPLITS,
    MAX_VOCAB,
    NOISE_BLOCK,
    RACE_BLOCKS,
    STREAM_WARPS,
    TILE_BLOCKS,
    ead_race_kernel,
    ead_stream_kernel,
    race_warps,
    split_config,
)

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

# One vocabulary per block-vector size the race kernel can be compiled for.
RACE_VECTOR_VOCABS = {1024: 151936, 2048: MAX_VOCAB}

# Pointer arguments that are not fp32 ("logits_ptr" takes the logits' dtype).
_RACE_POINTERS = {
    "pos_ptr": "*i64",
    "seed_ptr": "*i64",
    "out_tok_ptr": "*i64",
    "out_visits_ptr": "*i32",
}


def compile_variants(
    dtype: torch.dtype,
    vocab: int,
    *,
    flags: tuple[tuple[bool, bool], ...] = (
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ),
    race: bool = True,
) -> list[Variant]:
    """The kernel variants ``ead_sample_triton`` launches for [B, vocab] logits of ``dtype``.

    One streaming variant per (need_base, need_entropy) pair in ``flags`` and
    the race kernel for V's block-vector size, with the signature and the
    16-divisibility Triton's JIT gives contiguous, 16-aligned tensors.
    Returns ``sass.Variant`` objects (compile them with
    ``sass.compile_variant``, in a process without TRITON_INTERPRET).
    """
    cfg = split_config(vocab)
    ty = "*" + DTYPE_NAMES[dtype]
    ints_aligned = ["stride_row", "vocab"] if vocab % 16 == 0 else []
    stream_sig = signature(ead_stream_kernel, {"logits_ptr": ty})
    ptrs = [n for n, t in stream_sig.items() if t.startswith("*")]
    per_thread = TILE_BLOCKS * NOISE_BLOCK // (32 * STREAM_WARPS)
    out = []
    for need_base, need_entropy in flags:
        out.append(
            Variant(
                name=f"stream_{DTYPE_NAMES[dtype]}_base{int(need_base)}_ent{int(need_entropy)}",
                fn=ead_stream_kernel,
                signature=stream_sig,
                constexprs=_constexprs(
                    stream_sig,
                    TILE_BLOCKS=TILE_BLOCKS,
                    NEED_BASE=need_base,
                    NEED_ENTROPY=need_entropy,
                ),
                attrs=pointer_attrs(ead_stream_kernel, ptrs + ints_aligned),
                num_warps=STREAM_WARPS,
                elems_per_thread=per_thread,
                meta={
                    "dtype": DTYPE_NAMES[dtype],
                    "need_base": need_base,
                    "need_entropy": need_entropy,
                },
            )
        )
    if race:
        race_sig = signature(ead_race_kernel, {"logits_ptr": ty, **_RACE_POINTERS})
        ptrs = [n for n, t in race_sig.items() if t.startswith("*")]
        out.append(
            Variant(
                name=f"race_{DTYPE_NAMES[dtype]}_nblk{cfg.race_vector}",
                fn=ead_race_kernel,
                signature=race_sig,
                constexprs=_constexprs(
                    race_sig, SPLITS=MAX_SPLITS, NBLK=cfg.race_vector, RACE_BLOCKS=RACE_BLOCKS
                ),
                attrs=pointer_attrs(ead_race_kernel, ptrs + ints_aligned),
                num_warps=race_warps(cfg.race_vector),
                elems_per_thread=max(
                    1, RACE_BLOCKS * NOISE_BLOCK // (32 * race_warps(cfg.race_vector))
                ),
                meta={"dtype": DTYPE_NAMES[dtype], "race_vector": cfg.race_vector},
            )
        )
    return out


def _constexprs(sig: dict[str, str], **values: object) -> dict[str, object]:
    """The launcher's compile-time constants; raises unless they are exactly the kernel's."""
    want = [n for n, t in sig.items() if t == "constexpr"]
    if sorted(values) != sorted(want):
        raise ValueError(f"constexpr arguments {sorted(values)} != the kernel's {sorted(want)}")
    return values
