"""EAD row tracking through vLLM's real runner-V1 ``InputBatch`` (no engine).

Every persistent-batch event the V1 runner performs is replayed here with
vLLM's own ``InputBatch``: additions into freed slots, removals and
``condense``, swaps (reordering), preemption (remove, later re-add with the
retained output list), async-scheduling ``-1`` placeholders, partial-prefill
steps that append nothing, and n > 1 children. After each event the tracker
must report, for every EAD row, the index, the schedule and
``t = number of generated tokens``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

# runner V1 only (vLLM 0.29-0.33; 0.34.0 deleted it)
pytest.importorskip("vllm.v1.sample.sampler")

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import LogitsProcessors
from vllm.v1.worker.gpu_input_batch import CachedRequestState, InputBatch
from vllm_engine_support import VOCAB, fake_vllm_config, make_input_batch

from ead_vllm.params import EADParams
from ead_vllm.vllm_ext.request_state import make_row, request_seed
from ead_vllm.vllm_ext.v1_batch_state import EADBatchState

pytestmark = [pytest.mark.vllm, pytest.mark.vllm_sources]

MAX_REQS = 8


def new_batch() -> tuple[InputBatch, EADBatchState]:
    state = EADBatchState(fake_vllm_config(), torch.device("cpu"), False)
    batch = make_input_batch(  # vLLM's InputBatch (0.29-0.31 take kernel_block_sizes too)
        max_num_reqs=MAX_REQS,
        max_model_len=256,
        max_num_batched_tokens=512,
        device=torch.device("cpu"),
        vocab_size=VOCAB,
        block_sizes=[16],
        max_num_blocks_per_req=[16],
        logitsprocs=LogitsProcessors([state]),
    )
    return batch, state


def request(req_id: str, params: SamplingParams, outputs: list[int] | None = None):
    return CachedRequestState(
        req_id=req_id,
        prompt_token_ids=[1, 2, 3],
        mm_features=[],
        sampling_params=params,
        generator=None,
        block_ids=([0],),
        num_computed_tokens=0,
        output_token_ids=list(outputs or []),
    )


def ead(i: int, **kwargs) -> SamplingParams:
    args = {
        "ead_tau_max": 1.0 + i / 10,
        "ead_tau_min": 0.2,
        "ead_decay": 10.0 + i,
        "ead_warmup": i % 3,
    }
    return SamplingParams(extra_args=args, **kwargs)


def check(batch: InputBatch, state: EADBatchState, reqs: dict) -> None:
    """The tracker's view equals the truth read from the batch itself."""
    expected = []
    for index, req_id in enumerate(batch.req_ids):
        req = reqs[req_id]
        params = EADParams.from_extra_args(req.sampling_params.extra_args)
        if params is not None and req.sampling_params.temperature >= 1e-5:
            expected.append((index, len(req.output_token_ids), params))
    view = state.view()
    if not expected:
        assert view is None
        return
    assert view is not None
    assert state.batch_size == batch.num_reqs
    assert view.index.tolist() == [e[0] for e in expected]
    assert view.positions.tolist() == [e[1] for e in expected]
    assert view.tau_max.tolist() == pytest.approx([e[2].tau_max for e in expected])
    assert view.decay.tolist() == pytest.approx([e[2].decay for e in expected])
    assert view.warmup.tolist() == [e[2].warmup for e in expected]
    taus = view.taus(torch.device("cpu")).tolist()
    for (_, t, params), tau in zip(expected, taus, strict=True):
        assert tau == pytest.approx(params.temperature_at(float(t)))


def step(batch: InputBatch, reqs: dict, *, async_placeholders: bool = False, skip=()) -> None:
    """One decode step: every scheduled request gains a token (or a -1 placeholder)."""
    for req_id in batch.req_ids:
        if req_id in skip:  # partial prefill: the sample is discarded
            continue
        reqs[req_id].output_token_ids.append(-1 if async_placeholders else random.randrange(VOCAB))


