"""One-shot GPU check of the Triton EAD kernels: correctness, then timings against the cost model.

    python benchmarks/gpu_check.py --out DIR          # on a CUDA machine, < 5 min on one H200
    python benchmarks/gpu_check.py --dry-run --out DIR # anywhere: the cost-model table only

Needs only torch (CUDA build) and triton: no vLLM, no network, no install
(``ead_vllm.kernels`` is loaded from this checkout when it is not installed).

1. Correctness against the torch reference at V in {32,000, 151,936, 262,144},
   B in {1, 32, 256, 4,096}, fp32/bf16/fp16 (LLM-like logits): token agreement
   >= 99.9% of rows, log-probs at the kernel's tokens and entropy within 1e-4
   (1e-3 for the entropy at V >= 151,936: fp32 sums), temperatures bit-equal
   to ``ead_tau``'s. The reference runs in row chunks to bound its memory.
2. A chi-square test at V = 8 (20,000 draws per phase: warm-up, mid-anneal,
   floor; alpha = 1e-3).
3. Batch invariance (a row alone, shuffled, among strangers: bit-identical)
   and degenerate rows (NaN, +inf, all -inf: token 0 and NaN outputs).
4. CUDA-event timings (median of ``--iters``) of ``ead_sample`` with the vLLM
   glue's flags (no base log-probs, no entropy) and with both, against
   (a) a torch chain doing what vLLM's V1 GPU sampler does: divide by the
   temperature, softmax, exponential-race argmax, ``log_softmax`` for the
   token's log-prob; and (b) one read of the logits (``amax`` over V), the
   floor. Each row of the table carries the cost model's estimate
   (``benchmarks/kernel_sass.py``'s model with the per-element counts of
   ``--report``, default ``benchmarks/results/kernel_sass_after.json``).

Writes ``DIR/gpu_check.json`` and prints the table; exits 1 if a correctness
check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kernel_sass  # noqa: E402  (stdlib-only at import; the cost model)

VOCABS = (32000, 151936, 262144)
BATCHES = (1, 32, 256, 4096)
DTYPES = ("fp32", "bf16", "fp16")
SCHEDULE = {"tau_max": 1.5, "tau_min": 0.3, "decay": 400.0, "warmup": 10}
DEFAULT_REPORT = ROOT / "benchmarks" / "results" / "kernel_sass_after.json"
FLAG_SETS = {"base0_ent0": (False, False), "base1_ent1": (True, True)}


def load_kernels():
    """``ead_vllm.kernels``, installed or from this checkout's ``kernels/``."""
    try:
        import ead_vllm.kernels as k

        return k
    except ImportError:
        pass
    import types

    if "ead_vllm" not in sys.modules:
        pkg = types.ModuleType("ead_vllm")
        pkg.__path__ = [str(ROOT / "ead_vllm")]
        sys.modules["ead_vllm"] = pkg
    spec = importlib.util.spec_from_file_location(
        "ead_vllm.kernels",
        ROOT / "kernels" / "__init__.py",
        submodule_search_locations=[str(ROOT / "kernels")],
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ead_vllm.kernels"] = mod
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ cost model


def estimate_us(report: dict[str, Any], dtype: str, flags: str, kind: str, b: int, v: int) -> float:
    """Cost-model time (us) of ``ead_sample`` on [b, v] logits, from a kernel_sass report.

    Uses the report's per-element counts (fp16 takes bf16's: same bytes, one
    conversion each) and its measured race steps for ``kind``; the split and
    block counts are recomputed for ``v``.
    """
    key = "bf16" if dtype == "fp16" else dtype
    kernels = {k["variant"]: k for k in report["kernels"]}
    stream = kernels[f"stream_{key}_{flags}"]
    race = next(k for name, k in kernels.items() if name.startswith(f"race_{key}"))
    n = b * v
    n_blocks = -(-v // 256)
    skip = stream["main_loop"]["shortest_path_per_element"]
    t_stream = kernel_sass.streaming_us(
        n, skip, n * kernel_sass.DTYPE_BYTES[dtype] + b * n_blocks * 4
    )
    steps = report["visits"][kind]["race_steps_mean"]
    slowest = report["visits"][kind]["race_steps_max"]
    loop_instr = race["main_loop"]["instructions"]
    prologue = race["total_instructions"] - loop_instr
    threads = 32 * race["num_warps"]
    t_race = kernel_sass.per_row_us(
        b,
        race["occupancy"]["ctas_per_sm"],
        slowest,
        threads * (prologue + steps * loop_instr),
        prologue,
        loop_instr,
    )
    return t_stream["time_us"] + kernel_sass.LAUNCH_US + t_race["time_us"]


def timing_configs(quick: bool) -> list[tuple[str, int, int, str]]:
    vocabs = (151936,) if quick else VOCABS
    batches = (1, 256) if quick else BATCHES
    return [
        (d, b, v, kind)
        for d in ("fp32", "bf16")
        for v in vocabs
        for b in batches
        for kind in ("peaked", "normal")
    ]


# ------------------------------------------------------------------ inputs


def make_logits(kind: str, b: int, v: int, dtype, device, seed: int):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    if kind == "normal":
        x = torch.randn(b, v, generator=g, device=device) * 3
    else:
        x = torch.randn(b, v, generator=g, device=device) * 2.5
        top = torch.randint(0, v, (b, 5), generator=g, device=device)
        x.scatter_(1, top, 14 + 6 * torch.rand(b, 5, generator=g, device=device))
    return x.to(dtype)


def row_inputs(b: int, device, seed: int) -> dict[str, Any]:
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    return {
        "positions": torch.randint(0, 2000, (b,), generator=g).to(device),
        "seeds": torch.randint(-(2**62), 2**62, (b,), generator=g).to(device),
    }


# ------------------------------------------------------------------ checks


def check_correctness(k, device, quick: bool) -> list[dict[str, Any]]:
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    out = []
    for v in (151936,) if quick else VOCABS:
        for b in (1, 256) if quick else BATCHES:
            for name in DTYPES:
                logits = make_logits("peaked", b, v, dtypes[name], device, seed=b + v)
                kw = {**row_inputs(b, device, seed=b), **SCHEDULE}
                got = k.ead_sample(logits, backend="triton", **kw)
                chunk = max(1, (1 << 27) // v)  # ~0.5 GiB of fp32 per reference chunk
                ref_tok, lp_err, h_err = [], 0.0, 0.0
                for lo in range(0, b, chunk):
                    sl = slice(lo, lo + chunk)
                    ref = k.ead_sample(
                        logits[sl],
                        backend="torch",
                        positions=kw["positions"][sl],
                        seeds=kw["seeds"][sl],
                        **SCHEDULE,
                    )
                    ref_tok.append(ref.token_ids)
                    x = logits[sl].float()
                    logp = torch.log_softmax(x / got.temperatures[sl, None], -1)
                    lp = logp.gather(1, got.token_ids[sl, None])[:, 0]
                    lp_err = max(lp_err, (got.logprobs[sl] - lp).abs().max().item())
                    h_err = max(h_err, (got.entropy[sl] - ref.entropy).abs().max().item())
                agree = (got.token_ids == torch.cat(ref_tok)).double().mean().item()
                tau = k.ead_tau(
                    kw["positions"],
                    tau_max=SCHEDULE["tau_max"],
                    tau_min=SCHEDULE["tau_min"],
                    decay=SCHEDULE["decay"],
                    warmup=SCHEDULE["warmup"],
                )
                temps_ok = torch.equal(got.temperatures, tau)
                h_tol = 1e-3 if v >= 151936 else 1e-4
                ok = agree >= 0.999 and lp_err < 1e-4 and h_err < h_tol and temps_ok
                out.append(
                    {
                        "vocab": v,
                        "batch": b,
                        "dtype": name,
                        "token_agreement": agree,
                        "logprob_max_err": lp_err,
                        "entropy_max_err": h_err,
                        "temperatures_bit_equal": temps_ok,
                        "ok": ok,
                    }
                )
                print(
                    f"correct V={v:6} B={b:4} {name}: agree {agree:.4f} "
                    f"lp {lp_err:.1e} H {h_err:.1e} T {temps_ok} -> {'ok' if ok else 'FAIL'}"
                )
                del logits, got
    return out


def chi_square_pvalue(counts, probs) -> float:
    import torch

    n = counts.sum()
    expected = probs * n
    stat = ((counts - expected) ** 2 / expected).sum()
    dof = torch.tensor(float(len(counts) - 1), dtype=torch.float64)
    return torch.special.gammaincc(dof / 2, stat / 2).item()


def check_distribution(k, device) -> list[dict[str, Any]]:
    import torch

    n, vocab = 20000, 8
    sched = {"tau_max": 1.5, "tau_min": 0.4, "decay": 200.0, "warmup": 10}
    out = []
    for phase, pos in (("warmup", 3), ("mid_anneal", 40), ("floor", 10**6)):
        tau = 1.0 if pos < 10 else max(1 + 1.5 - math.exp(pos / 200.0), 0.4)
        temp = 0.9 * tau
        row = torch.arange(vocab, dtype=torch.float32, device=device) * 0.35 * temp
        logits = row.expand(n, vocab).contiguous()
        got = k.ead_sample(
            logits,
            positions=torch.full((n,), pos, device=device),
            seeds=torch.arange(n, device=device) * 7 + 1,
            base_temperature=0.9,
            backend="triton",
            **sched,
        )
        counts = torch.bincount(got.token_ids.cpu(), minlength=vocab).double()
        p = torch.softmax(row.double().cpu() / temp, -1)
        pv = chi_square_pvalue(counts, p)
        out.append({"phase": phase, "pvalue": pv, "ok": pv > 1e-3})
        print(f"chi-square {phase}: p = {pv:.3g}")
    return out


def check_invariance_and_degenerate(k, device) -> dict[str, Any]:
    import torch

    b, v = 64, 151936
    logits = make_logits("peaked", b, v, torch.bfloat16, device, seed=5)
    kw = {**row_inputs(b, device, seed=5), **SCHEDULE}
    full = k.ead_sample(logits, backend="triton", **kw)
    perm = torch.randperm(b, device=device)
    shuf = k.ead_sample(
        logits[perm],
        backend="triton",
        positions=kw["positions"][perm],
        seeds=kw["seeds"][perm],
        **SCHEDULE,
    )
    same = all(torch.equal(a[perm], s) for a, s in zip(full, shuf, strict=True))
    alone = k.ead_sample(
        logits[7:8],
        backend="triton",
        positions=kw["positions"][7:8],
        seeds=kw["seeds"][7:8],
        **SCHEDULE,
    )
    same_alone = all(torch.equal(a[7:8], s) for a, s in zip(full, alone, strict=True))
    bad = logits[:5].float().clone()
    bad[1] = float("-inf")
    bad[2, 1234] = float("nan")
    bad[3, 17] = float("inf")
    deg = k.ead_sample(
        bad, backend="triton", positions=kw["positions"][:5], seeds=kw["seeds"][:5], **SCHEDULE
    )
    flags = torch.tensor([False, True, True, True, False], device=device)
    deg_ok = bool((deg.token_ids[flags] == 0).all()) and bool(
        torch.isnan(deg.logprobs[flags]).all()
    )
    deg_ok = deg_ok and bool(torch.isfinite(deg.logprobs[~flags]).all())
    res = {
        "shuffled_bit_identical": same,
        "alone_bit_identical": same_alone,
        "degenerate_rows_ok": deg_ok,
        "ok": same and same_alone and deg_ok,
    }
    print(f"batch invariance: shuffled {same}, alone {same_alone}; degenerate rows {deg_ok}")
    return res


# ------------------------------------------------------------------ timings


def _time_us(fn, iters: int) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        z.record()
        z.synchronize()
        times.append(a.elapsed_time(z) * 1e3)
    return statistics.median(times)


def vllm_like_chain(logits, temperatures, generator):
    """What vLLM's V1 GPU sampler does for a temperature batch with log-probs."""
    import torch

    x = logits.float() / temperatures[:, None]
    probs = torch.softmax(x, -1)
    q = torch.empty_like(probs).exponential_(generator=generator)
    tok = probs.div(q).argmax(-1)
    lp = torch.log_softmax(x, -1).gather(1, tok[:, None])
    return tok, lp


def _time_case(k, logits, kw, temps, gen, iters: int) -> dict[str, float]:
    import torch

    row = {}
    for flags, (base, ent) in FLAG_SETS.items():
        row[f"ead_{flags}_us"] = _time_us(
            lambda base=base, ent=ent: k.ead_sample(
                logits,
                backend="triton",
                validate=False,
                return_base_logprobs=base,
                return_entropy=ent,
                **kw,
            ),
            iters,
        )
    row["vllm_chain_us"] = _time_us(lambda: vllm_like_chain(logits, temps, gen), iters)
    row["floor_us"] = _time_us(lambda: torch.amax(logits, dim=-1), iters)
    return row


def run_timings(k, device, report, quick: bool, iters: int) -> list[dict[str, Any]]:
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    gen = torch.Generator(device=device).manual_seed(0)
    sched = {n: SCHEDULE[n] for n in ("tau_max", "tau_min", "decay", "warmup")}
    out = []
    for dtype, b, v, kind in timing_configs(quick):
        logits = make_logits(kind, b, v, dtypes[dtype], device, seed=1)
        kw = {**row_inputs(b, device, seed=1), **SCHEDULE}
        temps = k.ead_tau(kw["positions"], **sched)
        row = {"dtype": dtype, "batch": b, "vocab": v, "logits": kind}
        row.update(_time_case(k, logits, kw, temps, gen, iters))
        for flags in FLAG_SETS:
            row[f"estimate_{flags}_us"] = estimate_us(report, dtype, flags, kind, b, v)
        row["hbm_floor_model_us"] = kernel_sass.hbm_floor_us(b, v, dtype)
        out.append(row)
        print(
            f"{dtype:5} B={b:5} V={v:6} {kind:6}  "
            f"ead {row['ead_base0_ent0_us']:8.1f} us (est {row['estimate_base0_ent0_us']:7.1f})  "
            f"ead+base+H {row['ead_base1_ent1_us']:8.1f} (est {row['estimate_base1_ent1_us']:7.1f})"
            f"  vllm-chain {row['vllm_chain_us']:8.1f}  "
            f"floor {row['floor_us']:7.1f} (model {row['hbm_floor_model_us']:6.1f})"
        )
        del logits
    return out


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for gpu_check.json")
    ap.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="kernel_sass report.json")
    ap.add_argument("--iters", type=int, default=30, help="timed iterations per case")
    ap.add_argument("--quick", action="store_true", help="fewer shapes (one V, B in {1, 256})")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU: check the arguments and print the cost-model table only",
    )
    args = ap.parse_args(argv)
    if args.iters < 1:
        ap.error("--iters must be >= 1")
    report = json.loads(args.report.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"report": str(args.report), "dry_run": args.dry_run}
    if args.dry_run:
        table = []
        for dtype, b, v, kind in timing_configs(args.quick):
            est = {f: estimate_us(report, dtype, f, kind, b, v) for f in FLAG_SETS}
            table.append(
                {
                    "dtype": dtype,
                    "batch": b,
                    "vocab": v,
                    "logits": kind,
                    **{f"estimate_{f}_us": t for f, t in est.items()},
                    "hbm_floor_model_us": kernel_sass.hbm_floor_us(b, v, dtype),
                }
            )
            floor = table[-1]["hbm_floor_model_us"]
            print(
                f"{dtype:5} B={b:5} V={v:6} {kind:6} est {est['base0_ent0']:8.1f} us "
                f"(with base+H {est['base1_ent1']:8.1f})  floor {floor:7.1f}"
            )
        result["timings"] = table
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
        return 0

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run to check the script itself)")
        return 2
    k = load_kernels()
    device = torch.device("cuda")
    t0 = time.perf_counter()
    result["device"] = torch.cuda.get_device_name(device)
    import triton

    result["versions"] = {"torch": torch.__version__, "triton": triton.__version__}
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        for v in VOCABS:
            k.prepare(device, dt, v)
    result["prepare_s"] = time.perf_counter() - t0
    result["correctness"] = check_correctness(k, device, args.quick)
    result["chi_square"] = check_distribution(k, device)
    result["invariance"] = check_invariance_and_degenerate(k, device)
    result["timings"] = run_timings(k, device, report, args.quick, args.iters)
    result["wall_s"] = time.perf_counter() - t0
    ok = all(c["ok"] for c in result["correctness"] + result["chi_square"])
    ok = ok and result["invariance"]["ok"]
    result["ok"] = ok
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"gpu_check: {'all checks passed' if ok else 'FAILED'} in {result['wall_s']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
