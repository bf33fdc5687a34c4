"""E3 dynamic rollout budget: Algorithm 1, curriculum, ranking, hard invariants, state."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ead_vllm.controllers import RolloutBudgetAllocator, allocate_budget, fractional_ranks


def algorithm_1_as_printed(k: list[float], g: int, g_min: int, g_max: int) -> list[int]:
    """Algorithm 1 exactly as the paper prints it (step 4 ignores G_max)."""
    n_total = len(k) * g
    alloc = [g_min] * len(k)
    n_rem = n_total - len(k) * g_min
    alloc = [a + math.floor(n_rem * ki / sum(k)) for a, ki in zip(alloc, k, strict=True)]
    n_rem = n_total - sum(alloc)
    for i in sorted(range(len(k)), key=lambda i: -k[i]):
        if n_rem and alloc[i] < g_max:
            alloc[i] += 1
            n_rem -= 1
    return alloc


def trained(default_n=8, n_min_limit=2, n_max_limit=16, epochs=3, **kw) -> RolloutBudgetAllocator:
    """An allocator that has seen prompts p0..p9 (p0 easiest) for ``epochs`` epochs."""
    a = RolloutBudgetAllocator(default_n, n_min_limit=n_min_limit, n_max_limit=n_max_limit, **kw)
    for _ in range(epochs):
        for i in range(10):
            a.record(f"p{i}", [1.0] * (10 - i) + [0.0] * i)
        a.end_epoch()
    return a


def test_curriculum_widens_by_widen_per_epoch_until_the_limits():
    a = RolloutBudgetAllocator(8, n_min_limit=3, n_max_limit=13, widen_per_epoch=2)
    seen = [(a.n_min, a.n_max)]
    for _ in range(4):
        a.end_epoch()
        seen.append((a.n_min, a.n_max))
    assert seen == [(8, 8), (6, 10), (4, 12), (3, 13), (3, 13)]


def test_first_epoch_gives_everyone_default_n():
    a = RolloutBudgetAllocator(8, n_min_limit=2, n_max_limit=16)
    a.record("easy", [1.0] * 8)
    a.record("hard", [0.0] * 8)
    assert a.allocate(["easy", "hard", "new"]) == [8, 8, 8]


def test_fractional_ranks_descending_with_shared_ties():
    ranks = fractional_ranks({"a": 1.0, "b": 0.5, "c": 0.5, "d": 0.0, "e": 0.75})
    assert ranks == {"a": 1.0, "e": 2.0, "b": 3.5, "c": 3.5, "d": 5.0}


def test_difficulty_from_cumulative_mean_reward_and_unseen_is_hardest():
    a = RolloutBudgetAllocator(4, n_min_limit=1, n_max_limit=8)
    a.record("x", [1, 1])
    a.record("y", [0, 0])
    a.end_epoch()
    a.record("x", [0, 0, 0, 0, 0, 0])  # cumulative mean 2/8 now below y's...
    a.record("y", [1, 1, 1, 1, 1, 1])  # ...6/8: ranks follow at the next epoch end
    assert a.difficulty("x") < a.difficulty("y")
    a.end_epoch()
    assert a.difficulty("x") > a.difficulty("y")
    assert a.difficulty("never") == 1.0
    assert a.difficulty("never") > max(a.difficulty("x"), a.difficulty("y"))


def test_worked_example_of_algorithm_1():
    # ranks 1..4, G=4 in [2, 6]: spare 8 shared as floor(8 r / 10) = 0,1,2,3, then the
    # 2 left over go to the two hardest
    assert allocate_budget([1, 2, 3, 4], [0, 0, 0, 0], default_n=4, n_min=2, n_max=6) == [
        2,
        3,
        5,
        6,
    ]


def test_skewed_batch_breaks_the_printed_algorithm_but_not_ours():
    a = trained(epochs=4)  # n in [2, 16]
    assert (a.n_min, a.n_max) == (2, 16)
    batch = ["new"] + ["p0"] * 63  # one unseen (hardest) prompt among 63 easiest
    k = [a.difficulty(p) for p in batch]
    printed = algorithm_1_as_printed(k, 8, a.n_min, a.n_max)
    assert max(printed) > a.n_max  # the paper's step 4 alone gives one prompt far too many
    ours = a.allocate(batch)
    assert sum(ours) == 64 * 8
    assert ours[0] == 16 and all(2 <= n <= 16 for n in ours)


def test_allocation_matches_printed_algorithm_when_no_bound_binds():
    a = trained(epochs=2)  # n in [4, 12]
    batch = [f"p{i}" for i in range(10)]
    k = [a.difficulty(p) for p in batch]
    printed = algorithm_1_as_printed(k, 8, a.n_min, a.n_max)
    assert max(printed) <= a.n_max
    assert a.allocate(batch) == printed
    assert printed == sorted(printed)  # p9 is the hardest


def test_ties_do_not_depend_on_dataset_order():
    a = RolloutBudgetAllocator(6, n_min_limit=1, n_max_limit=12, seed=3)
    b = RolloutBudgetAllocator(6, n_min_limit=1, n_max_limit=12, seed=3)
    prompts = {f"q{i}": [float(i % 3 == 0)] * 4 for i in range(12)}
    for pid in prompts:
        a.record(pid, prompts[pid])
    for pid in reversed(list(prompts)):
        b.record(pid, prompts[pid])
    for x in (a, b):
        x.end_epoch()
        x.end_epoch()
    ids = list(prompts)
    assert [a.difficulty(p) for p in ids] == [b.difficulty(p) for p in ids]
    assert len({a.difficulty(p) for p in ids}) == 2  # two reward levels, two ranks
    alloc = a.allocate(ids)
    assert alloc == b.allocate(ids)
    tied = [n for n, p in zip(alloc, ids, strict=True) if int(p[1:]) % 3]
    assert max(tied) - min(tied) <= 1  # equal prompts differ by one sample at most


def test_stats_for_logging():
    a = trained(epochs=1)
    a.stats()  # reset
    a.record("p0", [1, 1, 1])
    a.record("p1", [0, 0, 0])
    a.record("p2", [0, 0.2, 0])  # below the 0.5 success threshold: still all wrong
    a.record("p3", [1, 0, 1])
    alloc = a.allocate(["p0", "p9", "new"])
    s = a.stats()
    assert s["frac_all_wrong"] == pytest.approx(0.5)
    assert s["frac_all_correct"] == pytest.approx(0.25)
    assert s["frac_mixed"] == pytest.approx(0.25)
    assert s["mean_reward"] == pytest.approx(5.2 / 12)
    assert (s["n_min"], s["n_max"], s["epoch"], s["prompts_seen"]) == (6, 10, 1, 10)
    assert s["alloc_min"] == min(alloc) and s["alloc_max"] == max(alloc)
    assert s["frac_at_n_max"] == pytest.approx(sum(n == 10 for n in alloc) / 3)
    assert a.stats()["prompts_recorded"] == 0 and "frac_all_wrong" not in a.stats()


def test_state_dict_round_trip_with_int_and_str_ids():
    a = RolloutBudgetAllocator(8, n_min_limit=2, n_max_limit=16, seed=5)
    for i in range(20):
        a.record(i if i % 2 else f"s{i}", [float(i % 4 == 0), 0.5, float(i % 3 == 0)])
    a.end_epoch()
    a.end_epoch()
    a.record(3, [1.0])
    a.allocate([1, 3, "s2"])
    state = a.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    for saved in (json.loads(json.dumps(state)), torch.load(buf)):
        b = RolloutBudgetAllocator(8, n_min_limit=2, n_max_limit=16, seed=5)
        b.load_state_dict(saved)
        assert b.state_dict() == state
        assert b.difficulty(3) == a.difficulty(3) and b.difficulty("3") == 1.0
    b = RolloutBudgetAllocator(8, n_min_limit=2, n_max_limit=16, seed=5)
    b.load_state_dict(json.loads(json.dumps(state)))
    batch = [1, 3, 5, "s2", "s4", "new", 7, 9]
    for _ in range(3):
        assert a.allocate(batch) == b.allocate(batch)
        a.end_epoch()
        b.end_epoch()
    assert a.stats() == b.stats()
    with pytest.raises(ValueError, match="n_max_limit"):
        RolloutBudgetAllocator(8, n_min_limit=2, n_max_limit=12, seed=5).load_state_dict(state)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0,), {"n_min_limit": 1, "n_max_limit": 4}),
        ((8,), {"n_min_limit": 9, "n_max_limit": 16}),
        ((8,), {"n_min_limit": 2, "n_max_limit": 7}),
        ((8,), {"n_min_limit": 0, "n_max_limit": 16}),
        ((8,), {"n_min_limit": 2, "n_max_limit": 16, "widen_per_epoch": -1}),
        ((8.0,), {"n_min_limit": 2, "n_max_limit": 16}),
        ((True,), {"n_min_limit": 1, "n_max_limit": 1}),
    ],
)
def test_constructor_validation(args, kwargs):
    with pytest.raises((ValueError, TypeError)):
        RolloutBudgetAllocator(*args, **kwargs)


def test_bad_records_and_ids():
    a = RolloutBudgetAllocator(4, n_min_limit=2, n_max_limit=8)
    with pytest.raises(ValueError, match="finite"):
        a.record("p", [1.0, float("nan")])
    with pytest.raises(ValueError, match="no rewards"):
        a.record("p", [])
    with pytest.raises(TypeError):
        a.record(1.5, [1.0])
    with pytest.raises(TypeError):
        a.allocate([("tuple", 1)])
    a.record("t", torch.tensor([1.0, 0.0]))  # tensors are fine
    assert a.allocate([]) == []


# --- hard invariants, for every batch however skewed -----------------------------------------

pool = [f"p{i}" for i in range(12)] + list(range(100, 106))
histories = st.lists(
    st.tuples(st.sampled_from(pool), st.lists(st.sampled_from([0.0, 1.0, 0.5]), min_size=1)),
    max_size=40,
)


@st.composite
def scenarios(draw):
    default_n = draw(st.integers(1, 16))
    n_min_limit = draw(st.integers(1, default_n))
    n_max_limit = draw(st.integers(default_n, 40))
    widen = draw(st.integers(0, 5))
    epochs = draw(st.lists(histories, min_size=0, max_size=5))
    batch = draw(st.lists(st.sampled_from(pool + ["unseen", 999]), min_size=0, max_size=70))
    return default_n, n_min_limit, n_max_limit, widen, epochs, batch


def build(default_n, n_min_limit, n_max_limit, widen, epochs, seed=0):
    a = RolloutBudgetAllocator(
        default_n,
        n_min_limit=n_min_limit,
        n_max_limit=n_max_limit,
        widen_per_epoch=widen,
        seed=seed,
    )
    for history in epochs:
        for pid, rewards in history:
            a.record(pid, rewards)
        a.end_epoch()
    return a


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_invariants_hold_for_every_batch(scenario):
    default_n, n_min_limit, n_max_limit, widen, epochs, batch = scenario
    a = build(default_n, n_min_limit, n_max_limit, widen, epochs)
    alloc = a.allocate(batch)
    assert len(alloc) == len(batch)
    assert sum(alloc) == len(batch) * default_n
    assert all(a.n_min <= n <= a.n_max for n in alloc)
    assert n_min_limit <= a.n_min <= default_n <= a.n_max <= n_max_limit
    k = [a.difficulty(p) for p in batch]
    for i in range(len(batch)):
        for j in range(len(batch)):
            if k[i] > k[j]:
                assert alloc[i] >= alloc[j], "a harder prompt got fewer samples"
            if k[i] == k[j]:
                assert abs(alloc[i] - alloc[j]) <= 1


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_permuting_the_batch_permutes_the_allocation(scenario, rnd):
    default_n, n_min_limit, n_max_limit, widen, epochs, batch = scenario
    a = build(default_n, n_min_limit, n_max_limit, widen, epochs)
    b = build(default_n, n_min_limit, n_max_limit, widen, epochs)
    order = list(range(len(batch)))
    rnd.shuffle(order)
    alloc = a.allocate(batch)
    shuffled = b.allocate([batch[i] for i in order])
    # entries of one id may trade places among themselves; compare per id
    by_id: dict = {}
    by_id_shuffled: dict = {}
    for pos, i in enumerate(order):
        by_id.setdefault(batch[i], []).append(alloc[i])
        by_id_shuffled.setdefault(batch[i], []).append(shuffled[pos])
    assert {p: sorted(v) for p, v in by_id.items()} == {
        p: sorted(v) for p, v in by_id_shuffled.items()
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.01, 1000.0), min_size=1, max_size=80),
    st.integers(1, 12),
    st.integers(0, 12),
    st.integers(0, 30),
)
def test_allocate_budget_on_arbitrary_difficulties(k, n_min, extra, wider):
    default_n = n_min + extra
    n_max = default_n + wider
    alloc = allocate_budget(k, [0] * len(k), default_n=default_n, n_min=n_min, n_max=n_max)
    assert sum(alloc) == len(k) * default_n
    assert all(n_min <= n <= n_max for n in alloc)
    order = sorted(range(len(k)), key=lambda i: k[i])
    assert all(
        alloc[order[i]] <= alloc[order[i + 1]] or k[order[i]] == k[order[i + 1]]
        for i in range(len(k) - 1)
    )
