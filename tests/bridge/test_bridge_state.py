"""Save, load and continue: the bridge's schedules resume exactly; metrics reach OpenRLHF's logger.

The trainer-level tests run the bridge's ``PPOTrainer`` subclass methods and
OpenRLHF's own ``save_logs_and_checkpoints`` / ``init_checkpoint_states`` /
``WandbLogger.log_train`` with stand-in worker groups (plain values instead of
Ray refs, ``ray.get`` the identity) and a stand-in wandb module; the client
states go through ``torch.save``/``torch.load`` as in DeepSpeed's checkpoint.
CPU stub: ``flash_attn`` is stubbed while OpenRLHF's training modules are
imported (``openrlhf_bridge.testing``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
import ray
import torch
from openrlhf.utils.config import hierarchize
from openrlhf.utils.logging_utils import WandbLogger

from openrlhf_bridge import train_ppo_ray
from openrlhf_bridge.state import STATE_KEY, BridgeState
from openrlhf_bridge.trainer import _EADPPOTrainer, rollout_steps

N = 6
PROMPTS = [f"p{i}" for i in range(12)]
BATCH = 4
STEPS = 12  # 4 passes over the prompts
FLAGS = [
    "--actor.model_name_or_path", "toy",
    "--reward.remote_url", "reward.py",
    "--vllm.num_engines", "1",
    "--algo.advantage.estimator", "group_norm",
    "--rollout.n_samples_per_prompt", str(N),
    "--ead.enable", "--ead.preset", "reference",
    "--e3.dynamic_budget", "--e3.n_min", "2", "--e3.n_max", "10",
    "--e3.temperature_controller", "--e3.total_steps", str(STEPS), "--e3.anneal_start", "4",
    "--e3.min_temperature", "0.5", "--e3.max_temperature", "1.5",
]  # fmt: skip


def parse(tmp_path=None):
    extra = []
    if tmp_path is not None:
        extra = ["--ckpt.path", str(tmp_path), "--ckpt.save_steps", "1", "--ckpt.load_enable"]
    namespace, config = train_ppo_ray.parse_args([*FLAGS, *extra])
    return hierarchize(namespace), config


def new_state(config) -> BridgeState:
    return BridgeState(config, default_n=N, base_temperature=1.0, vocab_size=40, seed=3)


def reward(key: str, step: int, sample: int) -> float:
    # deterministic outcomes: prompt i is solved with probability ~ i / 12
    digest = hashlib.blake2b(f"{key}|{step}|{sample}".encode(), digest_size=4).digest()
    return float(int.from_bytes(digest, "little") % 12 < int(key[1:]))


def entropy_under(temperature: float, step: int) -> float:
    # a policy whose entropy decays with training and rises with the temperature
    return 0.8 * temperature**2 * math.exp(-0.05 * step)


def run_step(state: BridgeState, step: int) -> dict[str, Any]:
    """One global step of the bridge's state machine, as the trainer drives it."""
    keys = PROMPTS[(step * BATCH) % len(PROMPTS) :][:BATCH]
    ead = state.ead_params()
    temperature = state.temperature
    counts = state.allocate(keys)
    for key, n in zip(keys, counts, strict=True):
        state.record(key, [reward(key, step, j) for j in range(n)])
    if (step + 1) * BATCH % len(PROMPTS) == 0:
        state.pending_epoch_end = True  # the generator saw the end of the pass
    entropy = entropy_under(temperature, step)
    tokens = 100.0 * sum(counts)
    metrics = state.finish_step(entropy * tokens, tokens)
    return {"decay": ead.decay, "temperature": temperature, "counts": counts, "metrics": metrics}


def test_metrics_of_a_step():
    _, config = parse()
    state = new_state(config)
    first = run_step(state, 0)["metrics"]
    assert first["ead/d_s"] == 20 * 25 and first["e3/temperature"] == 1.0
    assert first["e3/entropy"] == pytest.approx(0.8)
    assert first["e3/target_entropy"] == pytest.approx(0.8)  # H_init after the warm-up step
    assert first["e3/budget/frac_n6"] == 1.0 and first["e3/budget/n_mean"] == 6
    for key in ("frac_all_wrong", "frac_all_correct", "n_min", "n_max", "alloc_max"):
        assert f"e3/budget/{key}" in first
    second = run_step(state, 1)["metrics"]
    assert second["ead/d_s"] == 20 * (25 + 5)
    assert second["e3/temperature"] == first["e3/next_temperature"]


