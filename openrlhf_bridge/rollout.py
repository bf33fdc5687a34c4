"""OpenRLHF's rollout generator with EAD params, the controller's temperature and per-prompt n.

Overrides ``_dispatch_prompts_to_vllm`` (one ``SamplingParams`` per prompt,
each prompt with its own rollout count) and notes the end of each pass over
the prompt dataset for the budget. Evaluation rollouts are OpenRLHF's own
(no EAD, no budget, the evaluation temperature).

Every dispatched prompt is a rollout *instance* with its own id: the bridge's
engines echo the id in each response (``bridge_generate_responses``), the
generator stamps it on each ``Experience``, and :meth:`generate_samples` hands
the trainer's :class:`BridgeState` the instance and prompt key of every
sample in rollout order (:class:`openrlhf_bridge.state.RolloutRecord`). A group
for the advantages is one instance, so two dataset rows with the same prompt
and label in one batch are two groups, as in stock OpenRLHF.
"""

from __future__ import annotations

import heapq
from typing import Any

import ray
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

from openrlhf_bridge.sampling import INSTANCE_KEY, prompt_key, rollout_sampling_params
from openrlhf_bridge.state import BridgeState, RolloutRecord


def balance_engines(pending: list[int], counts: list[int]) -> list[int]:
    """Engine index per prompt: each prompt goes to the least-loaded engine, load += its count."""
    heap = [(load, index) for index, load in enumerate(pending)]
    heapq.heapify(heap)
    chosen = []
    for count in counts:
        load, index = heapq.heappop(heap)
        chosen.append(index)
        heapq.heappush(heap, (load + count, index))
    return chosen


class EADSamplesGenerator(SamplesGenerator):
    """``SamplesGenerator`` driven by a :class:`BridgeState` (keyword ``bridge``)."""

    def __init__(self, *args: Any, bridge: BridgeState, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bridge = bridge
        self._evaluating = False
        self._next_instance = 0
        self._instance_keys: dict[int, str] = {}  # dispatched, not yet handed to the trainer

    def generate_samples(self, **generate_kwargs: Any):
        samples, pass_rate, consumed, exhausted = super().generate_samples(**generate_kwargs)
        instances = [getattr(s, "bridge_instance", None) for s in samples]
        if None in instances:
            raise RuntimeError(
                "a rollout sample came back without its instance id: the rollout engines are "
                "not the bridge's (openrlhf_bridge.vllm_engine)"
            )
        self.bridge.rollout = RolloutRecord(
            instances=instances, keys=[self._instance_keys[i] for i in instances]
        )
        for instance in set(instances):
            del self._instance_keys[instance]
        if exhausted:
            if samples:
                # the pass ends after this batch is trained (its rewards are recorded then)
                self.bridge.pending_epoch_end = True
            else:
                self.bridge.end_epoch()
            self._instance_keys.clear()  # dynamically filtered prompts never come back
        return samples, pass_rate, consumed, exhausted

    def _process_response_into_experience(self, response: dict, **generate_kwargs: Any):
        experience = super()._process_response_into_experience(response, **generate_kwargs)
        # read back in generate_samples, before OpenRLHF concatenates the samples
        experience.bridge_instance = response.get(INSTANCE_KEY)
        return experience

    def generate_eval_samples(self, **generate_kwargs: Any):
        self._evaluating = True
        try:
            return super().generate_eval_samples(**generate_kwargs)
        finally:
            self._evaluating = False

    def rollout_plan(self, prompts: list[str], labels: list[Any], **generate_kwargs: Any):
        """(``SamplingParams``, rollout count) per prompt for the current step.

        Counts come from the budget (sum = ``len(prompts) * n_samples_per_prompt``);
        the params carry the step's temperature, and its EAD schedule (``d_s``
        of :attr:`BridgeState.step`) in ``extra_args``.
        """
        keys = [prompt_key(p, lab) for p, lab in zip(prompts, labels, strict=True)]
        counts = self.bridge.allocate(keys)
        params = rollout_sampling_params(
            generate_kwargs,
            temperature=self.bridge.temperature,
            ead=self.bridge.ead_params(),
            logprobs=self.args.algo.advantage.is_correction_level != "off",
        )
        return [(params, n) for n in counts]

    def _dispatch_prompts_to_vllm(
        self,
        prompts: list[str],
        labels: list[Any],
        *,
        images: list | None = None,
        **generate_kwargs: Any,
    ) -> list:
        if self._evaluating:
            return super()._dispatch_prompts_to_vllm(
                prompts, labels, images=images, **generate_kwargs
            )
        plan = self.rollout_plan(prompts, labels, **generate_kwargs)
        pending = ray.get([e.get_num_unfinished_requests.remote() for e in self.vllm_engines])
        engines = balance_engines(pending, [n for _, n in plan])
        images = images if images is not None else [None] * len(prompts)
        refs = []
        for prompt, label, image, (params, n), engine in zip(
            prompts, labels, images, plan, engines, strict=True
        ):
            instance = self._next_instance
            self._next_instance += 1
            self._instance_keys[instance] = prompt_key(prompt, label)
            refs.append(
                self.vllm_engines[engine].bridge_generate_responses.remote(
                    instance=instance,
                    prompt=prompt,
                    label=label,
                    sampling_params=params,
                    max_length=generate_kwargs.get("max_len", 2048),
                    hf_tokenizer=self.tokenizer,
                    num_samples=n,
                    images=image,
                )
            )
        return refs
