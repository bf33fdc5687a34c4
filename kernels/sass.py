"""Compile the Triton kernels for NVIDIA targets without a GPU and read their machine code.

Triton's own compiler and the ``ptxas``/``cuobjdump`` bundled in the triton
wheel build a kernel for a target (``GPUTarget("cuda", cc, 32)``) on any
machine; this module does that for ``Variant`` objects (``triton_variants``
lists the ones ``triton_sampler`` can launch) and extracts what the compile
checks and the cost model need: registers, local memory (spills), and
per-element instruction counts on each path through a kernel's main loop.

Method (used by ``tests/kernels/test_kernels_compile.py`` and ``benchmarks/kernel_sass.py``):

* ``cuobjdump --dump-resource-usage`` gives ``REG`` (registers per thread)
  and ``LOCAL``/``STACK`` (bytes of local memory per thread: spills and
  stack arrays; must be 0).
* ``cuobjdump --dump-sass`` gives the instructions. Loops are the ranges
  closed by a backward ``BRA``; the main loop of a kernel is the innermost
  loop holding the most global loads (``LDG``). Inside it, basic blocks are
  cut at branch targets and after branches; every path from the loop head to
  the back-edge that uses forward edges only is a pass through one tile
  (inner loops are counted once). The shortest and the longest such path
  give the two paths the report names; predicated instructions count (they
  take an issue slot either way).
* Per element = counts on the path / logits each thread handles per
  iteration (``Variant.elems_per_thread``). MUFU = special-function unit
  operations (``MUFU.*``); integer multiplies = ``IMAD``/``IMUL`` whose
  factors are both non-trivial (``IMAD.MOV``, ``IMAD.IADD``, ``IMAD.SHL``
  and products with ``RZ``, 1 or a power-of-two immediate are moves, adds
  and shifts; bf16 -> fp32 compiles to ``IMAD.U32 x, 0x10000``).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHS = (80, 90, 100)


@dataclass
class Variant:
    """One compile-time configuration of one kernel, as the wrapper would launch it."""

    name: str
    fn: Any  # a triton.JITFunction (not interpreted)
    signature: dict[str, str]
    constexprs: dict[str, Any]
    attrs: dict[tuple[int, ...], list]
    num_warps: int
    elems_per_thread: int  # logits per thread per main-loop iteration
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Compiled:
    variant: Variant
    arch: int
    registers: int
    local_bytes: int  # LOCAL + STACK per thread: spills
    shared_bytes: int
    sass: str


@dataclass
class Counts:
    instructions: int = 0
    mufu: int = 0
    int_mul: int = 0
    ldg: int = 0

    def add(self, other: Counts) -> Counts:
        return Counts(
            self.instructions + other.instructions,
            self.mufu + other.mufu,
            self.int_mul + other.int_mul,
            self.ldg + other.ldg,
        )

    def per(self, n: int) -> dict[str, float]:
        return {
            "instructions": self.instructions / n,
            "mufu": self.mufu / n,
            "int_mul": self.int_mul / n,
            "ldg": self.ldg / n,
        }


def tool(name: str) -> Path:
    """Path of a binary bundled in the triton wheel (``ptxas``, ``cuobjdump``)."""
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def pointer_attrs(fn: Any, aligned: list[str]) -> dict[tuple[int, ...], list]:
    """``tt.divisibility = 16`` for the named arguments, as Triton's JIT specialises them."""
    return {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}


def signature(fn: Any, pointers: dict[str, str]) -> dict[str, str]:
    """Triton signature of ``fn`` read from its own parameters, in order.

    A ``tl.constexpr`` parameter is ``"constexpr"``, a ``*_ptr`` parameter
    ``pointers[name]`` or ``"*fp32"``, any other ``"i32"`` (sizes and strides
    below 2**31, as Triton's JIT types them). A name in ``pointers`` that is
    not a pointer parameter of ``fn`` raises, so a renamed argument cannot keep
    a stale type.
    """
    _require_compilable(fn)
    ptrs = {p.name for p in fn.params if not p.is_constexpr and p.name.endswith("_ptr")}
    stale = sorted(set(pointers) - ptrs)
    if stale:
        raise ValueError(f"{fn.__name__} has no pointer argument {stale}")
    return {
        p.name: "constexpr"
        if p.is_constexpr
        else pointers.get(p.name, "*fp32")
        if p.name in ptrs
        else "i32"
        for p in fn.params
    }


