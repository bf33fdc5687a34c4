"""The Triton kernels compile for real GPUs: sm_80, sm_90, sm_100, every dtype and variant.

No GPU is needed: Triton's compiler and the ptxas bundled in the triton wheel
build each variant ``triton_variants.compile_variants`` lists (the ones the
wrapper can launch) for each target the bundled ptxas knows, and
``cuobjdump`` reports registers and local memory. The compiles run in one
child process without TRITON_INTERPRET (this session's kernels are
decorated for the interpreter); Triton's on-disk cache makes reruns fast.

Bounds, from occupancy (65,536 registers and 64 warps per SM, 4-warp CTAs):

* streaming kernel <= 80 registers: >= 6 resident CTAs per SM, i.e. >= 48 KB
  of logits in flight per SM for bf16 (8 KB per CTA per tile), above the
  ~29 KB Little's law asks at 4.8 TB/s / 132 SMs x ~0.8 us load latency;
* race kernel (8 warps) <= 128 registers: >= 2 CTAs per SM, so 264 rows run
  at once (a B = 256 batch in one wave);
* no local memory at all (a spill on the hot loop costs a memory round trip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

STREAM_MAX_REGS = 80
RACE_MAX_REGS = 128

_CHILD = r"""
import json, sys
import torch
from ead_vllm.kernels import sass, triton_variants as tv
dtypes = (torch.float32, torch.bfloat16, torch.float16)
out = []
for arch in sass.ARCHS:
    if not sass.arch_supported(arch):
        out.append({"arch": arch, "supported": False})
        continue
    variants = []
    for dt in dtypes:
        variants += tv.compile_variants(dt, tv.RACE_VECTOR_VOCABS[1024])
    for nblk, vocab in tv.RACE_VECTOR_VOCABS.items():
        if nblk != 1024:  # larger block vectors: the race kernel only, fp32
            variants += tv.compile_variants(torch.float32, vocab, flags=())
    for v in variants:
        try:
            c = sass.compile_variant(v, arch)
        except Exception as e:  # reported, and the test fails on it
            out.append({"arch": arch, "variant": v.name, "error": repr(e)[:2000]})
            continue
        out.append({"arch": arch, "variant": v.name, "kernel": v.fn.__name__,
                    "registers": c.registers, "local_bytes": c.local_bytes})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def matrix() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    r = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_sm90_is_supported_and_every_variant_compiled(matrix):
    supported = {e["arch"] for e in matrix if e.get("supported", True)}
    assert 90 in supported and 80 in supported
    names = {e["variant"] for e in matrix if e["arch"] == 90 and "variant" in e}
    for dt in ("fp32", "bf16", "fp16"):
        for base in (0, 1):
            for ent in (0, 1):
                assert f"stream_{dt}_base{base}_ent{ent}" in names
        assert f"race_{dt}_nblk1024" in names
    assert "race_fp32_nblk2048" in names


def test_no_compile_errors(matrix):
    errors = [e for e in matrix if "error" in e]
    assert not errors, errors


def test_no_spills_and_registers_within_occupancy_bounds(matrix):
    compiled = [e for e in matrix if "registers" in e]
    assert compiled
    for e in compiled:
        assert e["local_bytes"] == 0, e
        bound = STREAM_MAX_REGS if e["kernel"] == "ead_stream_kernel" else RACE_MAX_REGS
        assert e["registers"] <= bound, e
