"""numba building blocks of the CPU sampler: JIT options, bit casts, min/max, ``2**t``.

The loops of ``cpu_scan`` vectorise only when free of Python semantics: no
divide-by-zero checks (``error_model="numpy"``), explicit fp32/uint32 types,
``llvm.maxnum``/``llvm.minnum`` for min and max, and a polynomial ``2**t``
instead of a libm call.

Used by ``cpu_noise``, ``cpu_scan`` and ``cpu_sampler``: ``JIT_OPTIONS`` and
``INLINE_OPTIONS`` (``@njit(**...)``), the scalar types ``F32``, ``I32``,
``U32``, and, inside jitted code only, ``fmax``, ``fmin``, ``exp2_neg`` with
its floor ``T_FLOOR``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# No "nnan"/"ninf": NaN checks must survive and -inf logits are legal (masked).
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# Kernel functions (cached on disk) and the helpers inlined into them.
JIT_OPTIONS = {"fastmath": _FASTMATH, "error_model": "numpy", "cache": True}
INLINE_OPTIONS = {"fastmath": _FASTMATH, "error_model": "numpy", "inline": "always"}

# Explicit casts keep numba from widening to int64/float64 (and keep uint32 wrapping).
F32 = np.float32
I32 = np.int32
U32 = np.uint32

# 2**f on [-0.5, 0.5] with p(0) = 1 exactly (so exp(0) = 1 and a one-token row
# has log-probability 0); relative error 1.9e-7 (weighted least squares).
_P0, _P1, _P2, _P3, _P4, _P5 = (
    F32(1.0),
    F32(0.6931470036506653),
    F32(0.24022242426872253),
    F32(0.05550733581185341),
    F32(0.009671512991189957),
    F32(0.0013264722656458616),
)
# Exponents are in log2 units, t = (x - m) * log2(e) / T, floored here: 2**t is
# then exactly 0 (see exp2_neg), and e * t stays finite for -inf logits.
T_FLOOR = F32(-127.0)


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


# fmax(a, b), fmin(a, b): fp32 max / min of two fp32 scalars as llvm.maxnum /
# llvm.minnum (vectorisable, unlike Python's max); jitted code only.
fmax = _minmax_intrinsic("maxnum")
fmin = _minmax_intrinsic("minnum")


@njit(**INLINE_OPTIONS)
def exp2_neg(t):
    """fp32 ``2**t`` of an fp32 exponent t in [T_FLOOR, 0] = [-127, 0] (log2 units).

    t is ``(x - m) * log2(e) / T`` with m the max, so ``2**t <= 1``; exactly 0
    below -126.5. Callers floor t at ``T_FLOOR`` (below -127.5 the exponent
    field would wrap).
    """
    n = I32(t - F32(0.5))  # round to nearest for t <= 0 (truncation toward 0)
    f = t - F32(n)
    p = _P5
    p = p * f + _P4
    p = p * f + _P3
    p = p * f + _P2
    p = p * f + _P1
    p = p * f + _P0
    return p * _i32_as_f32(I32(I32(n + I32(127)) << I32(23)))