def _require_compilable(fn: Any) -> None:
    if type(fn).__name__ == "InterpretedFunction":
        raise RuntimeError("kernels were decorated under TRITON_INTERPRET=1: cannot compile them")


def compile_variant(v: Variant, arch: int) -> Compiled:
    """Compile ``v`` for sm_<arch> with Triton and ptxas; raises on a compile error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    _require_compilable(v.fn)
    src = ASTSource(v.fn, v.signature, v.constexprs, v.attrs)
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": v.num_warps})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(k.asm["cubin"])
        usage = _run(tool("cuobjdump"), "--dump-resource-usage", str(cubin))
        sass = _run(tool("cuobjdump"), "--dump-sass", str(cubin))
    regs = _field(usage, "REG")
    local = _field(usage, "LOCAL") + _field(usage, "STACK")
    return Compiled(v, arch, regs, local, _field(usage, "SHARED"), sass)


def _run(*cmd: Any) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout


def _field(usage: str, name: str) -> int:
    m = re.search(rf"\b{name}:(\d+)", usage)
    if m is None:
        raise ValueError(f"no {name} in cuobjdump resource usage:\n{usage}")
    return int(m.group(1))


def arch_supported(arch: int) -> bool:
    """Whether the bundled ptxas builds sm_<arch> (tries a trivial PTX module)."""
    version = "8.0" if arch < 100 else "8.6"  # sm_100 needs PTX ISA 8.6
    ptx = (
        f".version {version}\n.target sm_{arch}\n.address_size 64\n.visible .entry k() {{ ret; }}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        for name in ("ptxas", "ptxas-blackwell"):
            exe = tool(name)
            if not exe.exists():
                continue
            arch_name = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
            out = Path(tmp) / "k.cubin"
            r = subprocess.run(
                [str(exe), f"--gpu-name={arch_name}", str(src), "-o", str(out)],
                capture_output=True,
                text=True,
                env={**os.environ},
            )
            if r.returncode == 0:
                return True
    return False


# ------------------------------------------------------------------ SASS analysis

_LINE = re.compile(
    r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:(@!?U?P[0-9T]+)\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);"
)


@dataclass
class Instr:
    addr: int
    pred: str | None
    opcode: str
    operands: str

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


def parse_sass(text: str) -> list[Instr]:
    """Instructions of the first function in a ``cuobjdump --dump-sass`` listing."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append(Instr(int(m.group(1), 16), m.group(2), m.group(3), m.group(4).strip()))
    return out


def _branch_target(ins: Instr) -> int | None:
    if ins.base != "BRA":
        return None
    m = re.search(r"0x([0-9a-f]+)", ins.operands)
    return int(m.group(1), 16) if m else None


def is_int_mul(ins: Instr) -> bool:
    """IMAD/IMUL with two non-trivial factors (not a move, add or shift in disguise)."""
    if ins.base not in ("IMAD", "IMUL"):
        return False
    mods = set(ins.opcode.split(".")[1:])
    if mods & {"MOV", "IADD", "SHL", "X"}:
        return False
    ops = [o.strip() for o in ins.operands.split(",")]
    factors = ops[1:3]
    if any(f in ("RZ", "0x1", "1") for f in factors):
        return False
    # A power-of-two immediate is a shift (bf16 -> fp32 is x * 0x10000).
    for f in factors:
        if f.startswith("0x"):
            v = int(f, 16)
            if v & (v - 1) == 0:
                return False
    return True


def counts(instrs: list[Instr]) -> Counts:
    return Counts(
        len(instrs),
        sum(i.base == "MUFU" for i in instrs),
        sum(is_int_mul(i) for i in instrs),
        sum(i.base == "LDG" for i in instrs),
    )


