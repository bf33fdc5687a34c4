"""Peak memory of the OpenRLHF bridge's positional correction against stock OpenRLHF (CPU).

Runs OpenRLHF 0.11.2's own ``Actor.forward`` on a toy model (``ead_vllm.toy``)
three ways, on the same right-padded batch as OpenRLHF's experiences hold it:

* ``stock``: OpenRLHF as it is, scalar temperature 0.9 (``Actor.temperature``);
* ``bridge``: the bridge's :class:`openrlhf_bridge.actor.PolicyTemperature`
  attached, positional EAD (base temperature 0.9 times ``tau_t`` per token);
* ``previous``: the bridge hook as it was before (an out-of-place fp32
  division, i.e. a second [tokens, V] tensor), for reference.

Each in two modes: ``experience`` (no-grad forward returning the action
log-probs, what experience making runs) and ``training`` (forward with
``return_output`` and the backward of the log-probs, what the PPO update
runs), with ``--ds.packing_samples`` off and on (packing re-implements
flash-attn's three padding helpers in torch, as the CPU tests do: flash-attn
cannot be installed without CUDA). Models: the embedded toy model
(vocabulary 260) and a random model of the same architecture with Qwen2.5's
vocabulary of 151,936 (where the [tokens, V] logits dominate memory).

Peak memory is the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` before each pass) minus the resident set at the
start of the pass; the process runs with ``MALLOC_MMAP_THRESHOLD_`` fixed so
that every large tensor is its own mapping, returned to the system when
freed. Each figure is the minimum of ``--repeats`` passes. Prints a table
(MiB, ratios to stock) and writes JSON.

    python benchmarks/bridge_memory.py --json benchmarks/results/bridge_memory.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MMAP_THRESHOLD = "131072"  # bytes: larger allocations are mmapped (and unmapped on free)

if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:  # glibc reads it at start-up
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "OMP_NUM_THREADS": "1"}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import torch  # noqa: E402

from ead_vllm.params import EADParams  # noqa: E402
from openrlhf_bridge.testing import import_openrlhf_training  # noqa: E402

import_openrlhf_training()

import openrlhf.models.ring_attn_utils as ring_attn_utils  # noqa: E402
from openrlhf.models import Actor  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from ead_vllm.toy import build_random_model, model_path  # noqa: E402
from openrlhf_bridge.actor import PolicyTemperature  # noqa: E402

MIB = 1024 * 1024
BASE_T = 0.9
EAD = EADParams(tau_max=1.2, tau_min=0.1, decay=40.0, warmup=0)


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak resident memory that ``fn()`` adds to the process (bytes)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = _status("VmRSS")
    fn()
    return _status("VmHWM") - start


class PreviousHook(PolicyTemperature):
    """The bridge hook before the fix: fp32 logits divided out of place (a new [T, V])."""

    @staticmethod
    def divide(logits: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
        if logits.dtype == torch.float32:
            return logits / scale
        return logits.float().div_(scale)


def use_torch_padding_helpers() -> None:
    """flash-attn's unpad/pad helpers in torch (same semantics), for packing on CPU."""

    from openrlhf_bridge.testing import torch_padding_helpers

    for name, helper in torch_padding_helpers().items():
        setattr(ring_attn_utils, name, helper)


def make_batch(vocab: int, batch: int, prompt: int, max_response: int):
    """Right-padded sequences, attention and action masks as OpenRLHF's experiences hold them."""
    g = torch.Generator().manual_seed(0)
    seq_len = prompt + max_response
    sequences = torch.randint(4, vocab, (batch, seq_len), generator=g)
    attention_mask = torch.zeros(batch, seq_len, dtype=torch.long)
    action_mask = torch.zeros(batch, seq_len - 1, dtype=torch.long)
    for b in range(batch):
        response = max_response // 2 + (b * max_response) // (2 * batch)  # unequal lengths
        attention_mask[b, : prompt + response] = 1
        action_mask[b, prompt - 1 : prompt - 1 + response] = 1
    sequences[attention_mask == 0] = 0
    return sequences, attention_mask, action_mask


