"""How the EAD sampler is switched on: ``additional_config["sampler"]``.

The choice travels inside ``VllmConfig.additional_config`` because that dict
reaches the engine core and every worker (and the config hash) unchanged,
whether the engine was built from ``vllm serve --sampler ead`` or from
``LLM(..., additional_config={"sampler": "ead"})``.

For engines whose construction a user does not control (a trainer's colocated
``LLM``, a rollout server started by a framework, a Ray actor), the environment
variable ``EAD_VLLM_SAMPLER=ead`` chooses the sampler of every engine whose config is
created in that process tree. Precedence: ``--sampler`` / an explicit
``additional_config["sampler"]`` first, then ``EAD_VLLM_SAMPLER``, then ``default``.
The variable is copied into ``additional_config`` when the engine config is created
(:func:`with_env_settings`), so workers see the choice even where the environment
does not reach them; the start-up gate applies as usual.

**Engine-wide EAD defaults**, for requests that cannot carry ``ead_*`` keys:
``additional_config["ead_defaults"]`` (or ``EAD_VLLM_DEFAULTS``, a JSON object, copied
the same way; an explicit one wins), with the fields of
:class:`~ead_vllm.params.EADParams`. With ``sampler="ead"``, every request without
``ead_*`` keys is annealed with them; a request's own keys go over them; ``ead_enabled:
0`` in ``extra_args`` (``"ead": false`` over HTTP) opts a request out. They are the same
for every request of the engine: a training-step-aware decay needs per-request params.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from ead_vllm.vllm_ext.errors import EADConfigError

if TYPE_CHECKING:
    from ead_vllm.params import EADParams

SAMPLER_CONFIG_KEY = "sampler"
DEFAULT_SAMPLER = "default"
EAD_SAMPLER = "ead"
SAMPLER_CHOICES: tuple[str, ...] = (DEFAULT_SAMPLER, EAD_SAMPLER)
SAMPLER_ENV = "EAD_VLLM_SAMPLER"
DEFAULTS_CONFIG_KEY = "ead_defaults"
DEFAULTS_ENV = "EAD_VLLM_DEFAULTS"

SPEC_DECODE_REFUSAL = (
    "the EAD sampler (sampler='ead') does not support speculative decoding: "
    "draft tokens would be verified against the unannealed distribution"
)
SPEC_DECODE_WAY_OUT = (
    "start the engine without a speculative config, or use the EAD logits "
    "processor of runner V2 instead"
)


def sampler_from_env() -> str | None:
    """The sampler named by ``EAD_VLLM_SAMPLER`` (``None`` when unset or empty).

    Raises ``ValueError`` naming the variable for a value outside :data:`SAMPLER_CHOICES`.
    """
    value = os.environ.get(SAMPLER_ENV, "").strip()
    if not value:
        return None
    if value not in SAMPLER_CHOICES:
        raise ValueError(
            f"{SAMPLER_ENV} must be one of {', '.join(SAMPLER_CHOICES)}; got {value!r}"
        )
    return value


def with_env_settings(additional_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """``additional_config`` with ``EAD_VLLM_SAMPLER``'s choice and ``EAD_VLLM_DEFAULTS``'
    defaults added where it does not set them itself (an explicit setting wins)."""
    extra = dict(additional_config or {})
    choice = sampler_from_env()
    if choice is not None and extra.get(SAMPLER_CONFIG_KEY) is None:
        extra[SAMPLER_CONFIG_KEY] = choice
    defaults = os.environ.get(DEFAULTS_ENV, "").strip()
    if defaults and extra.get(DEFAULTS_CONFIG_KEY) is None:
        extra[DEFAULTS_CONFIG_KEY] = defaults  # parsed and checked by engine_ead_defaults
    return extra if extra != (additional_config or {}) else additional_config


def engine_ead_defaults(vllm_config: Any) -> EADParams | None:
    """The engine's EAD defaults (``additional_config["ead_defaults"]``), or ``None``.

    Raises :class:`~ead_vllm.vllm_ext.errors.EADConfigError` naming the setting for a
    value that is not a JSON object of valid :class:`~ead_vllm.params.EADParams` fields.
    """
    extra = getattr(vllm_config, "additional_config", None)
    raw = extra.get(DEFAULTS_CONFIG_KEY) if isinstance(extra, dict) else None
    if raw is None:
        return None
    return _parse_defaults(raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _parse_defaults(text: str) -> EADParams:
    from pydantic import ValidationError

    from ead_vllm.params import EADParams, describe_validation_error

    where = f"additional_config[{DEFAULTS_CONFIG_KEY!r}] (or {DEFAULTS_ENV})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EADConfigError(f"{where} is not JSON: {exc}", way_out=_DEFAULTS_WAY_OUT) from None
    if not isinstance(value, dict):
        raise EADConfigError(f"{where} must be a JSON object", way_out=_DEFAULTS_WAY_OUT)
    try:
        return EADParams(**value)
    except ValidationError as exc:
        message, _ = describe_validation_error(exc)
        raise EADConfigError(f"{where}: {message}", way_out=_DEFAULTS_WAY_OUT) from None
    except TypeError as exc:
        raise EADConfigError(f"{where}: {exc}", way_out=_DEFAULTS_WAY_OUT) from None


_DEFAULTS_WAY_OUT = (
    'give a JSON object of EAD fields, e.g. {"tau_max": 1.2, "tau_min": 0.1, "decay": 500}'
)


def sampler_choice(vllm_config: Any) -> str:
    """The sampler named in ``vllm_config.additional_config`` (``"default"`` if absent).

    Raises ``ValueError`` for a value outside :data:`SAMPLER_CHOICES`.
    """
    extra = getattr(vllm_config, "additional_config", None)
    choice = extra.get(SAMPLER_CONFIG_KEY, DEFAULT_SAMPLER) if isinstance(extra, dict) else None
    choice = DEFAULT_SAMPLER if choice is None else choice
    if choice not in SAMPLER_CHOICES:
        raise ValueError(
            f"additional_config[{SAMPLER_CONFIG_KEY!r}] must be one of "
            f"{', '.join(SAMPLER_CHOICES)}; got {choice!r}"
        )
    return choice


def ead_sampler_enabled(vllm_config: Any) -> bool:
    """True when the engine was configured with ``sampler="ead"``."""
    return sampler_choice(vllm_config) == EAD_SAMPLER


def _processor_names(processors: Iterable[Any] | None) -> list[str]:
    names = []
    for proc in processors or ():
        names.append(proc if isinstance(proc, str) else f"{proc.__module__}:{proc.__qualname__}")
    return names


def runner_of(vllm_config: Any) -> Literal["v1", "v2"]:
    """The model runner vLLM will build for ``vllm_config``.

    Runner V2 where the installed vLLM has no other (0.34.0 and later); otherwise
    what ``VllmConfig.use_v2_model_runner`` says (vLLM 0.24-0.33).
    """
    from ead_vllm.vllm_ext.seams.versions import installed_vllm_version, runners

    if "v1" not in runners(installed_vllm_version()):
        return "v2"
    return "v2" if getattr(vllm_config, "use_v2_model_runner", False) else "v1"


def check_ead_config(vllm_config: Any, runner: Literal["v1", "v2"] | None = None) -> None:
    """Refuse configurations the EAD sampler cannot serve correctly.

    Raises :class:`~ead_vllm.vllm_ext.errors.UnsupportedVLLMError` when the
    installed vLLM is outside the supported set or the seams of ``runner``
    (default: the one ``vllm_config`` selects) do not have the expected shape;
    ``ValueError`` for an unknown sampler name; :class:`~ead_vllm.vllm_ext.errors.
    EADConfigError` (a ``ValueError``) for speculative decoding with
    ``sampler="ead"``, and for the EAD logits processor registered together with
    the EAD sampler (the schedule would apply twice), and for engine-wide EAD
    defaults that are invalid, or set while the EAD sampler is off. With the EAD
    sampler off nothing else is imported or checked.
    """
    if not ead_sampler_enabled(vllm_config):
        extra = getattr(vllm_config, "additional_config", None)
        if isinstance(extra, dict) and extra.get(DEFAULTS_CONFIG_KEY) is not None:
            raise EADConfigError(
                f"{DEFAULTS_CONFIG_KEY} (or {DEFAULTS_ENV}) is set but the EAD sampler is off, "
                "so no request would be annealed",
                way_out="also set sampler='ead' (--sampler ead, EAD_VLLM_SAMPLER=ead)",
            )
        return
    from ead_vllm.vllm_ext.seams.gate import check_vllm

    check_vllm(runner or runner_of(vllm_config))
    engine_ead_defaults(vllm_config)  # a bad value refuses here, before any request
    if getattr(vllm_config, "speculative_config", None) is not None:
        raise EADConfigError(SPEC_DECODE_REFUSAL, way_out=SPEC_DECODE_WAY_OUT)
    model_config = getattr(vllm_config, "model_config", None)
    for name in _processor_names(getattr(model_config, "logits_processors", None)):
        if name.startswith("ead_vllm.vllm_ext.logits_processors"):
            raise EADConfigError(
                f"the EAD logits processor {name} and the EAD sampler (sampler='ead') "
                "both apply the schedule",
                way_out="use one of them",
            )
