"""Routing and output assembly of the runner-V1 EAD sampler, on constructed batches.

Batches are built with vLLM's real ``InputBatch``; the kernel is replaced by
a recording stand-in (its sampling is tested with the kernels), so these
tests pin down what the sampler hands to the kernel and to vLLM's stock
code, and how it puts the results back together.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

# runner V1 only (vLLM 0.27-0.33; 0.34.0 deleted it)
pytest.importorskip("vllm.v1.sample.sampler")

import ead_vllm.kernels as ead_kernels
import torch
from ead_vllm.kernels.schedule import ead_tau
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import (
    LogitsProcessors,
    MinPLogitsProcessor,
    build_logitsprocs,
)
from vllm.v1.sample.sampler import Sampler
from vllm.v1.worker.gpu_input_batch import CachedRequestState
from vllm_engine_support import VOCAB, fake_vllm_config, make_input_batch

from ead_vllm.params import EADParams
from ead_vllm.vllm_ext.v1_batch_state import EADBatchState
from ead_vllm.vllm_ext.v1_sampler import EADSamplerV1

pytestmark = pytest.mark.vllm

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
        return_base_logprobs=True,
        return_entropy=True,
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
                return_base_logprobs=return_base_logprobs,
                return_entropy=return_entropy,
            )
        )
        tau = ead_tau(positions, tau_max=tau_max, tau_min=tau_min, decay=decay, warmup=warmup)
        temps = base_temperature * tau
        tokens = logits.argmax(-1)
        lp = torch.log_softmax(logits / temps[:, None], -1).gather(1, tokens[:, None])[:, 0]
        return FakeSample(tokens, lp, None, temps, None)

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
    batch = make_input_batch(  # vLLM's InputBatch (0.29-0.31 take kernel_block_sizes too)
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
    # the same global generator state for both: vLLM 0.27/0.28 sample a batch that is not
    # seeded in every row from it (their CPU sampler leaves the seeds unused there)
    torch.manual_seed(0)
    ours = sampler(logits.clone(), batch.sampling_metadata)
    batch2, _ = build(rows)
    torch.manual_seed(0)
    stock = Sampler(logprobs_mode="processed_logprobs")(logits.clone(), batch2.sampling_metadata)
    assert torch.equal(ours.sampled_token_ids, stock.sampled_token_ids)
    assert torch.equal(ours.logprobs_tensors.logprobs, stock.logprobs_tensors.logprobs)
    assert not kernel


def test_every_ead_row_reaches_the_kernel_with_positions_seeds_and_temperatures(kernel):
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
    assert call["positions"].tolist() == [7, 1, 12]
    assert call["seeds"][0].item() == 5 and call["seeds"][2].item() == 3
    assert call["base_temperature"].tolist() == pytest.approx([1.0, 0.8, 0.9])
    assert call["warmup"].tolist() == [0, 2, 0]
    # the RL outputs only: no base log-probs, no entropy
    assert not call["return_base_logprobs"] and not call["return_entropy"]
    assert torch.equal(call["logits"][:2], logits[[0, 2]])
    # the top-k row arrives with everything outside its top 4 masked, unscaled
    top4 = torch.topk(logits[4], 4).indices
    kept = torch.isfinite(call["logits"][2]).nonzero()[:, 0]
    assert sorted(kept.tolist()) == sorted(top4.tolist())
    assert torch.equal(call["logits"][2, top4], logits[4, top4])
    sampled = out.sampled_token_ids[:, 0]
    assert sampled[[0, 2]].tolist() == logits[[0, 2]].argmax(-1).tolist()
    assert sampled[3].item() == logits[3].argmax().item()  # greedy row
    assert sampled[4].item() in top4.tolist()
    # processed log-probs: annealed for EAD rows (renormalised over the kept
    # tokens for the top-k row), stock for the others
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
    assert ranks[0].item() == 1 and ranks[3].item() == 1 and ranks[4].item() == 1


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


def test_min_p_and_top_p_are_applied_at_the_effective_temperature(kernel):
    # at T * tau_t = 0.5 * 0.3 the distribution is sharp: min_p 0.2 keeps only a
    # few tokens; at the base temperature it would keep many more
    rows = [
        (SamplingParams(temperature=0.5, min_p=0.2, extra_args=EAD, logprobs=0), 30),
        (SamplingParams(temperature=1.0, top_p=0.5, extra_args=EAD, logprobs=0), 30),
        (SamplingParams(temperature=0.7, min_p=0.2, logprobs=0), 6),
    ]
    batch, sampler = build(rows)
    logits = logits_for(3, 4) / 6  # flat enough that min_p keeps many tokens at T = 0.5
    sampler(logits.clone(), batch.sampling_metadata)
    (call,) = kernel
    tau = EADParams(tau_max=1.5, tau_min=0.3, decay=8.0).temperature_at(30.0)
    x0 = logits[0] / (0.5 * tau)
    p0 = torch.softmax(x0, -1)
    keep0 = p0 >= 0.2 * p0.max()
    assert torch.equal(torch.isfinite(call["logits"][0]), keep0)
    p_base = torch.softmax(logits[0] / 0.5, -1)
    assert (p_base >= 0.2 * p_base.max()).sum() > keep0.sum()
    x1 = torch.where(torch.isfinite(call["logits"][1]), logits[1] / tau, float("-inf"))
    # top-p 0.5 keeps the smallest head of mass >= 0.5 at the effective temperature
    from vllm_engine_support import top_p_mask

    assert torch.equal(torch.isfinite(x1), torch.isfinite(top_p_mask(logits[1] / tau, 0.5)))


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


# ------------------------------------------------- one route, with the real kernel

NEIGHBOURS = {
    "greedy": SamplingParams(temperature=0.0, logprobs=0),
    "min_p": SamplingParams(temperature=0.9, min_p=0.1, logprobs=0),
    "top_p": SamplingParams(temperature=1.1, top_p=0.8, logprobs=0),
    "top_k": SamplingParams(temperature=0.8, top_k=5, seed=9, logprobs=0),
    "penalty": SamplingParams(
        temperature=1.0, repetition_penalty=1.3, presence_penalty=0.5, logprobs=0
    ),
    "logprob_token_ids": SamplingParams(temperature=1.0, logprob_token_ids=[1, 2, 3]),
    "unseeded": SamplingParams(temperature=1.0, logprobs=0),
    "unseeded_ead": SamplingParams(temperature=1.0, extra_args=EAD, logprobs=0),
}
TARGETS = {
    "plain": SamplingParams(seed=42, extra_args=EAD, logprobs=0),
    "top_p": SamplingParams(seed=43, top_p=0.7, temperature=1.2, extra_args=EAD, logprobs=0),
    "min_p_top_k": SamplingParams(seed=44, min_p=0.05, top_k=9, extra_args=EAD, logprobs=0),
}


def run_rows(rows, logits_rows, mode="processed_logprobs", torch_seed=0):
    """Sample ``rows`` with the real kernel; returns (tokens, token log-probs)."""
    batch, sampler = build(rows, mode=mode)
    sampler.backend = "cpu"
    torch.manual_seed(torch_seed)
    out = sampler(torch.stack(logits_rows), batch.sampling_metadata)
    lp = out.logprobs_tensors.logprobs[:, 0] if out.logprobs_tensors is not None else None
    return out.sampled_token_ids[:, 0], lp, out


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("neighbour", list(NEIGHBOURS))
def test_seeded_ead_row_is_route_independent(target, neighbour):
    pytest.importorskip("numba")
    logits = logits_for(4, 7)
    params = TARGETS[target]
    alone_tok, alone_lp, _ = run_rows([(params, 9)], [logits[0]])
    other = NEIGHBOURS[neighbour]
    for order in ([(params, 9), (other, 3), (other, 5)], [(other, 3), (other, 5), (params, 9)]):
        at = [i for i, (p, _) in enumerate(order) if p is params][0]
        rows_logits = [
            logits[0] if p is params else logits[1 + i] for i, (p, _) in enumerate(order)
        ]
        tok, lp, _ = run_rows(order, rows_logits, torch_seed=at + 1)
        assert tok[at].item() == alone_tok[0].item()
        if lp is not None:
            assert lp[at].item() == alone_lp[0].item()


@pytest.mark.parametrize("mode", ["processed_logprobs", "raw_logprobs", "processed_logits"])
def test_non_ead_rows_are_bit_identical_to_stock(mode):
    pytest.importorskip("numba")
    rows = [
        (SamplingParams(temperature=1.0, logprobs=2), 4),  # unseeded
        (SamplingParams(seed=1, extra_args=EAD, logprobs=2), 9),
        (SamplingParams(temperature=0.9, min_p=0.1, logprobs=2), 3),
        (SamplingParams(temperature=1.0, extra_args=EAD, top_p=0.8, logprobs=2), 9),
        (SamplingParams(temperature=1.1, top_p=0.8, logprobs=2), 2),
        (SamplingParams(temperature=0.0, logprobs=2), 3),
        (SamplingParams(temperature=0.8, top_k=5, seed=9, logprobs=2), 6),
        (SamplingParams(temperature=0.7, logprobs=2), 1),  # unseeded
        (SamplingParams(temperature=1.0, repetition_penalty=1.3, logprobs=2), 4),
    ]
    logits = logits_for(len(rows), 11)
    stock_rows = [i for i, (p, _) in enumerate(rows) if not p.extra_args]
    for step in range(3):
        batch, sampler = build(rows, mode=mode)
        sampler.backend = "cpu"
        torch.manual_seed(step)
        ours = sampler(logits.clone(), batch.sampling_metadata)
        ours_next = torch.rand(4)  # the global generator is left where stock leaves it
        batch2, _ = build(rows, mode=mode)
        torch.manual_seed(step)
        stock = Sampler(logprobs_mode=mode)(logits.clone(), batch2.sampling_metadata)
        assert torch.equal(ours_next, torch.rand(4))
        assert torch.equal(ours.sampled_token_ids[stock_rows], stock.sampled_token_ids[stock_rows])
        ol, sl = ours.logprobs_tensors, stock.logprobs_tensors
        assert torch.equal(ol.logprob_token_ids[stock_rows], sl.logprob_token_ids[stock_rows])
        assert torch.equal(ol.logprobs[stock_rows], sl.logprobs[stock_rows])
        assert torch.equal(ol.selected_token_ranks[stock_rows], sl.selected_token_ranks[stock_rows])


def stock_rand(rows, logits, mode):
    batch, _ = build(rows, mode=mode)
    Sampler(logprobs_mode=mode)(logits.clone(), batch.sampling_metadata)
    return torch.rand(4)


@pytest.mark.parametrize("seeds", [(None, 2), (1, 2)], ids=["partly-seeded", "all-seeded"])
def test_all_ead_batch_draws_the_noise_stock_draws(seeds):
    pytest.importorskip("numba")
    from ead_vllm.vllm_ext.seams.v1_stock_sampling import cpu_draws_exponential
    from ead_vllm.vllm_ext.seams.versions import installed_release
    from ead_vllm.vllm_ext.v1_stock_rows import noise_route

    rows = [(SamplingParams(extra_args=EAD, seed=s), n) for s, n in zip(seeds, (3, 5), strict=True)]
    logits = logits_for(2, 12)
    batch, sampler = build(rows)
    seeded = sum(s is not None for s in seeds)
    if noise_route(sampler) == "full" and not cpu_draws_exponential(
        installed_release(), seeded, len(rows), False
    ):
        # vLLM 0.27/0.28 sample a partly seeded batch inside their compiled graph, whose
        # draw the EAD route does not reproduce (v1_stock_rows: the "full" route)
        pytest.skip(f"vLLM {installed_release()} draws this batch's noise in a compiled graph")
    sampler.backend = "cpu"
    torch.manual_seed(3)
    sampler(logits.clone(), batch.sampling_metadata)
    after_ours = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(after_ours, stock_rand(rows, logits, "processed_logprobs"))


def test_ead_processed_logprobs_are_those_of_the_masked_annealed_distribution():
    pytest.importorskip("numba")
    params = SamplingParams(
        temperature=0.9, top_k=12, top_p=0.9, min_p=0.02, extra_args=EAD, logprobs=3
    )
    logits = logits_for(1, 13)
    tok, lp, out = run_rows([(params, 5)], [logits[0]])
    tau = EADParams(tau_max=1.5, tau_min=0.3, decay=8.0).temperature_at(5.0)
    from vllm_engine_support import top_p_mask

    x = logits[0] / (0.9 * tau)
    p = torch.softmax(x, -1)
    x = torch.where(p < 0.02 * p.max(), float("-inf"), x)
    x = torch.where(x < torch.topk(x, 12).values[-1], float("-inf"), x)
    ref = torch.log_softmax(top_p_mask(x, 0.9), -1)
    assert torch.isfinite(ref[tok[0]])
    assert lp[0].item() == pytest.approx(ref[tok[0]].item(), abs=1e-5)
    top = torch.topk(ref, 3)
    assert out.logprobs_tensors.logprob_token_ids[0, 1:].tolist() == top.indices.tolist()
    assert torch.allclose(out.logprobs_tensors.logprobs[0, 1:], top.values, atol=1e-5)


def test_a_row_with_no_allowed_token_gets_stock_outcome():
    pytest.importorskip("numba")
    rows = [
        (SamplingParams(extra_args=EAD, seed=1, logprobs=0), 3),
        (SamplingParams(temperature=1.0, seed=2, logprobs=0), 3),
    ]
    logits = logits_for(2, 14)
    logits[:] = float("-inf")  # e.g. a grammar bitmask that removes every token
    _, lp, out = run_rows(rows, list(logits))
    batch2, _ = build(rows)
    stock = Sampler(logprobs_mode="processed_logprobs")(logits.clone(), batch2.sampling_metadata)
    assert out.sampled_token_ids[:, 0].tolist() == stock.sampled_token_ids[:, 0].tolist()
    assert torch.isnan(lp).all() and torch.isnan(stock.logprobs_tensors.logprobs[:, 0]).all()
    assert torch.equal(
        out.logprobs_tensors.selected_token_ranks, stock.logprobs_tensors.selected_token_ranks
    )


def test_custom_argmax_invariant_processor_takes_stock_sampling_at_t_tau(kernel, monkeypatch):
    seen = {}
    stock_forward = Sampler.forward

    def spy(self, logits, metadata, *args, **kwargs):
        seen["temperature"] = metadata.temperature.clone()
        return stock_forward(self, logits, metadata, *args, **kwargs)

    monkeypatch.setattr(Sampler, "forward", spy)
    rows = [
        (SamplingParams(temperature=0.5, extra_args=EAD, logprobs=0), 6),
        (SamplingParams(temperature=0.7, logprobs=0), 6),
    ]
    batch, sampler = build(rows)

    class Custom:
        def apply(self, logits):
            return logits

    batch.sampling_metadata.logitsprocs.argmax_invariant.append(Custom())
    sampler(logits_for(2), batch.sampling_metadata)
    tau = EADParams(tau_max=1.5, tau_min=0.3, decay=8.0).temperature_at(6.0)
    assert seen["temperature"].tolist() == pytest.approx([0.5 * tau, 0.7], rel=1e-6)
    assert not kernel
