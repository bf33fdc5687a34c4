"""Cost of each stage of the runner-V1 EAD route against vLLM's stock ``Sampler``, same batch.

No engine: a real vLLM ``InputBatch`` holds B requests of a scenario (the
same request mixes as ``e2e_bench.py``), and one sampling step on [B, V] fp32
logits is timed for

* ``stock``: vLLM's ``Sampler.forward`` on the requests without ``ead_*`` keys;
* ``ead``: ``EADSamplerV1.forward`` on the same requests with them;

and, inside the EAD route, the stages on their own: the min_p/top-k/top-p
mask stage for the EAD rows that set them (``mask``), the fused kernel
(``kernel``), the rank pass that vLLM's log-prob output needs (``ranks``), and
the copy of the EAD rows out of a mixed batch (``copy``). Medians over
``--repeats`` runs; ratios are to ``stock``. A benchmark, not a test.

    python benchmarks/v1_route_bench.py --out benchmarks/results/v1_route_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

EAD = {"ead_tau_max": 1.2, "ead_tau_min": 0.1, "ead_decay": 500.0, "ead_warmup": 10}
SCENARIOS = ("ead", "mixed", "ead-top-p", "rl")


def params_for(scenario: str, i: int, with_ead: bool) -> Any:
    from vllm import SamplingParams

    extra = dict(EAD) if with_ead else None
    if scenario == "mixed":
        kind = i % 4
        if kind == 2:
            return SamplingParams(min_p=0.05)
        if kind == 3:
            return SamplingParams(top_p=0.9)
        return SamplingParams(extra_args=extra)
    if scenario == "ead-top-p":
        return SamplingParams(top_p=0.95, extra_args=extra)
    if scenario == "rl":
        return SamplingParams(logprobs=0, extra_args=extra)
    return SamplingParams(extra_args=extra)


def build(scenario: str, batch: int, vocab: int, with_ead: bool, mode: str):
    """A real InputBatch of ``batch`` requests (t = 20 each) and the matching sampler."""
    from vllm.v1.sample.logits_processor import LogitsProcessors, MinPLogitsProcessor
    from vllm.v1.sample.sampler import Sampler
    from vllm.v1.worker.gpu_input_batch import CachedRequestState, InputBatch

    from ead_vllm.vllm_ext.v1_batch_state import EADBatchState
    from ead_vllm.vllm_ext.v1_sampler import EADSamplerV1

    config = SimpleNamespace(
        model_config=SimpleNamespace(get_vocab_size=lambda: vocab, seed=0),
        scheduler_config=SimpleNamespace(max_num_seqs=batch),
    )
    state = EADBatchState(config, torch.device("cpu"), False)
    procs = [MinPLogitsProcessor(config, torch.device("cpu"), False), state]
    input_batch = InputBatch(
        max_num_reqs=batch,
        max_model_len=256,
        max_num_batched_tokens=batch * 8,
        device=torch.device("cpu"),
        vocab_size=vocab,
        block_sizes=[16],
        max_num_blocks_per_req=[16],
        logitsprocs=LogitsProcessors(procs),
    )
    for i in range(batch):
        input_batch.add_request(
            CachedRequestState(
                req_id=f"r{i}",
                prompt_token_ids=[1, 2],
                mm_features=[],
                sampling_params=params_for(scenario, i, with_ead),
                generator=None,
                block_ids=([0],),
                num_computed_tokens=0,
                output_token_ids=[3] * 20,
            )
        )
    input_batch.refresh_metadata()
    sampler = EADSamplerV1(state, logprobs_mode=mode) if with_ead else Sampler(logprobs_mode=mode)
    return input_batch, sampler


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def peaked_logits(batch: int, vocab: int) -> torch.Tensor:
    """LLM-like rows: a few strong candidates over a long, low tail."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, vocab, generator=g) * 2.0
    top = torch.randint(0, vocab, (batch, 8), generator=g)
    x.scatter_(1, top, 12.0 + 3.0 * torch.rand(batch, 8, generator=g))
    return x


def run(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    import ead_vllm.kernels as ead_kernels

    from ead_vllm.vllm_ext.ead_masks import mask_ead_rows_
    from ead_vllm.vllm_ext.v1_sampler import _ranks

    logits = peaked_logits(args.batch, args.vocab)
    mode = "processed_logprobs"
    stock_batch, stock = build(scenario, args.batch, args.vocab, False, mode)
    ead_batch, ead = build(scenario, args.batch, args.vocab, True, mode)
    out: dict[str, Any] = {"scenario": scenario, "batch": args.batch, "vocab": args.vocab}
    out["stock_ms"] = median_ms(
        lambda: stock(logits.clone(), stock_batch.sampling_metadata), args.repeats
    )
    out["ead_ms"] = median_ms(
        lambda: ead(logits.clone(), ead_batch.sampling_metadata), args.repeats
    )
    out["clone_ms"] = median_ms(lambda: logits.clone(), args.repeats)

    view = ead.ead_state.view()
    rows = torch.from_numpy(view.index)
    e_logits = logits[rows]
    schedule = view.schedule(torch.device("cpu"))
    base = torch.ones(len(rows))
    out["copy_ms"] = (
        median_ms(lambda: logits[rows], args.repeats) if len(rows) < args.batch else 0.0
    )
    masked = torch.from_numpy(view.needs_mask.nonzero()[0])
    if len(masked):
        md = ead_batch.sampling_metadata
        m_rows = rows[masked]
        top_p = None if md.top_p is None else md.top_p[m_rows]

        def mask() -> None:
            # masks in place, so each run masks a fresh copy (clone_ms is its cost)
            mask_ead_rows_(
                e_logits.clone(),
                masked,
                taus=schedule.taus(),
                base_temperature=base,
                top_k=None,
                top_p=top_p,
                min_p=None,
            )

        out["mask_ms"] = median_ms(mask, args.repeats)
    else:
        out["mask_ms"] = 0.0
    sample = ead_kernels.ead_sample(
        e_logits,
        seeds=torch.zeros(len(rows), dtype=torch.int64),
        base_temperature=base,
        **schedule._asdict(),
    )
    out["kernel_ms"] = median_ms(
        lambda: ead_kernels.ead_sample(
            e_logits,
            seeds=torch.zeros(len(rows), dtype=torch.int64),
            base_temperature=base,
            validate=False,
            return_base_logprobs=False,
            return_entropy=False,
            **schedule._asdict(),
        ),
        args.repeats,
    )
    out["ranks_ms"] = median_ms(lambda: _ranks(e_logits, sample.token_ids), args.repeats)
    out["ratio_ead_to_stock"] = out["ead_ms"] / out["stock_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--out", default="benchmarks/results/v1_route_bench.json")
    args = parser.parse_args(argv)
    rows = [run(s, args) for s in args.scenarios]
    cols = ("stock_ms", "ead_ms", "mask_ms", "kernel_ms", "ranks_ms", "copy_ms", "clone_ms")
    print(f"B = {args.batch}, V = {args.vocab}, fp32, peaked logits; medians of {args.repeats}")
    print(f"{'scenario':>10} " + " ".join(f"{c:>10}" for c in cols) + f" {'ead/stock':>10}")
    for r in rows:
        vals = " ".join(f"{r[c]:10.1f}" for c in cols)
        print(f"{r['scenario']:>10} {vals} {r['ratio_ead_to_stock']:10.2f}")
    report = {
        "settings": vars(args),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "loadavg": os.getloadavg(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