def run_pass(actor: Actor, batch, mode: str) -> None:
    sequences, attention_mask, action_mask = batch
    if mode == "experience":
        with torch.no_grad():
            actor(sequences, action_mask, attention_mask)
        return
    log_probs, output = actor(sequences, action_mask, attention_mask, return_output=True)
    del output
    log_probs.sum().backward()
    del log_probs
    actor.model.zero_grad(set_to_none=True)


def measure(actor: Actor, batch, variant: str, mode: str, repeats: int) -> int:
    """Minimum over ``repeats`` of the peak bytes of one pass of ``variant``."""
    control = None
    if variant == "stock":
        actor.temperature = BASE_T
    else:
        cls = PolicyTemperature if variant == "bridge" else PreviousHook
        control = cls.attach(actor, base_temperature=BASE_T)
        control.set_state(BASE_T, EAD.to_extra_args())
    try:
        run_pass(actor, batch, mode)  # warm-up: one-time allocations (kernels, caches)
        return min(peak_bytes(lambda: run_pass(actor, batch, mode)) for _ in range(repeats))
    finally:
        if control is not None:
            control.detach()


def ratio(value: int, reference: int) -> float | None:
    """``value / reference``; None when the reference pass added no resident memory."""
    return value / reference if reference > 0 else None


def show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}x"


def models(tmp: Path) -> dict[str, Path]:
    big = build_random_model(
        tmp / "toy-arch-151936",
        vocab_size=151_936,
        hidden_size=128,
        num_layers=2,
        max_position_embeddings=512,
    )
    return {"toy (V=260)": model_path(), "toy architecture, V=151,936": big}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bridge_memory.json"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--max-response", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    use_torch_padding_helpers()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models(Path(tmp)).items():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            vocab = model.config.vocab_size
            batch = make_batch(vocab, args.batch, args.prompt, args.max_response)
            tokens = int(batch[1].sum())
            for packing in (False, True):
                actor = Actor(model)
                actor.packing_samples = packing
                rows_in_logits = tokens if packing else batch[0].numel()
                for mode in ("experience", "training"):
                    peaks = {
                        variant: measure(actor, batch, variant, mode, args.repeats)
                        for variant in ("stock", "bridge", "previous")
                    }
                    rows.append(
                        {
                            "model": name,
                            "vocab": vocab,
                            "packing": packing,
                            "mode": mode,
                            "logits_rows": rows_in_logits,
                            "logits_fp32_mib": rows_in_logits * vocab * 4 / MIB,
                            **{f"{v}_peak_mib": b / MIB for v, b in peaks.items()},
                            "bridge_over_stock": ratio(peaks["bridge"], peaks["stock"]),
                            "previous_over_stock": ratio(peaks["previous"], peaks["stock"]),
                        }
                    )
                    r = rows[-1]
                    print(
                        f"{name:28s} packing={'on ' if packing else 'off'} {mode:10s} "
                        f"logits {r['logits_fp32_mib']:7.1f} MiB | peak MiB: stock "
                        f"{r['stock_peak_mib']:7.1f}  bridge {r['bridge_peak_mib']:7.1f} "
                        f"({show(r['bridge_over_stock'])})  previous "
                        f"{r['previous_peak_mib']:7.1f} ({show(r['previous_over_stock'])})",
                        flush=True,
                    )
    result = {
        "benchmark": "bridge_memory",
        "what": "peak resident memory of one Actor.forward pass (MiB), bridge vs stock OpenRLHF",
        "batch": {
            "sequences": args.batch,
            "prompt_tokens": args.prompt,
            "max_response_tokens": args.max_response,
        },
        "ead": EAD.model_dump(),
        "base_temperature": BASE_T,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
