"""Frontend validation of the per-request ``ead_*`` keys of ``SamplingParams.extra_args``.

Runs where vLLM validates requests (the API / ``LLM`` process), so a bad value
fails the request with an error naming the key and never reaches a worker.
"""

from __future__ import annotations

from typing import Any

from ead_vllm.params import EADParams, EADParamsError


def parse_ead_params(sampling_params: Any, defaults: EADParams | None = None) -> EADParams | None:
    """The request's :class:`EADParams` (its ``ead_*`` keys over the engine's ``defaults``),
    or ``None`` for a request that is not annealed (see ``EADParams.from_extra_args``).

    Raises ``vllm.exceptions.VLLMValidationError`` (HTTP 400
    in the server) whose message and ``parameter`` name the offending key.
    """
    try:
        return EADParams.from_extra_args(getattr(sampling_params, "extra_args", None), defaults)
    except EADParamsError as exc:
        from vllm.exceptions import VLLMValidationError

        extra = sampling_params.extra_args or {}
        key = exc.keys[0] if exc.keys else None
        raise VLLMValidationError(
            str(exc), parameter=key, value=extra.get(key) if key else None
        ) from None
