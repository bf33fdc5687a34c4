"""Fold a request's EAD settings into vLLM's native ``vllm_xargs``.

A request may carry EAD in three ways, and this module turns all of them into
the flat ``ead_*`` keys that the sampler reads from ``SamplingParams.extra_args``:

* ``"ead": {"tau_max": 1.2, "tau_min": 0.1, "decay": 500}`` (first-class
  object, fields of :class:`~ead_vllm.params.EADParams`; omitted fields take the
  server defaults, else the model defaults), ``"ead": true`` (the server
  defaults) or ``"ead": false`` (plain sampling for this request);
* vLLM's ``"vllm_xargs": {"ead_tau_max": 1.2, ...}``;
* nothing: the server-wide defaults apply when the server has them.

Mixing an ``ead`` object with ``ead_*`` keys in ``vllm_xargs`` is an error
rather than a silent precedence rule.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ead_vllm.params import (
    EXTRA_ARGS_PREFIX,
    EXTRA_ARGS_SWITCH,
    EADParams,
    EADParamsError,
    describe_validation_error,
)


class EADRequestError(ValueError):
    """A request's EAD settings are invalid; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _validation_error(exc: ValidationError) -> EADRequestError:
    message, fields = describe_validation_error(exc, lambda field: f"ead.{field}")
    return EADRequestError(f"invalid 'ead' object: {message}", fields[0])


def _params_from_object(obj: dict[str, Any], defaults: EADParams | None) -> EADParams:
    base = defaults.model_dump() if defaults is not None else {}
    try:
        return EADParams(**{**base, **obj})
    except ValidationError as exc:
        raise _validation_error(exc) from None
    except TypeError as exc:  # non-string keys
        raise EADRequestError(f"invalid 'ead' object: {exc}", "ead") from None


def _params_from_xargs(xargs: dict[str, Any], defaults: EADParams | None) -> EADParams | None:
    """The ``ead_*`` keys of ``vllm_xargs`` over ``defaults``; ``None``: ``ead_enabled: 0``."""
    try:
        return EADParams.from_extra_args(xargs, defaults)
    except EADParamsError as exc:
        raise EADRequestError(str(exc), f"vllm_xargs.{exc.keys[0]}") from None


def apply_ead(body: Any, defaults: EADParams | None = None) -> Any:
    """Return ``body`` with its EAD settings validated and folded into ``vllm_xargs``.

    ``body`` is the decoded JSON of a completions or chat-completions request;
    anything that is not a JSON object is returned unchanged (vLLM rejects it).
    ``defaults`` are the server-wide EAD settings, or ``None`` when annealed
    decoding is opt-in per request. Raises :class:`EADRequestError` for bad
    settings. The input is not modified; when nothing changes it is returned
    itself, so callers can skip re-encoding it.
    """
    if not isinstance(body, dict):
        return body
    original = body
    body = dict(body)
    has_object = "ead" in body
    ead = body.pop("ead", None)
    xargs = body.get("vllm_xargs")
    if xargs is not None and not isinstance(xargs, dict):
        # vLLM's own schema validation reports it
        return body if has_object else original
    xargs = dict(xargs or {})
    ead_keys = {k: v for k, v in xargs.items() if str(k).startswith(EXTRA_ARGS_PREFIX)}
    others = {k: v for k, v in xargs.items() if k not in ead_keys}

    if ead is False:
        if ead_keys:
            raise EADRequestError("'ead': false conflicts with ead_* keys in vllm_xargs", "ead")
        # also opts out of an engine's own defaults (EAD_VLLM_DEFAULTS)
        body["vllm_xargs"] = {**others, EXTRA_ARGS_SWITCH: 0}
        return body
    if has_object and ead is not None and ead_keys:
        raise EADRequestError(
            "give EAD settings either as the 'ead' object or as ead_* keys in vllm_xargs, not both",
            "ead",
        )
    if isinstance(ead, dict):
        params: EADParams | None = _params_from_object(ead, defaults)
    elif ead is True:
        params = defaults if defaults is not None else EADParams()
    elif ead is None and ead_keys:
        params = _params_from_xargs(ead_keys, defaults)
        if params is None:  # ead_enabled: 0, which also opts out of the engine's defaults
            body["vllm_xargs"] = {**others, EXTRA_ARGS_SWITCH: 0}
            return body
    elif ead is None:
        params = defaults
    else:
        raise EADRequestError(
            f"'ead' must be an object, true, false or null; got {type(ead).__name__}", "ead"
        )
    if params is None:
        return body if has_object else original
    body["vllm_xargs"] = {**others, **params.to_extra_args()}
    return body
