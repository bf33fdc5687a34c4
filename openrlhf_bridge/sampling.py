"""The vLLM ``SamplingParams`` of a bridge rollout request, and prompt identity.

Contract with the EAD sampler (``additional_config={"sampler": "ead"}`` on the
engine): the schedule travels in ``SamplingParams.extra_args`` as the flat
``ead_*`` keys of :meth:`ead_vllm.params.EADParams.to_extra_args`; the sampler
uses ``temperature * tau_t`` per generated-token position ``t``; with
``logprobs_mode="processed_logprobs"`` the sampled token's log-prob is the
annealed one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from vllm import SamplingParams

from ead_vllm.params import EADParams

# the response key under which the bridge's engines echo a request's rollout instance
INSTANCE_KEY = "openrlhf_bridge_instance"


def tag_responses(responses: list[dict[str, Any]], instance: int) -> list[dict[str, Any]]:
    """``responses`` (OpenRLHF's response dicts of one request) with ``INSTANCE_KEY: instance``."""
    return [{**response, INSTANCE_KEY: instance} for response in responses]


def prompt_key(prompt: str, label: Any = None) -> str:
    """Stable id of a dataset item: a hash of its prompt text and label.

    The difficulty id of the rollout budget (so it must not depend on the
    batch or the process): equal prompt and label give the same key. Not a
    group id: two rows with equal prompt and label in one batch are two
    rollout instances, hence two groups.
    """
    text = f"{prompt}\x00{label!r}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def rollout_sampling_params(
    generate_kwargs: Mapping[str, Any],
    *,
    temperature: float,
    ead: EADParams | None,
    logprobs: bool,
) -> SamplingParams:
    """The ``SamplingParams`` of one training rollout request.

    Same fields as OpenRLHF's ``SamplesGenerator._dispatch_prompts_to_vllm``
    (top_p, top_k, max_tokens from ``max_new_tokens``, min_tokens,
    skip_special_tokens), with ``temperature`` (the controller's, or the fixed
    one) and, when ``ead`` is given, its ``ead_*`` keys in ``extra_args``.
    ``logprobs`` (OpenRLHF's IS correction is on) asks for the sampled token's
    log-prob only: ``logprobs=0``. OpenRLHF asks for ``logprobs=1``, the
    sampled token plus the top-1 token, which makes vLLM's runner V1 compute a
    full ``log_softmax`` over [batch, vocab] every step to rank a top token that
    OpenRLHF's executors never read (they take the sampled token's entry only);
    the EAD sampler returns the sampled token's log-prob without that pass.
    """
    return SamplingParams(
        temperature=temperature,
        top_p=generate_kwargs.get("top_p", 1.0),
        top_k=generate_kwargs.get("top_k", -1),
        max_tokens=generate_kwargs.get("max_new_tokens"),
        min_tokens=generate_kwargs.get("min_new_tokens", 1),
        skip_special_tokens=generate_kwargs.get("skip_special_tokens", False),
        logprobs=0 if logprobs else None,
        extra_args=ead.to_extra_args() if ead is not None else None,
    )