def loops(instrs: list[Instr]) -> list[tuple[int, int]]:
    """(head index, back-edge index) of every loop closed by a backward branch."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    out = []
    for i, ins in enumerate(instrs):
        t = _branch_target(ins)
        if t is not None and t <= ins.addr and t in index:
            out.append((index[t], i))
    return out


def main_loop(instrs: list[Instr]) -> tuple[int, int] | None:
    """The innermost loop with the most global loads (the streaming or race loop)."""
    best = None
    for lo, hi in loops(instrs):
        n_ldg = sum(instrs[j].base == "LDG" for j in range(lo, hi + 1))
        if n_ldg == 0:
            continue
        key = (n_ldg, -(hi - lo))
        if best is None or key > best[0]:
            best = (key, (lo, hi))
    return None if best is None else best[1]


def path_counts(instrs: list[Instr], loop: tuple[int, int]) -> tuple[Counts, Counts]:
    """(shortest, longest) forward path from the loop head to its back-edge, by instructions."""
    lo, hi = loop
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    starts = {lo}
    for j in range(lo, hi + 1):
        t = _branch_target(instrs[j])
        if t is not None:
            if j + 1 <= hi:
                starts.add(j + 1)
            if t in index and lo < index[t] <= hi:
                starts.add(index[t])
    starts = sorted(starts)
    blocks = [(s, (starts[n + 1] - 1) if n + 1 < len(starts) else hi) for n, s in enumerate(starts)]
    block_of = {s: n for n, (s, _) in enumerate(blocks)}
    inf = None
    short: list[Counts | None] = [inf] * len(blocks)
    long: list[Counts | None] = [inf] * len(blocks)
    short[0] = long[0] = Counts()
    result_short = result_long = None
    for n, (s, e) in enumerate(blocks):
        if short[n] is None:
            continue
        c = counts(instrs[s : e + 1])
        here_s, here_l = short[n].add(c), long[n].add(c)
        last = instrs[e]
        t = _branch_target(last)
        succ = []
        unconditional = last.base == "BRA" and last.pred is None
        if not unconditional and n + 1 < len(blocks):
            succ.append(n + 1)
        if t is not None and t in index and lo < index[t] <= hi and index[t] > e:
            succ.append(block_of[index[t]])
        if e == hi:  # the back-edge: one full pass through the tile
            if result_short is None or here_s.instructions < result_short.instructions:
                result_short = here_s
            if result_long is None or here_l.instructions > result_long.instructions:
                result_long = here_l
        for m in succ:
            if short[m] is None or here_s.instructions < short[m].instructions:
                short[m] = here_s
            if long[m] is None or here_l.instructions > long[m].instructions:
                long[m] = here_l
    if result_short is None:
        raise ValueError("no path reaches the loop's back-edge")
    return result_short, result_long


def loop_report(c: Compiled) -> dict[str, Any]:
    """Registers, spills and per-element counts on the main loop's two paths."""
    instrs = parse_sass(c.sass)
    loop = main_loop(instrs)
    out: dict[str, Any] = {
        "kernel": c.variant.fn.__name__,
        "variant": c.variant.name,
        "arch": f"sm_{c.arch}",
        "num_warps": c.variant.num_warps,
        "registers": c.registers,
        "local_bytes": c.local_bytes,
        "shared_bytes": c.shared_bytes,
        "total_instructions": len(instrs),
        "total_mufu": sum(i.base == "MUFU" for i in instrs),
        "elems_per_thread_per_iteration": c.variant.elems_per_thread,
        **c.variant.meta,
    }
    if loop is None:
        out["main_loop"] = None
        return out
    try:
        short, long = path_counts(instrs, loop)
    except ValueError as e:  # a loop shape the path walk does not handle
        out["main_loop"] = {"instructions": loop[1] - loop[0] + 1, "error": str(e)}
        return out
    n = c.variant.elems_per_thread
    out["main_loop"] = {
        "instructions": loop[1] - loop[0] + 1,
        "shortest_path_per_element": short.per(n),
        "longest_path_per_element": long.per(n),
    }
    return out


def occupancy(registers: int, num_warps: int, shared_bytes: int = 0) -> dict[str, int]:
    """Resident CTAs and warps per SM on sm_80..sm_100 (65,536 registers, 64 warps, 32 CTAs).

    Registers are allocated per warp in units of 256 (8 per thread).
    """
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = 65536 // (per_warp * num_warps)
    by_warps = 64 // num_warps
    by_smem = (228 * 1024) // shared_bytes if shared_bytes else 32
    ctas = max(0, min(by_regs, by_warps, by_smem, 32))
    return {"ctas_per_sm": ctas, "warps_per_sm": ctas * num_warps}
