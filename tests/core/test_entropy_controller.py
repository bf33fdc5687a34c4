"""E3 entropy-targeting temperature controller: Eq. (4), Eq. (5), clamps, state, real softmax."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ead_vllm.controllers import EntropyTemperatureController, annealed_target

V = 151_936  # Qwen2 vocabulary: |V| about 150k
F = math.log(V) + math.log(math.log(V))


def test_one_update_is_eq_4_with_the_vocabulary_size():
    c = EntropyTemperatureController(V, total_steps=100)
    assert c.target_entropy is None
    assert c.update(0.5) == 1.0  # the first step only sets H_init (alpha = 1)
    assert c.h_init == 0.5 and c.target_entropy == 0.5
    tau1 = c.update(0.4)  # entropy fell below target: the temperature rises
    assert tau1 == pytest.approx(1.0 * (1 + 1.0 * math.log(0.5 / 0.4) / F), rel=1e-14)
    assert tau1 > 1.0
    tau2 = c.update(0.45)
    # the tau_t inside the bracket matters once tau_t != 1
    assert tau2 == pytest.approx(tau1 * (1 + tau1 * math.log(0.5 / 0.45) / F), rel=1e-14)
    tau3 = c.update(0.7)  # above target: the temperature falls
    assert tau3 == pytest.approx(tau2 * (1 + tau2 * math.log(0.5 / 0.7) / F), rel=1e-14)
    assert tau3 < tau2
    assert c.temperature == tau3 and c.step == 4


def test_vocabulary_size_sets_the_gain():
    small, large = (EntropyTemperatureController(v, total_steps=10) for v in (1000, V))
    for c in (small, large):
        c.update(1.0)
        c.update(0.5)
    gain = math.log(2)
    assert small.temperature - 1 == pytest.approx(
        gain / (math.log(1000) + math.log(math.log(1000)))
    )
    assert large.temperature - 1 == pytest.approx(gain / F)


def test_h_init_is_the_mean_of_the_warmup_steps():
    c = EntropyTemperatureController(V, total_steps=100, warmup_steps=3, init_temperature=0.9)
    assert c.update(0.6) == 0.9 and c.h_init is None
    assert c.update(0.5) == 0.9 and c.target_entropy is None
    tau = c.update(0.4)  # completes the warm-up, so Eq. (4) applies already
    assert c.h_init == pytest.approx(0.5)
    assert tau == pytest.approx(0.9 * (1 + 0.9 * math.log(0.5 / 0.4) / F))


def test_annealed_target_is_eq_5():
    kw = {"h_init": 2.0, "total_steps": 480, "anneal_start": 288, "eta": 0.9}
    assert annealed_target(0, **kw) == 2.0
    assert annealed_target(288, **kw) == 2.0
    assert annealed_target(384, **kw) == pytest.approx(2.0 * (0.9 + 0.1 * 0.5))
    t = 300
    cosine = 0.5 * (1 + math.cos(math.pi * (t - 288) / 192))
    assert annealed_target(t, **kw) == pytest.approx(2.0 * (0.9 + 0.1 * cosine))
    assert annealed_target(480, **kw) == pytest.approx(1.8)
    # progress is clamped: past t_max the target stays at eta * H_init (the cosine would rise)
    assert annealed_target(600, **kw) == pytest.approx(1.8)
    assert annealed_target(10**6, **kw) == pytest.approx(1.8)
    targets = [annealed_target(s, **kw) for s in range(288, 481)]
    assert all(a >= b for a, b in zip(targets, targets[1:], strict=False))
    assert annealed_target(5, h_init=1.0, total_steps=5, anneal_start=5, eta=0.8) == 1.0
    assert annealed_target(6, h_init=1.0, total_steps=5, anneal_start=5, eta=0.8) == 0.8


def test_default_anneal_start_and_the_controller_target():
    assert EntropyTemperatureController(V, total_steps=480).anneal_start == 288
    assert EntropyTemperatureController(V, total_steps=7).anneal_start == 4
    c = EntropyTemperatureController(V, total_steps=10, eta=0.5)
    c.update(1.0)
    assert c.target_at(8) == pytest.approx(
        annealed_target(8, h_init=1.0, total_steps=10, anneal_start=6, eta=0.5)
    )
    # each update aims at the target of the step its temperature is used for
    for _ in range(7):
        c.update(c.target_entropy)
    assert c.step == 8
    assert c.target_entropy == pytest.approx(c.target_at(8)) and c.target_at(8) < 1.0


def test_temperature_is_clamped():
    c = EntropyTemperatureController(V, total_steps=10, min_temperature=0.5, max_temperature=1.5)
    c.update(1.0)
    assert c.update(1e-30) == 1.5  # Eq. (4) alone would jump past 3
    assert c.update(1e30) == 0.5  # and here it would go negative
    for _ in range(50):
        c.update(1e-6)
    assert c.temperature == 1.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 0.0, -0.3, "0.5", True])
def test_bad_entropy_raises_and_says_what_was_fed(bad):
    c = EntropyTemperatureController(V, total_steps=10)
    c.update(0.5)
    with pytest.raises(ValueError, match="mean_entropy") as info:
        c.update(bad)
    assert repr(bad) in str(info.value)
    assert c.step == 1 and c.temperature == 1.0  # a bad value changes nothing


def test_accepts_numpy_and_0d_tensor_entropy():
    c = EntropyTemperatureController(V, total_steps=10)
    c.update(np.float32(0.5))
    assert c.update(torch.tensor(0.4, dtype=torch.float64)) == pytest.approx(
        1 + math.log(0.5 / 0.4) / F
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vocab_size": 2},
        {"vocab_size": 1000.0},
        {"total_steps": 0},
        {"anneal_start": 11},
        {"anneal_start": -1},
        {"eta": 0.0},
        {"eta": 1.2},
        {"warmup_steps": 0},
        {"init_temperature": 0.0},
        {"init_temperature": 3.0},
        {"min_temperature": -1.0},
        {"max_temperature": float("inf")},
        {"init_temperature": True},
    ],
)
def test_constructor_validation(kwargs):
    args = {"vocab_size": V, "total_steps": 10, **kwargs}
    vocab = args.pop("vocab_size")
    with pytest.raises((ValueError, TypeError)):
        EntropyTemperatureController(vocab, **args)


def test_state_dict_round_trip_resumes_the_same_trajectory():
    rng = np.random.default_rng(0)
    feed = list(0.5 * np.exp(rng.normal(0, 0.1, size=60)))
    full = EntropyTemperatureController(V, total_steps=40, anneal_start=20, warmup_steps=2)
    for h in feed[:30]:  # stop mid-annealing
        full.update(h)
    state = full.state_dict()
    from_json = json.loads(json.dumps(state))
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    from_torch = torch.load(buf)
    for saved in (from_json, from_torch):
        resumed = EntropyTemperatureController(V, total_steps=40, anneal_start=20, warmup_steps=2)
        resumed.load_state_dict(saved)
        assert resumed.state_dict() == state
        clone = EntropyTemperatureController(V, total_steps=40, anneal_start=20, warmup_steps=2)
        clone.load_state_dict(state)
        for h in feed[30:]:
            assert resumed.update(h) == clone.update(h)
        assert resumed.target_entropy == clone.target_entropy
    with pytest.raises(ValueError, match="total_steps"):
        EntropyTemperatureController(
            V, total_steps=41, anneal_start=20, warmup_steps=2
        ).load_state_dict(state)


# --- the update law on real softmax math -----------------------------------------------------
#
# A policy whose next-token logits follow the E3 paper's Appendix A picture: per context a few
# informative tokens far above a Gaussian noise region over the rest of a ~150k vocabulary.
# Training "collapses" it step by step (the informative tokens move away from the noise and
# apart from each other), plus one sudden sharpening. The controller is fed the exact mean
# entropy of softmax(logits / tau) at the temperature it chose.

ROWS = 4
SHOCK_STEP = 50
TOTAL_STEPS = 150  # annealing from step 90 (floor(0.6 * 150)) to 150, then 20 steps past the end


@dataclass
class Trajectory:
    temperature: list[float]
    entropy: list[float]
    target: list[float | None]
    uncontrolled_ratio: float  # entropy at tau = 1 at the end / at the start

    def rel_error(self, step: int) -> float:
        target = self.target[step]
        assert target is not None
        return (self.entropy[step] - target) / target


def _policy():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(ROWS, V, generator=g)
    gaps = 16.5 + torch.tensor([1.0, 0.0, 2.5, -1.0])  # top token above the noise mean
    offsets = 1.5 * torch.tensor(
        [
            [0.0, -1.0, -3.0, -4.0],
            [0.0, -0.3, -2.0, -5.0],
            [0.0, -2.0, -2.5, -6.0],
            [0.0, -0.5, -1.0, -1.5],
        ]
    )

    def logits(step: int) -> torch.Tensor:
        sharpen = 0.02 * step + (0.5 if step >= SHOCK_STEP else 0.0)
        z = noise.clone()
        z[:, : offsets.shape[1]] = (gaps + sharpen)[:, None] + offsets * (1 + 0.005 * step)
        return z

    return logits


def _entropy(logits: torch.Tensor, tau: float) -> float:
    logp = torch.log_softmax(logits / tau, dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def simulate() -> Trajectory:
    logits = _policy()
    c = EntropyTemperatureController(V, total_steps=TOTAL_STEPS)
    temps, ents, targets = [], [], []
    for step in range(TOTAL_STEPS + 20):
        temps.append(c.temperature)
        targets.append(c.target_entropy)
        ents.append(_entropy(logits(step), c.temperature))
        c.update(ents[-1])
    ratio = _entropy(logits(TOTAL_STEPS + 19), 1.0) / ents[0]
    return Trajectory(temps, ents, targets, ratio)


def settle_steps(traj: Trajectory, start: int, end: int, tol: float = 0.05) -> int:
    """Steps after ``start`` until the error stays within ``tol`` up to ``end``."""
    errors = [abs(traj.rel_error(s)) for s in range(start, end)]
    return next(i for i in range(len(errors)) if all(e < tol for e in errors[i:]))


@pytest.fixture(scope="module")
def trajectory() -> Trajectory:
    torch.set_num_threads(1)
    return simulate()


def test_the_simulated_policy_collapses_without_the_controller(trajectory):
    assert trajectory.uncontrolled_ratio < 0.6


def test_controller_holds_the_entropy_within_5_percent(trajectory):
    anneal_start = math.floor(0.6 * TOTAL_STEPS)
    h_init = trajectory.entropy[0]
    assert trajectory.target[1] == h_init
    # constant target before the shock and after it settles, up to the annealing
    assert max(abs(trajectory.rel_error(s)) for s in range(1, SHOCK_STEP)) < 0.05
    assert abs(trajectory.rel_error(SHOCK_STEP)) > 0.08  # the shock is real...
    assert settle_steps(trajectory, SHOCK_STEP, anneal_start) <= 6  # ...and corrected fast
    # the controller did real work: about +30% temperature against the collapse
    assert trajectory.temperature[-1] > 1.2
    assert trajectory.temperature[anneal_start] < trajectory.temperature[-1] < 2.0


def test_controller_follows_the_annealed_target(trajectory):
    anneal_start = math.floor(0.6 * TOTAL_STEPS)
    h_init = trajectory.entropy[0]
    end = len(trajectory.entropy)
    assert max(abs(trajectory.rel_error(s)) for s in range(anneal_start, end)) < 0.05
    assert trajectory.target[-1] == pytest.approx(0.9 * h_init)
    assert trajectory.entropy[-1] == pytest.approx(0.9 * h_init, rel=0.05)
    # the entropy itself came down along the cosine, not just the target
    mid = (anneal_start + TOTAL_STEPS) // 2
    assert trajectory.entropy[mid] == pytest.approx(0.95 * h_init, rel=0.03)
    assert trajectory.entropy[-1] < 0.93 * h_init