@pytest.mark.parametrize("stop_after", [1, 3, 5, 8])
def test_save_load_continue_equals_an_uninterrupted_run(tmp_path, stop_after):
    _, config = parse()
    straight = new_state(config)
    expected = [run_step(straight, s) for s in range(STEPS)]

    state = new_state(config)
    got = [run_step(state, s) for s in range(stop_after)]
    client_states = {"global_step": stop_after}
    state.save_into(client_states)
    torch.save(client_states, tmp_path / "client_states.pt")  # DeepSpeed pickles them so
    del state
    resumed = new_state(config)
    resumed.restore_from(torch.load(tmp_path / "client_states.pt", weights_only=False))
    got += [run_step(resumed, s) for s in range(stop_after, STEPS)]
    assert got == expected
    assert resumed.allocator.epoch == STEPS * BATCH // len(PROMPTS)
    assert resumed.controller.state_dict() == straight.controller.state_dict()
    assert resumed.allocator.state_dict() == straight.allocator.state_dict()


def test_restore_checks_step_and_features(caplog):
    _, config = parse()
    state = new_state(config)
    run_step(state, 0)
    saved = {"global_step": 1}
    state.save_into(saved)
    with pytest.raises(
        ValueError, match="bridge state is at step 1 but the checkpoint at global step 2"
    ):
        new_state(config).restore_from({**saved, "global_step": 2})
    no_budget = BridgeState(
        config.__class__(ead=config.ead, budget=None, temperature=config.temperature),
        default_n=N, base_temperature=1.0, vocab_size=40,
    )  # fmt: skip
    with pytest.raises(ValueError, match="saved with --e3.dynamic_budget"):
        no_budget.restore_from(saved)
    fresh = new_state(config)
    fresh.restore_from({"global_step": 5})  # a checkpoint made without the bridge
    assert fresh.step == 5 and "no openrlhf_bridge state" in caplog.text


def test_controller_is_never_silently_inactive():
    _, config = parse()
    with pytest.raises(RuntimeError, match="got no entropy"):
        new_state(config).finish_step(0.0, 0.0)


# ---- through the trainer's methods -------------------------------------------------


class FakeGroup:
    """A RayActorGroup stand-in: ``async_run_method`` calls ``handler`` once per rank."""

    def __init__(self, ranks: int, handler) -> None:
        self.ranks, self.handler, self.calls = ranks, handler, []

    def async_run_method(self, method_name, *args, **kwargs):
        self.calls.append((method_name, kwargs))
        return [self.handler(rank, method_name, **kwargs) for rank in range(self.ranks)]


class FakeWandb:
    def __init__(self) -> None:
        self.logged: list[dict] = []

    def log(self, data):
        self.logged.append(data)


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setattr(ray, "get", lambda value, **_: value)


def make_trainer(args, config, checkpoint: dict):
    trainer = object.__new__(_EADPPOTrainer)
    trainer.args = args
    trainer.bridge = new_state(config)
    trainer.best_eval_metric_key = ""
    trainer.best_eval_metric_value = float("-inf")
    trainer._latest_eval_metric_value = None
    trainer.critic_model_group = None
    trainer.reference_model_group = FakeGroup(1, lambda *a, **k: None)
    trainer.tensorboard_logger = None
    trainer.wandb_logger = object.__new__(WandbLogger)  # OpenRLHF's logger, stand-in wandb
    trainer.wandb_logger.handle = FakeWandb()
    entropy_per_rank = [(30.0, 100.0), (10.0, 100.0)]  # rank 0: 0.3 nats/token, rank 1: 0.1

    def actor_rank(rank, method, **kwargs):
        if method == "save_checkpoint":
            # DeepSpeed's save_checkpoint pickles client_state; only rank 0's copy matters
            checkpoint.clear()
            checkpoint.update(torch.load(_roundtrip(kwargs["client_states"]), weights_only=False))
        elif method == "get_checkpoint_states":
            return dict(checkpoint)
        elif method == "bridge_pop_entropy":
            return entropy_per_rank[rank]
        return None

    trainer.actor_model_group = FakeGroup(2, actor_rank)
    return trainer


