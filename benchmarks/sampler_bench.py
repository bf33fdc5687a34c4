"""CPU sampling benchmark: the fused EAD kernel against vLLM's stock CPU sampler.

For each batch size B and logits kind, on one [B, V] fp32 tensor, times:

* ``ead-cpu``: ``ead_sample(backend="cpu")`` -> token, its annealed and base
  log-probabilities, the temperature and the entropy (EAD schedule active, so
  the annealed and base temperatures differ: the full job);
* ``vllm-v1``: vLLM's runner-V1 ``Sampler`` as the CPU model runner builds it
  (``TopKTopPSampler.forward_cpu``: temperature division,
  ``torch.ops._C.fused_gumbel_argmax``, ``log_softmax``), all rows random at
  temperature 1 with ``max_num_logprobs=0`` (the sampled token's log-prob);
* ``ead-torch``: the torch reference (``backend="torch"``);
* ``floor``: one ``amax`` over the same tensor.

Logits kinds: ``normal`` is N(0, 3^2) i.i.d. (flat-ish, the worst case for
skipping noise), ``peaked`` is LLM-like (a N(0, 2.5^2) bulk plus a few tokens
12-18 above it), both synthetic.

Calls of the candidates are interleaved so that load from other processes
spreads over all of them; the table gives medians and minimums, ``x floor``
(median / floor median), ``(min)`` (minimum / floor minimum) and the speed-up
over vLLM (medians). Prints the table and, with ``--json``, writes every
measurement.

    python benchmarks/sampler_bench.py --json sampler_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from ead_vllm.kernels import ead_sample

EAD_PARAMS = dict(tau_max=1.5, tau_min=0.3, decay=2000.0, warmup=10, base_temperature=1.0)


def make_logits(kind: str, batch: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(batch, vocab, generator=g) * 3
    if kind == "peaked":
        x = torch.randn(batch, vocab, generator=g) * 2.5
        top = torch.randint(0, vocab, (batch, 20), generator=g)
        return x.scatter_(1, top, 12 + 6 * torch.rand(batch, 20, generator=g))
    raise ValueError(kind)


def ead_call(backend: str, logits: torch.Tensor) -> Callable[[], object]:
    batch = logits.shape[0]
    g = torch.Generator().manual_seed(1)
    positions = torch.randint(100, 4000, (batch,), generator=g)
    seeds = torch.randint(0, 2**62, (batch,), generator=g)

    def call():
        return ead_sample(logits, positions=positions, seeds=seeds, backend=backend, **EAD_PARAMS)

    return call


def vllm_call(logits: torch.Tensor, logprobs_mode: str) -> Callable[[], object]:
    """vLLM's runner-V1 Sampler on all-random temperature-1 rows, sampled-token log-probs."""
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata
    from vllm.v1.sample.sampler import Sampler

    batch = logits.shape[0]
    sampler = Sampler(logprobs_mode=logprobs_mode)
    assert sampler.topk_topp_sampler.forward == sampler.topk_topp_sampler.forward_cpu
    metadata = SamplingMetadata(
        temperature=torch.ones(batch),
        all_greedy=False,
        all_random=True,
        top_p=None,
        top_k=None,
        generators={},
        max_num_logprobs=0,
        no_penalties=True,
        prompt_token_ids=None,
        frequency_penalties=torch.zeros(batch),
        presence_penalties=torch.zeros(batch),
        repetition_penalties=torch.ones(batch),
        output_token_ids=[[] for _ in range(batch)],
        allowed_token_ids_mask=None,
        bad_words_token_ids={},
        logitsprocs=LogitsProcessors(),
    )

    def call():
        # Temperature 1: the sampler's in-place division leaves the logits unchanged.
        out = sampler(logits, metadata)
        assert out.logprobs_tensors is not None
        return out

    return call


def floor_call(logits: torch.Tensor) -> Callable[[], object]:
    return lambda: logits.amax(dim=-1)


def measure(calls: dict[str, Callable[[], object]], repeats: dict[str, int]) -> dict:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():  # warm-up: JIT, allocator, caches
        fn()
    for r in range(max(repeats.values())):
        for name, fn in calls.items():
            if r < repeats[name]:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--kinds", nargs="+", default=["normal", "peaked"])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--vllm-repeats", type=int, default=7)
    ap.add_argument("--torch-repeats", type=int, default=3)
    ap.add_argument("--logprobs-mode", default="processed_logprobs")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--json", help="write all measurements here")
    args = ap.parse_args(argv)

    import numba

    load_before = os.getloadavg()
    records = []
    print(
        f"{'kind':<7} {'B':>4} {'backend':<10} {'median ms':>10} {'min ms':>9} "
        f"{'x floor':>8} {'(min)':>7} {'vs vLLM':>8}"
    )
    for kind in args.kinds:
        for batch in args.batch:
            logits = make_logits(kind, batch, args.vocab)
            calls = {"floor": floor_call(logits), "ead-cpu": ead_call("cpu", logits)}
            if not args.skip_vllm:
                calls["vllm-v1"] = vllm_call(logits, args.logprobs_mode)
            if not args.skip_torch:
                calls["ead-torch"] = ead_call("torch", logits)
            repeats = {n: args.repeats for n in calls}
            repeats.update({"vllm-v1": args.vllm_repeats, "ead-torch": args.torch_repeats})
            repeats = {n: repeats[n] for n in calls}
            times = measure(calls, repeats)
            med = {n: statistics.median(t) for n, t in times.items()}
            for name, ts in times.items():
                records.append(
                    {
                        "backend": name,
                        "kind": kind,
                        "batch": batch,
                        "vocab": args.vocab,
                        "median_ms": med[name] * 1e3,
                        "min_ms": min(ts) * 1e3,
                        "x_floor": med[name] / med["floor"],
                        "x_floor_min": min(ts) / min(times["floor"]),
                        "speedup_vs_vllm": (med["vllm-v1"] / med[name])
                        if "vllm-v1" in med
                        else None,
                        "times_ms": [t * 1e3 for t in ts],
                    }
                )
            print_rows(records[-len(times) :])

    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "ead_params": EAD_PARAMS,
        "logprobs_mode": args.logprobs_mode,
    }
    try:
        import vllm

        meta["vllm"] = vllm.__version__
    except Exception:
        pass
    print(f"\nload average before {load_before}, after {meta['load_avg_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": records}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        vs = f"{r['speedup_vs_vllm']:.1f}x" if r["speedup_vs_vllm"] else "-"
        print(
            f"{r['kind']:<7} {r['batch']:>4} {r['backend']:<10} {r['median_ms']:>10.2f} "
            f"{r['min_ms']:>9.2f} {r['x_floor']:>8.1f} {r['x_floor_min']:>7.1f} {vs:>8}",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