def test_positions_follow_every_batch_event():
    random.seed(0)
    batch, state = new_batch()
    reqs: dict[str, CachedRequestState] = {}

    def add(req_id, params, outputs=None):
        reqs.setdefault(req_id, request(req_id, params, outputs))
        batch.add_request(reqs[req_id])

    def remove(*req_ids):
        for r in req_ids:
            batch.remove_request(r)

    # mixed rows: EAD, plain, greedy EAD (not an EAD row), EAD with top-k
    add("a", ead(0))
    add("b", SamplingParams(temperature=0.7))
    add("c", ead(1, temperature=0.0))
    add("d", ead(2, top_k=5))
    add("e", ead(3, seed=99))
    batch.refresh_metadata()
    check(batch, state, reqs)
    view = state.view()
    assert view.needs_mask.tolist() == [False, True, False]
    assert view.seeds[-1] == 99

    for _ in range(3):
        step(batch, reqs)
        batch.refresh_metadata()
        check(batch, state, reqs)

    # finish "a" and "b": condense moves the last rows down
    remove("a", "b")
    batch.condense()
    batch.refresh_metadata()
    check(batch, state, reqs)

    # a new request takes a freed slot in the same step as a removal
    remove("c")
    add("f", ead(4), outputs=[])
    batch.condense()
    batch.refresh_metadata()
    check(batch, state, reqs)

    # reorder (the runner swaps rows, e.g. to group decodes first)
    batch.swap_states(0, batch.num_reqs - 1)
    batch.refresh_metadata()
    check(batch, state, reqs)

    # async scheduling: placeholders count as generated tokens
    for _ in range(2):
        step(batch, reqs, async_placeholders=True)
        batch.refresh_metadata()
        check(batch, state, reqs)

    # preemption: "d" leaves the batch, others decode, "d" resumes with its list
    remove("d")
    batch.condense()
    batch.refresh_metadata()
    step(batch, reqs)
    batch.refresh_metadata()
    check(batch, state, reqs)
    add("d", reqs["d"].sampling_params)
    batch.refresh_metadata()
    check(batch, state, reqs)
    assert len(reqs["d"].output_token_ids) == 5

    # chunked prefill: a partial-prefill row appends nothing
    add("g", ead(5), outputs=[])
    batch.refresh_metadata()
    step(batch, reqs, skip={"g"})
    batch.refresh_metadata()
    check(batch, state, reqs)
    assert len(reqs["g"].output_token_ids) == 0

    # n > 1: children are separate requests with seed + index
    for k in range(2):
        add(f"h{k}", ead(6, seed=10 + k))
    batch.refresh_metadata()
    check(batch, state, reqs)

    remove(*list(batch.req_ids))
    batch.condense()
    batch.refresh_metadata()
    check(batch, state, reqs)


def test_random_churn_matches_the_truth():
    rng = random.Random(1)
    batch, state = new_batch()
    reqs: dict[str, CachedRequestState] = {}
    waiting: list[str] = []
    counter = 0
    for _ in range(300):
        op = rng.random()
        if op < 0.3 and batch.num_reqs < MAX_REQS:
            if waiting and rng.random() < 0.5:
                req_id = waiting.pop(rng.randrange(len(waiting)))
            else:
                counter += 1
                req_id = f"r{counter}"
                kind = rng.randrange(3)
                params = ead(counter % 5) if kind else SamplingParams(temperature=0.8)
                reqs[req_id] = request(req_id, params)
            batch.add_request(reqs[req_id])
        elif op < 0.45 and batch.num_reqs:
            req_id = rng.choice(batch.req_ids)
            batch.remove_request(req_id)
            if rng.random() < 0.5:
                waiting.append(req_id)  # preempted, resumes later
            batch.condense()
        elif op < 0.55 and batch.num_reqs > 1:
            i, j = rng.sample(range(batch.num_reqs), 2)
            batch.swap_states(i, j)
        else:
            step(batch, reqs, async_placeholders=rng.random() < 0.3)
        batch.refresh_metadata()
        check(batch, state, reqs)


def test_unseeded_rows_draw_their_seed_from_the_engine_seeded_generator():
    params = ead(0)
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert request_seed(params, rng_a) == request_seed(params, rng_b)
    assert request_seed(params, rng_a) != request_seed(params, random.Random(6))
    assert request_seed(ead(0, seed=(1 << 63) + 5), rng_a) == 5  # masked to 63 bits
    assert 0 <= request_seed(params, rng_a) < 1 << 63


def test_rows_without_ead_keys_or_greedy_are_not_ead_rows():
    rng = random.Random(0)
    assert make_row(SamplingParams(), [], rng, VOCAB) is None
    assert make_row(SamplingParams(extra_args={"other": 1}), [], rng, VOCAB) is None
    assert make_row(ead(0, temperature=0.0), [], rng, VOCAB) is None
    row = make_row(ead(0, min_p=0.1), [], rng, VOCAB)
    assert row is not None and row.needs_mask
    row = make_row(ead(0, top_k=VOCAB + 5), [], rng, VOCAB)
    assert row is not None and not row.needs_mask
    assert np.isclose(make_row(ead(2), [], rng, VOCAB).params.decay, 12.0)
