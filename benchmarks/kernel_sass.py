"""Cost model of the Triton EAD kernels from their machine code (no GPU needed).

    python benchmarks/kernel_sass.py --arch 90 --out DIR [--before REV]

Compiles the kernel variants the wrapper launches for [256, 151,936] logits
(fp32 and bf16; the streaming kernel with the vLLM glue's flags
``return_base_logprobs=False, return_entropy=False`` and with both True),
writes each one's SASS to ``DIR/<variant>.sass`` and writes ``DIR/report.json``.
``--before REV`` analyses instead the single-kernel design of
``kernels/triton_sampler.py`` at git revision REV (the pre-redesign kernel).

Method.

1. Machine code (``ead_vllm.kernels.sass``): registers and local memory from
   ``cuobjdump --dump-resource-usage``; the main loop is the innermost loop
   with the most ``LDG``; its shortest and longest forward paths, divided by
   the logits a thread handles per iteration, give per-element SASS
   instructions, MUFU operations and integer multiplies.
2. Paths. Redesigned kernels: a tile that cannot hold the winner costs the
   streaming kernel's loop only; a block that can (the race visits it) costs
   that plus the race kernel's loop. The share of visited blocks is measured
   by running the real kernels under ``TRITON_INTERPRET=1`` on ``--rows`` rows
   of each logits kind at V = 151,936 (``triton_sampler.race_visits``). The old
   kernel has one path: every token gets the full race.
3. Time on an H200 (132 SMs at 1.98 GHz; per SM and clock 128 thread
   instructions issued (4 schedulers x 32 lanes) and 16 MUFU results; HBM3e
   4.8 TB/s). A streaming kernel takes the largest of its issue time
   ``N I / (132 * 128 * f)``, its MUFU time ``N U / (132 * 16 * f)`` and its HBM
   time ``bytes / 4.8e12`` (N = B V logits; occupancy is assumed to hide
   latency, which the register bound of ``tests/kernels/test_kernels_compile.py``
   backs). A per-row kernel (race / combine) takes ``LAUNCH_US`` plus the
   larger of its issue time and its latency chain: waves of
   ``132 * CTAs per SM`` rows, each a prologue (one ``MEM_LATENCY_US`` for the
   partials and block maxima, loaded together, plus its instructions at one
   per clock) and, per race step, one dependent gather (``MEM_LATENCY_US``)
   plus the loop's instructions at one per clock. A wave lasts as long as its
   slowest row: the chain uses the most steps any measured row took (the
   issue time uses the mean). Every
   kernel adds ``LAUNCH_US`` (the gap between dependent launches). The HBM
   floor is one read of the logits.
   The constants are estimates, not measurements; ``benchmarks/gpu_check.py``
   prints this estimate beside the measured time.

Logits kinds: ``peaked`` (LLM-like: N(0, 2.5^2) bulk and 5 tokens at 14-20,
as the kernel tests) and ``normal`` (N(0, 3^2), the worst case for skipping);
temperatures from the EAD schedule (tau_max 1.5, tau_min 0.3, decay 400,
positions uniform in [0, 2000), base temperature 1).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# H200 SXM.
SMS = 132
CLOCK_HZ = 1.98e9
ISSUE_PER_SM = 128  # thread instructions per clock (4 schedulers x 32 lanes)
MUFU_PER_SM = 16  # special-function results per clock
HBM_BYTES_PER_S = 4.8e12
LAUNCH_US = 2.0
MEM_LATENCY_US = 0.8  # load-to-use latency of a dependent global load under load

BATCH, VOCAB = 256, 151936
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
SCHEDULE = {"tau_max": 1.5, "tau_min": 0.3, "decay": 400.0}


def hbm_floor_us(batch: int, vocab: int, dtype: str) -> float:
    """One read of the [batch, vocab] logits at HBM bandwidth, in microseconds."""
    return batch * vocab * DTYPE_BYTES[dtype] / HBM_BYTES_PER_S * 1e6


def streaming_us(n: int, per_elem: dict[str, float], bytes_total: float) -> dict[str, float]:
    """Issue, MUFU and HBM times (us) of a kernel that touches ``n`` logits."""
    issue = n * per_elem["instructions"] / (SMS * ISSUE_PER_SM * CLOCK_HZ) * 1e6
    mufu = n * per_elem["mufu"] / (SMS * MUFU_PER_SM * CLOCK_HZ) * 1e6
    hbm = bytes_total / HBM_BYTES_PER_S * 1e6
    return {"issue_us": issue, "mufu_us": mufu, "hbm_us": hbm, "time_us": max(issue, mufu, hbm)}


def per_row_us(
    batch: int,
    ctas_per_sm: int,
    steps: float,
    issue_instr_per_row: float,
    prologue_instr: float,
    step_instr: float,
) -> dict[str, float]:
    """Latency-chain model of a one-program-per-row kernel (see the module docstring).

    ``steps``: race steps of the slowest row of a wave; ``issue_instr_per_row``:
    mean thread instructions per row (all threads of its program).
    """
    waves = math.ceil(batch / max(1, SMS * ctas_per_sm))
    prologue = MEM_LATENCY_US + prologue_instr / CLOCK_HZ * 1e6
    step = MEM_LATENCY_US + step_instr / CLOCK_HZ * 1e6
    latency = waves * (prologue + steps * step)
    issue = batch * issue_instr_per_row / (SMS * ISSUE_PER_SM * CLOCK_HZ) * 1e6
    return {"latency_us": latency, "issue_us": issue, "time_us": LAUNCH_US + max(latency, issue)}


# ------------------------------------------------------------------ measuring visits


def measure_visits(rows: int, vocab: int, seed: int = 0) -> dict[str, Any]:
    """Race steps and visited blocks per row on each logits kind (run under the interpreter)."""
    import torch
    from ead_vllm.kernels import triton_sampler
    from ead_vllm.kernels.schedule import effective_temperature

    g = torch.Generator().manual_seed(seed)
    out = {}
    for kind in ("peaked", "normal"):
        if kind == "normal":
            logits = torch.randn(rows, vocab, generator=g) * 3
        else:
            logits = torch.randn(rows, vocab, generator=g) * 2.5
            top = torch.randint(0, vocab, (rows, 5), generator=g)
            logits.scatter_(1, top, 14 + 6 * torch.rand(rows, 5, generator=g))
        positions = torch.randint(0, 2000, (rows,), generator=g)
        seeds = torch.randint(-(2**62), 2**62, (rows,), generator=g)
        temps = effective_temperature(positions, **SCHEDULE, warmup=0, base_temperature=1.0)
        visits = triton_sampler.race_visits(logits, positions, seeds, temps).double()
        steps = torch.ceil(visits / triton_sampler.RACE_BLOCKS)
        n_blocks = triton_sampler.split_config(vocab).n_blocks
        out[kind] = {
            "rows": rows,
            "visited_blocks_mean": visits.mean().item(),
            "visited_blocks_max": visits.max().item(),
            "race_steps_mean": steps.mean().item(),
            "race_steps_max": steps.max().item(),
            "visited_fraction": visits.mean().item() / n_blocks,
            "temperatures": [round(t, 4) for t in temps.tolist()],
        }
    return out


def _visits_subprocess(rows: int) -> dict[str, Any]:
    here = str(Path(__file__).parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import kernel_sass; "
        f"print(json.dumps(kernel_sass.measure_visits({rows}, {VOCAB})))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ reports


def _compile(variants: list, arch: int, out_dir: Path) -> list[dict[str, Any]]:
    from ead_vllm.kernels import sass

    reports = []
    for v in variants:
        c = sass.compile_variant(v, arch)
        (out_dir / f"{v.name}.sass").write_text(c.sass)
        r = sass.loop_report(c)
        r["occupancy"] = sass.occupancy(c.registers, v.num_warps, 0)
        reports.append(r)
    return reports


def report_current(arch: int, out_dir: Path, rows: int) -> dict[str, Any]:
    import torch
    from ead_vllm.kernels import triton_sampler as ts
    from ead_vllm.kernels.triton_variants import compile_variants

    kernels = []
    for dtype in (torch.float32, torch.bfloat16):
        variants = compile_variants(dtype, VOCAB, flags=((False, False), (True, True)))
        kernels += _compile(variants, arch, out_dir)
    visits = _visits_subprocess(rows) if rows > 0 else {}
    n = BATCH * VOCAB
    cfg = ts.split_config(VOCAB)
    estimates = []
    for dtype in ("fp32", "bf16"):
        race = next(k for k in kernels if k["variant"].startswith(f"race_{dtype}"))
        race_loop = race["main_loop"]["longest_path_per_element"]
        race_elems = ts.RACE_BLOCKS * ts.NOISE_BLOCK
        loop_instr = race["main_loop"]["instructions"]
        prologue_instr = race["total_instructions"] - loop_instr
        threads = 32 * race["num_warps"]
        for flags in ("base0_ent0", "base1_ent1"):
            stream = next(k for k in kernels if k["variant"] == f"stream_{dtype}_{flags}")
            skip = stream["main_loop"]["shortest_path_per_element"]
            for kind, vis in visits.items():
                bytes_total = n * DTYPE_BYTES[dtype] + BATCH * cfg.n_blocks * 4
                t_stream = streaming_us(n, skip, bytes_total)
                t_stream["time_us"] += LAUNCH_US
                per_row = threads * (prologue_instr + vis["race_steps_mean"] * loop_instr)
                t_race = per_row_us(
                    BATCH,
                    race["occupancy"]["ctas_per_sm"],
                    vis["race_steps_max"],
                    per_row,
                    prologue_instr,
                    loop_instr,
                )
                winner = {key: skip[key] + race_loop[key] * 1.0 for key in ("instructions", "mufu")}
                floor = hbm_floor_us(BATCH, VOCAB, dtype)
                total = t_stream["time_us"] + t_race["time_us"]
                estimates.append(
                    {
                        "dtype": dtype,
                        "flags": flags,
                        "logits": kind,
                        "shape": [BATCH, VOCAB],
                        "skip_path_per_element": skip,
                        "winner_path_per_element": winner,
                        "race_elements_per_step": race_elems,
                        "visited_fraction": vis["visited_fraction"],
                        "race_steps_mean": vis["race_steps_mean"],
                        "race_steps_max": vis["race_steps_max"],
                        "stream_kernel": t_stream,
                        "race_kernel": t_race,
                        "estimated_us": total,
                        "hbm_floor_us": floor,
                        "x_floor": total / floor,
                    }
                )
    return {
        "design": "stream + race (kernels/triton_sampler.py)",
        "arch": f"sm_{arch}",
        "kernels": kernels,
        "visits": visits,
        "estimates": estimates,
    }


def _load_module(rev: str):
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:kernels/triton_sampler.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tmp = Path(tempfile.mkdtemp()) / "legacy_triton_sampler.py"
    tmp.write_text(src)
    spec = importlib.util.spec_from_file_location("legacy_triton_sampler", tmp)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def report_before(rev: str, arch: int, out_dir: Path) -> dict[str, Any]:
    """The pre-redesign single-pass kernel: every token gets its hash, race time and division."""
    from ead_vllm.kernels.sass import Variant, pointer_attrs

    mod = _load_module(rev)
    fn = mod._ead_partials_kernel
    kernels = []
    for dtype in ("fp32", "bf16"):
        sig = {}
        for name in fn.arg_names:
            sig[name] = "*fp32" if name.endswith("_ptr") else "i32"
        sig.update(
            logits_ptr=f"*{dtype}",
            pos_ptr="*i64",
            seed_ptr="*i64",
            warmup_ptr="*i64",
            part_tok_ptr="*i32",
            part_bad_ptr="*i32",
            stride_col="constexpr",  # Triton's JIT specialises a unit stride
            TILE="constexpr",
        )
        aligned = [n for n in fn.arg_names if n.endswith("_ptr")] + ["stride_row", "vocab"]
        tile = mod.split_config(VOCAB)[0]
        v = Variant(
            name=f"partials_{dtype}",
            fn=fn,
            signature=sig,
            constexprs={"TILE": tile, "stride_col": 1},
            attrs=pointer_attrs(fn, aligned),
            num_warps=4,
            elems_per_thread=tile // 128,
            meta={"dtype": dtype},
        )
        kernels += _compile([v], arch, out_dir)
    n = BATCH * VOCAB
    estimates = []
    for k in kernels:
        per = k["main_loop"]["shortest_path_per_element"]
        for kind in ("peaked", "normal"):  # one path: the logits do not matter
            t = streaming_us(n, per, n * DTYPE_BYTES[k["dtype"]])
            # + the combine kernel: one dependent load of the partials per row
            total = t["time_us"] + LAUNCH_US + (LAUNCH_US + MEM_LATENCY_US)
            floor = hbm_floor_us(BATCH, VOCAB, k["dtype"])
            estimates.append(
                {
                    "dtype": k["dtype"],
                    "logits": kind,
                    "shape": [BATCH, VOCAB],
                    "skip_path_per_element": per,
                    "winner_path_per_element": k["main_loop"]["longest_path_per_element"],
                    "partials_kernel": t,
                    "estimated_us": total,
                    "hbm_floor_us": floor,
                    "x_floor": total / floor,
                }
            )
    return {
        "design": f"single partials kernel + combine (kernels/triton_sampler.py at {rev})",
        "arch": f"sm_{arch}",
        "kernels": kernels,
        "estimates": estimates,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80, 90, 100")
    ap.add_argument("--out", type=Path, required=True, help="directory for SASS and report.json")
    ap.add_argument("--before", metavar="REV", help="analyse the old kernel at git revision REV")
    ap.add_argument("--rows", type=int, default=4, help="rows per logits kind for visit counts")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        ap.error("unset TRITON_INTERPRET: the kernels must be compiled, not interpreted")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.before:
        rep = report_before(args.before, args.arch, args.out)
    else:
        rep = report_current(args.arch, args.out, args.rows)
    rep["model"] = {
        "sms": SMS,
        "clock_hz": CLOCK_HZ,
        "issue_per_sm_per_clock": ISSUE_PER_SM,
        "mufu_per_sm_per_clock": MUFU_PER_SM,
        "hbm_bytes_per_s": HBM_BYTES_PER_S,
        "launch_us": LAUNCH_US,
        "mem_latency_us": MEM_LATENCY_US,
    }
    (args.out / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    for e in rep["estimates"]:
        skip = e["skip_path_per_element"]
        print(
            f"{e['dtype']:5} {e.get('flags', ''):11} {e['logits']:7} "
            f"skip {skip['instructions']:6.1f} instr {skip['mufu']:4.2f} MUFU  "
            f"est {e['estimated_us']:7.1f} us  floor {e['hbm_floor_us']:5.1f} us  "
            f"x{e['x_floor']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
