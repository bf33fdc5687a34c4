"""Routing and output assembly of the runner-V1 EAD sampler, on constructed batches.

Batches are built with vLLM's real ``InputBatch``; the kernel is replaced by
a recording stand-in (its sampling is tested with the kernels), so these
tests pin down what the sampler hands to the kernel and to vLLM's stock
code, and how it puts the results back together.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

pytest.importorskip("vllm")

import ead_vllm.kernels as ead_kernels  # noqa: E402
import torch  # noqa: E402
from test_vllm_batch_state import VOCAB, fake_vllm_config  # noqa: E402
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import (  # noqa: E402
    LogitsProcessors,
    MinPLogitsProcessor,
    build_logitsprocs,
)
from vllm.v1.sample.sampler import Sampler  # noqa: E402
from vllm.v1.worker.gpu_input_batch import CachedRequestState, InputBatch  # noqa: E402

from ead_vllm.params import EADParams  # noqa: E402
from ead_vllm.vllm_ext.v1_batch_state import EADBatchState  # noqa: E402
from ead_vllm.vllm_ext.v1_sampler import EADSamplerV1  # noqa: E402

EAD = {"ead_tau_max": 1.5, "ead_tau_min": 0.3, "ead_decay": 8.0}


class FakeSample(NamedTuple):
    token_ids: torch.Tensor
    logprobs: torch.Tensor
    base_logprobs: torch.Tensor
    temperatures: torch.Tensor
    entropy: torch.Tensor


@pytest.fixture
def kernel(monkeypatch):
    """Records the kernel's arguments; samples the argmax, reports exact log-probs."""
    calls: list[dict] = []

    def fake(
        logits,
        *,
        positions,
        seeds,
        tau_max,
        tau_min,
        decay,
        warmup=0,
        base_temperature=1.0,
        backend="auto",
        validate=True,
    ):
        calls.append(
            dict(
                logits=logits.clone(),
                positions=positions,
                seeds=seeds,
                tau_max=tau_max,
                tau_min=tau_min,
                decay=decay,
                warmup=warmup,
                base_temperature=base_temperature,
            )
        )
        from ead_vllm.schedules import ead_temperature

        tau = ead_temperature(
            positions, tau_max=tau_max, tau_min=tau_min, decay=decay, warmup=warmup
        )
        temps = (base_temperature * tau).float()
        tokens = logits.argmax(-1)
        lp = torch.log_softmax(logits / temps[:, None], -1).gather(1, tokens[:, None])[:, 0]
        blp = torch.log_softmax(logits / base_temperature[:, None], -1).gather(1, tokens[:, None])[
            :, 0
        ]
        return FakeSample(tokens, lp, blp, temps, torch.zeros_like(temps))

    monkeypatch.setattr(ead_kernels, "ead_sample", fake, raising=False)
    return calls


def build(
    rows: list[tuple[SamplingParams, int]], *, with_min_p: bool = True, mode="processed_logprobs"
):
    """An InputBatch holding ``rows`` = (params, tokens generated so far), and an EAD sampler."""
    config = fake_vllm_config()
    state = EADBatchState(config, torch.device("cpu"), False)
    procs = [state]
    if with_min_p:
        procs.insert(
            0,
            MinPLogitsProcessor(
                type("C", (), {"scheduler_config": type("S", (), {"max_num_seqs": 16})})(),
                torch.device("cpu"),
                False,
            ),
        )
    batch = InputBatch(
        max_num_reqs=16,
        max_model_len=128,
        max_num_batched_tokens=256,
        device=torch.device("cpu"),
        vocab_size=VOCAB,
        block_sizes=[16],
        max_num_blocks_per_req=[8],
        logitsprocs=LogitsProcessors(procs),
    )
    for i, (params, generated) in enumerate(rows):
        gen = None
        if params.seed is not None:
            gen = torch.Generator().manual_seed(params.seed)
        batch.add_request(
            CachedRequestState(
                req_id=f"r{i}",
                prompt_token_ids=[1, 2],
                mm_features=[],
                sampling_params=params,
                generator=gen,
                block_ids=([0],),
                num_computed_tokens=0,
                output_token_ids=[3] * generated,
            )
        )
    batch.refresh_metadata()
    sampler = EADSamplerV1(state, logprobs_mode=mode)
    return batch, sampler


