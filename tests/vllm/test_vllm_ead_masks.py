"""The EAD rows' mask stage against vLLM's own top-k/top-p/min-p (``ead_masks``)."""

from __future__ import annotations

import pytest
import torch
from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p

from ead_vllm.vllm_ext import ead_masks

pytestmark = pytest.mark.vllm

VOCAB = 3000


def rows(n: int, seed: int) -> torch.Tensor:
    """Half peaked (LLM-like: a few strong entries), half flat, some with -inf entries."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, VOCAB, generator=g)
    peaked = torch.arange(n) % 2 == 0
    x[peaked] *= 2.0
    top = torch.randint(0, VOCAB, (n, 6), generator=g)
    boost = torch.zeros(n, VOCAB).scatter_(1, top, 9.0 + torch.rand(n, 6, generator=g))
    x = torch.where(peaked[:, None], x + boost, x)
    holes = torch.rand(n, VOCAB, generator=g) < 0.1
    x[torch.arange(n) % 3 == 0] = x[torch.arange(n) % 3 == 0].masked_fill(
        holes[torch.arange(n) % 3 == 0], float("-inf")
    )
    return x


@pytest.mark.parametrize("with_k", [False, True], ids=["top-p", "top-k+top-p"])
def test_top_k_top_p_keeps_vllms_set(with_k, monkeypatch):
    n = 240
    x = rows(n, 1)
    g = torch.Generator().manual_seed(2)
    p = torch.rand(n, generator=g) * 0.95 + 0.04
    p[::7] = 1.0  # rows without top-p in a batch that has it
    k = None
    if with_k:
        k = torch.randint(1, 400, (n,), generator=g, dtype=torch.int32)
        k[::5] = VOCAB  # no top-k on those rows
    calls = []
    real = ead_masks._mask_from_candidates_

    def spy(scaled, rows_, cand, *args):
        decided, mass, smallest = real(scaled, rows_, cand, *args)
        calls.append((cand, len(rows_), int(decided.sum())))
        return decided, mass, smallest

    monkeypatch.setattr(ead_masks, "_mask_from_candidates_", spy)
    ours = ead_masks.top_k_top_p_mask_(x.clone(), k, p)
    ref = apply_top_k_top_p(x.clone(), k, p)
    assert torch.equal(torch.isfinite(ours), torch.isfinite(ref))
    assert torch.equal(ours[torch.isfinite(ours)], x[torch.isfinite(ours)])
    # the 256 largest entries decide the peaked rows, not the flat ones (nor
    # a top-k past them); the next candidate size (here the whole row) does
    (cand0, todo0, done0), (cand1, todo1, done1) = calls
    assert cand0 == 256 and 0 < done0 < todo0
    assert cand1 == VOCAB and todo1 == todo0 - done0 == done1


def test_top_k_ties_are_kept_like_vllm():
    x = torch.zeros(2, VOCAB)
    x[:, :10] = 5.0  # ten tied entries at the top
    k = torch.tensor([3, 3], dtype=torch.int32)
    p = torch.tensor([0.99, 0.45])  # ten survivors of 0.1 each: 5 kept by 0.45
    ours = ead_masks.top_k_top_p_mask_(x.clone(), k, p)
    ref = apply_top_k_top_p(x.clone(), k, p)
    assert int(torch.isfinite(ours[0]).sum()) == int(torch.isfinite(ref[0]).sum()) == 10
    assert int(torch.isfinite(ours[1]).sum()) == int(torch.isfinite(ref[1]).sum())


def test_rows_with_no_finite_entry_stay_masked():
    x = torch.full((2, VOCAB), float("-inf"))
    out = ead_masks.top_k_top_p_mask_(x.clone(), None, torch.tensor([0.9, 0.5]))
    assert torch.isneginf(out).all()


def test_min_p_is_vllms_definition():
    x = rows(12, 3)
    min_p = torch.linspace(0.0, 0.3, 12)
    ours = ead_masks.min_p_mask_(x.clone(), min_p)
    probs = torch.softmax(x, -1)
    ref = x.masked_fill(probs < probs.amax(-1, keepdim=True) * min_p[:, None], float("-inf"))
    assert torch.equal(torch.isfinite(ours), torch.isfinite(ref))


def test_rows_no_candidate_set_decides_take_vllms_sort(monkeypatch):
    monkeypatch.setattr(ead_masks, "TOP_P_CANDIDATES", (16,))
    calls = []
    real = ead_masks.apply_top_k_top_p

    def spy(t, kk, pp):
        calls.append(t.shape[0])
        return real(t, kk, pp)

    monkeypatch.setattr(ead_masks, "apply_top_k_top_p", spy)
    x = rows(40, 4)
    p = torch.full((40,), 0.9)
    ours = ead_masks.top_k_top_p_mask_(x.clone(), None, p)
    assert calls and 0 < calls[0] < 40  # the flat rows only
    assert torch.equal(torch.isfinite(ours), torch.isfinite(apply_top_k_top_p(x.clone(), None, p)))


def test_flat_rows_go_straight_to_vllms_sort(monkeypatch):
    calls = []
    monkeypatch.setattr(ead_masks, "_mask_from_candidates_", lambda *a: calls.append(a))
    # p_max ~ 1e-4 here: even 4,096 candidates hold under 0.5 of the mass
    x = torch.randn(4, 100_000, generator=torch.Generator().manual_seed(5)) * 0.5
    p = torch.full((4,), 0.9)
    ours = ead_masks.top_k_top_p_mask_(x.clone(), None, p)
    assert not calls  # 4,096 candidates cannot hold 0.9 of a flat row: no topk pass
    assert torch.equal(torch.isfinite(ours), torch.isfinite(apply_top_k_top_p(x.clone(), None, p)))
