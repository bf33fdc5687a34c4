"""OpenRLHF's synchronous PPO trainer (the single controller) with the bridge's state.

``EADPPOTrainer`` is ``PPOTrainer`` with:

* the rollout generator and experience maker replaced by the bridge's
  subclasses, sharing one :class:`BridgeState`;
* ``train_step`` wrapped: before it, the step's temperature (and per-position
  EAD params) go to the policy and reference workers; after it, the global
  token-weighted entropy of the step's rollouts (summed over all policy
  ranks) updates the controller, a finished dataset pass closes the budget's
  epoch, and the bridge's metrics join OpenRLHF's status (logged to
  wandb/tensorboard by OpenRLHF);
* the bridge state saved in, and restored from, OpenRLHF's checkpoints;
* at the first step, a check that every bridge class is the one OpenRLHF
  instantiated (:meth:`bridge_check_swaps`), which stops the run with
  :class:`~openrlhf_bridge.swaps.BridgeSwapError` otherwise;
* with ``--ead.correction positional``, the range of ``tau_t`` over the step's
  action tokens logged as ``ead/actor_tau_min`` / ``ead/actor_tau_max``: the
  logit gradients of a token are scaled by ``1 / tau_t``.
"""

from __future__ import annotations

import math
from typing import Any

import ray
from openrlhf.trainer.ppo_trainer import PPOTrainer

from openrlhf_bridge.actor import action_tau_range
from openrlhf_bridge.config import BridgeConfig
from openrlhf_bridge.experience import GroupedExperienceMaker
from openrlhf_bridge.rollout import EADSamplesGenerator
from openrlhf_bridge.state import BridgeState
from openrlhf_bridge.swaps import POLICY, REFERENCE, ROLLOUT, check_handles, check_instance


def rollout_steps(num_prompts: int, args: Any) -> int:
    """Global steps of a run: ceil(prompts / prompts per step) per episode."""
    per_step = args.rollout.vllm_generate_batch_size or args.rollout.batch_size
    return max(1, math.ceil(num_prompts / per_step)) * args.train.num_episodes


def actor_tau_metrics(rollout_samples: list[Any], bridge: BridgeState) -> dict[str, float]:
    """``ead/actor_tau_min`` / ``ead/actor_tau_max`` of the step (positional correction only).

    The range of ``tau_t`` the actor and reference model divide the step's
    action-token logits by (times the base temperature), from the samples'
    action masks and the step's schedule.
    """
    if not bridge.config.positional:
        return {}
    low, high = action_tau_range((s.action_mask for s in rollout_samples), bridge.ead_params())
    return {"ead/actor_tau_min": low, "ead/actor_tau_max": high}


class _EADPPOTrainer(PPOTrainer.__ray_actor_class__):
    """OpenRLHF's ``PPOTrainer`` with EAD/E3 state (see the module docstring)."""

    bridge_swaps_checked = False

    def __init__(
        self,
        pretrain: str,
        strategy: Any,
        actor_model_group: Any,
        critic_model_group: Any,
        reward_model_group: Any,
        reference_model_group: Any,
        vllm_engines: Any,
        **generate_kwargs: Any,
    ) -> None:
        super().__init__(
            pretrain,
            strategy,
            actor_model_group,
            critic_model_group,
            reward_model_group,
            reference_model_group,
            vllm_engines,
            **generate_kwargs,
        )
        self.bridge = make_bridge_state(self.args, self.tokenizer, len(self.prompts_dataloader))
        self.samples_generator = EADSamplesGenerator(
            strategy=strategy,
            prompts_dataloader=self.prompts_dataloader,
            eval_dataloader=self.eval_dataloader,
            tokenizer=self.tokenizer,
            vllm_engines=vllm_engines,
            bridge=self.bridge,
        )
        self.experience_maker = GroupedExperienceMaker(
            self.actor_model_group,
            self.critic_model_group,
            self.reward_model_group,
            self.reference_model_group,
            self.kl_ctl,
            self.strategy,
            self.tokenizer,
            bridge=self.bridge,
        )

    def train_step(self, rollout_samples: Any, global_step: int):
        if global_step != self.bridge.step:
            raise RuntimeError(
                f"bridge schedules are at step {self.bridge.step}, the trainer at {global_step}"
            )
        if not self.bridge_swaps_checked:
            self.bridge_check_swaps()
        tau = actor_tau_metrics(rollout_samples, self.bridge)
        self.bridge_push_state()
        status, next_step = super().train_step(rollout_samples, global_step)
        status.update(self.bridge_finish_step())
        status.update(tau)
        return status, next_step

    def bridge_check_swaps(self) -> None:
        """Stop unless every class the bridge swaps is the bridge's in this run.

        Checks the rollout generator and experience maker this trainer holds,
        and the class behind every rollout engine, policy and reference worker
        handle; then tells the policy workers that the trainer is the bridge's
        (they refuse to make experience otherwise). Raises
        :class:`~openrlhf_bridge.swaps.BridgeSwapError` naming what is stock.
        """
        check_instance("rollout generator", self.samples_generator, EADSamplesGenerator)
        check_instance("experience maker", self.experience_maker, GroupedExperienceMaker)
        check_handles(ROLLOUT, list(self.vllm_engines or []))
        # RayActorGroup keeps its handles in _actor_handlers (0.11.2 has no public accessor)
        check_handles(POLICY, self.actor_model_group._actor_handlers)
        if self.reference_model_group is not None:
            check_handles(REFERENCE, self.reference_model_group._actor_handlers)
        ray.get(self.actor_model_group.async_run_method("bridge_trainer_checked_in"))
        self.bridge_swaps_checked = True

    def bridge_push_state(self) -> None:
        """Send the step's temperature/EAD params to every policy and reference worker."""
        if not self.bridge.config.actor_temperature:
            return
        state = self.bridge.actor_state()
        refs = self.actor_model_group.async_run_method("bridge_set_state", **state)
        if self.reference_model_group is not None:
            refs += self.reference_model_group.async_run_method("bridge_set_state", **state)
        ray.get(refs)

    def bridge_finish_step(self) -> dict[str, float]:
        """Feed the global entropy to the controller, advance the schedules, return metrics."""
        entropy_sum = entropy_tokens = 0.0
        if self.bridge.controller is not None:
            # Sum over every policy rank: exact for data parallelism and ring attention
            # (disjoint tokens); tensor-parallel duplicates scale both sums alike.
            for total, tokens in ray.get(
                self.actor_model_group.async_run_method("bridge_pop_entropy")
            ):
                entropy_sum += total
                entropy_tokens += tokens
        return self.bridge.finish_step(entropy_sum, entropy_tokens)

    def init_checkpoint_states(self) -> dict:
        states = super().init_checkpoint_states()
        self.bridge.restore_from(states)
        return states

    def save_logs_and_checkpoints(
        self, global_step: int, logs_dict=None, client_states=None
    ) -> None:
        if client_states is not None:
            # the same dict also reaches save_best_checkpoint
            self.bridge.save_into(client_states)
        super().save_logs_and_checkpoints(global_step, logs_dict, client_states)


def make_bridge_state(args: Any, tokenizer: Any, num_prompts: int) -> BridgeState:
    """The run's :class:`BridgeState` from OpenRLHF's ``args`` and the prompt dataset size."""
    return BridgeState(
        BridgeConfig.from_args(args),
        default_n=args.rollout.n_samples_per_prompt,
        base_temperature=args.rollout.temperature,
        vocab_size=len(tokenizer),
        total_steps=rollout_steps(num_prompts, args),
        seed=args.train.seed,
    )


EADPPOTrainer = ray.remote(_EADPPOTrainer)