def _roundtrip(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_trainer_saves_restores_and_logs_through_openrlhf(tmp_path, no_ray):
    args, config = parse(tmp_path)
    checkpoint: dict = {}
    trainer = make_trainer(args, config, checkpoint)
    assert trainer.init_checkpoint_states()["global_step"] == 0  # nothing saved yet
    assert trainer.bridge.step == 0

    trainer.bridge_push_state()
    pushed = trainer.actor_model_group.calls[-1]
    assert pushed == ("bridge_set_state", {"temperature": 1.0, "ead": None})  # TIS: no tau_t
    assert trainer.reference_model_group.calls[-1] == pushed
    status = trainer.bridge_finish_step()
    # global token-weighted mean over both policy ranks: (30 + 10) / 200
    assert status["e3/entropy"] == pytest.approx(0.2)

    trainer.bridge.finish_step(0.1, 1.0)  # a second step, entropy below target: hotter
    assert trainer.bridge.temperature > 1.0

    client_states = {"episode": 0, "global_step": 2, "total_consumed_prompts": 8}
    trainer.save_logs_and_checkpoints(2, dict(status), client_states)
    assert checkpoint[STATE_KEY] == trainer.bridge.state_dict()
    logged = trainer.wandb_logger.handle.logged[-1]
    for key in ("e3/temperature", "e3/entropy", "e3/target_entropy", "ead/d_s",
                "e3/budget/n_min", "e3/budget/n_max"):  # fmt: skip
        assert f"train/{key}" in logged
    assert logged["train/global_step"] == 2

    (tmp_path / "_actor").mkdir()  # what DeepSpeed's save leaves, and OpenRLHF looks for
    resumed = make_trainer(args, config, checkpoint)
    states = resumed.init_checkpoint_states()
    assert states["global_step"] == 2
    assert resumed.bridge.state_dict() == trainer.bridge.state_dict()
    assert resumed.bridge.temperature == trainer.bridge.temperature


def test_rollout_steps_from_the_dataset():
    args, _ = parse()
    args.rollout.batch_size, args.train.num_episodes = 4, 3
    assert rollout_steps(10, args) == 9


@pytest.mark.parametrize("correction", ["positional", "tis"])
def test_train_step_logs_the_actor_tau_range(correction, monkeypatch, no_ray):
    """Positional mode: the range of tau_t over the step's action tokens joins the metrics
    (a token's logit gradients are scaled by 1 / tau_t)."""
    from openrlhf.trainer.ppo_trainer import PPOTrainer
    from openrlhf.trainer.ppo_utils.experience import Experience

    namespace, config = train_ppo_ray.parse_args(
        [*FLAGS[:10], "--ead.enable", "--ead.d0", "4", "--ead.tau_min", "0.1",
         "--ead.correction", correction]
    )  # fmt: skip
    trainer = object.__new__(_EADPPOTrainer)
    trainer.args = hierarchize(namespace)
    trainer.bridge = BridgeState(config, default_n=N, base_temperature=1.0)
    trainer.bridge_swaps_checked = True  # tests/bridge/test_bridge_swaps.py covers the check
    trainer.actor_model_group = FakeGroup(2, lambda *a, **k: None)
    trainer.reference_model_group = None
    monkeypatch.setattr(  # OpenRLHF's step itself needs the Ray model groups and DeepSpeed
        PPOTrainer.__ray_actor_class__, "train_step", lambda self, samples, step: ({}, step + 1)
    )
    samples = [
        Experience(action_mask=torch.tensor([[1, 1, 1, 0, 0]])),
        Experience(action_mask=torch.ones(1, 20, dtype=torch.long)),
    ]
    status, step = trainer.train_step(samples, 0)
    assert step == 1 and status["ead/d_s"] == 4.0
    if correction == "tis":
        assert "ead/actor_tau_min" not in status  # TIS trains at the base temperature
        return
    ead = config.ead.params_at(0)
    taus = [ead.temperature_at(float(t)) for t in range(20)]
    assert status["ead/actor_tau_max"] == pytest.approx(max(taus)) == pytest.approx(1.2)
    assert status["ead/actor_tau_min"] == pytest.approx(min(taus)) == pytest.approx(0.1)