def logits_for(batch_size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def test_no_ead_rows_is_exactly_stock(kernel):
    rows = [(SamplingParams(temperature=0.7, seed=i, logprobs=2), 4) for i in range(3)]
    rows.append((SamplingParams(temperature=0.0, logprobs=2), 0))
    batch, sampler = build(rows)
    logits = logits_for(len(rows))
    ours = sampler(logits.clone(), batch.sampling_metadata)
    batch2, _ = build(rows)
    stock = Sampler(logprobs_mode="processed_logprobs")(logits.clone(), batch2.sampling_metadata)
    assert torch.equal(ours.sampled_token_ids, stock.sampled_token_ids)
    assert torch.equal(ours.logprobs_tensors.logprobs, stock.logprobs_tensors.logprobs)
    assert not kernel


def test_fused_route_feeds_the_kernel_positions_seeds_and_temperatures(kernel):
    rows = [
        (SamplingParams(extra_args=EAD, seed=5, logprobs=0), 7),
        (SamplingParams(temperature=0.5, seed=1, logprobs=0), 2),
        (SamplingParams(temperature=0.8, extra_args={**EAD, "ead_warmup": 2}, logprobs=0), 1),
        (SamplingParams(temperature=0.0, logprobs=0), 3),
        (SamplingParams(temperature=0.9, top_k=4, extra_args=EAD, seed=3, logprobs=0), 12),
    ]
    batch, sampler = build(rows)
    logits = logits_for(len(rows), 1)
    out = sampler(logits.clone(), batch.sampling_metadata)
    (call,) = kernel
    assert call["positions"].tolist() == [7, 1]
    assert call["seeds"][0].item() == 5
    assert call["base_temperature"].tolist() == pytest.approx([1.0, 0.8])
    assert call["warmup"].tolist() == [0, 2]
    assert torch.equal(call["logits"], logits[[0, 2]])
    sampled = out.sampled_token_ids[:, 0]
    assert sampled[[0, 2]].tolist() == logits[[0, 2]].argmax(-1).tolist()
    assert sampled[3].item() == logits[3].argmax().item()  # greedy row
    # the top-k EAD row is sampled by vLLM within its top 4 at T * tau_t
    assert sampled[4].item() in torch.topk(logits[4], 4).indices.tolist()
    # processed log-probs: annealed for EAD rows, stock for the others
    tau = [EADParams(tau_max=1.5, tau_min=0.3, decay=8.0).temperature_at(t) for t in (7, 1, 12)]
    lp = out.logprobs_tensors.logprobs[:, 0]
    expected0 = torch.log_softmax(logits[0] / tau[0], -1)[sampled[0]]
    assert lp[0].item() == pytest.approx(expected0.item(), abs=1e-5)
    expected1 = torch.log_softmax(logits[1] / 0.5, -1)[sampled[1]]
    assert lp[1].item() == pytest.approx(expected1.item(), abs=1e-5)
    x4 = logits[4] / (0.9 * tau[2])
    x4 = torch.where(x4 < torch.topk(x4, 4).values[-1], float("-inf"), x4)
    assert lp[4].item() == pytest.approx(torch.log_softmax(x4, -1)[sampled[4]].item(), abs=1e-5)
    ranks = out.logprobs_tensors.selected_token_ranks
    assert ranks[0].item() == 1 and ranks[3].item() == 1


def test_top_logprobs_use_the_annealed_distribution(kernel):
    rows = [
        (SamplingParams(extra_args=EAD, logprobs=3), 5),
        (SamplingParams(temperature=0.6, logprobs=3), 5),
    ]
    batch, sampler = build(rows)
    logits = logits_for(2, 2)
    out = sampler(logits.clone(), batch.sampling_metadata)
    tau = EADParams(tau_max=1.5, tau_min=0.3, decay=8.0).temperature_at(5.0)
    top = torch.topk(torch.log_softmax(logits[0] / tau, -1), 3)
    got = out.logprobs_tensors
    assert got.logprob_token_ids[0, 1:].tolist() == top.indices.tolist()
    assert torch.allclose(got.logprobs[0, 1:], top.values, atol=1e-5)


def test_raw_logprobs_mode_reports_the_model_distribution(kernel):
    rows = [(SamplingParams(extra_args=EAD, logprobs=0), 5)]
    batch, sampler = build(rows, mode="raw_logprobs")
    logits = logits_for(1, 3)
    out = sampler(logits.clone(), batch.sampling_metadata)
    token = out.sampled_token_ids[0, 0]
    raw = torch.log_softmax(logits[0], -1)[token]
    assert out.logprobs_tensors.logprobs[0, 0].item() == pytest.approx(raw.item(), abs=1e-6)
    assert kernel


def test_min_p_in_the_batch_takes_the_unfused_route(kernel, monkeypatch):
    seen = {}
    stock_forward = Sampler.forward

    def spy(self, logits, metadata, *args, **kwargs):
        seen["temperature"] = metadata.temperature.clone()
        return stock_forward(self, logits, metadata, *args, **kwargs)

    monkeypatch.setattr(Sampler, "forward", spy)
    rows = [
        (SamplingParams(temperature=0.5, extra_args=EAD, logprobs=0), 6),
        (SamplingParams(temperature=0.7, min_p=0.2, logprobs=0), 6),
    ]
    batch, sampler = build(rows)
    sampler(logits_for(2), batch.sampling_metadata)
    tau = EADParams(tau_max=1.5, tau_min=0.3, decay=8.0).temperature_at(6.0)
    assert seen["temperature"].tolist() == pytest.approx([0.5 * tau, 0.7], rel=1e-6)
    assert not kernel


def test_dummy_metadata_goes_to_the_stock_sampler(kernel):
    rows = [(SamplingParams(extra_args=EAD), 2)]
    batch, sampler = build(rows)
    metadata = batch.sampling_metadata
    metadata.logitsprocs = LogitsProcessors()  # what vLLM's dummy sampler run passes
    sampler(logits_for(1), metadata)
    assert not kernel


def test_builtin_processors_still_load_beside_the_tracker():
    config = fake_vllm_config()
    config.scheduler_config = type("S", (), {"max_num_seqs": 4})()
    config.speculative_config = None
    procs = build_logitsprocs(config, torch.device("cpu"), False, False, ())
    procs.argmax_invariant.append(EADBatchState(config, torch.device("cpu"), False))
    assert len(list(procs.all)) == 4
