"""Per-request EAD parameters and their flat ``SamplingParams.extra_args`` form.

All values are in the paper's units: ``tau_t = max(1 + tau_max - exp(t / decay), tau_min)``
with ``decay`` in tokens. :meth:`EADParams.reference_recipe` converts the
authors' released recipe (which divides by ``20 * d_s``) into these units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ead_vllm.schedules import ead_temperature

_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]

EXTRA_ARGS_PREFIX = "ead_"
#: ``extra_args`` key of a request's explicit opt-out (``0``) of an engine's EAD defaults
EXTRA_ARGS_SWITCH = "ead_enabled"
# field name -> flat key in SamplingParams.extra_args (flat: vllm_xargs rejects nested objects)
EXTRA_ARGS_KEYS: dict[str, str] = {
    "tau_max": "ead_tau_max",
    "tau_min": "ead_tau_min",
    "decay": "ead_decay",
    "warmup": "ead_warmup",
    "offset": "ead_offset",
}


def describe_validation_error(
    exc: ValidationError, name: Callable[[str], str] = str
) -> tuple[str, tuple[str, ...]]:
    """One line for a pydantic error of :class:`EADParams`, and the fields it names.

    ``name`` maps a field to how the caller's user spells it (``ead_decay``,
    ``ead.decay``, ...). Model-level errors (``tau_min`` above ``tau_max``) carry no
    location; they are about ``tau_min``.
    """
    names, parts = [], []
    for err in exc.errors():
        field = name(".".join(str(p) for p in err["loc"]) or "tau_min")
        names.append(field)
        parts.append(f"{field}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts), tuple(names)


class EADParamsError(ValueError):
    """Invalid ``ead_*`` request arguments; ``keys`` names the offending flat keys."""

    def __init__(self, message: str, keys: tuple[str, ...]) -> None:
        super().__init__(message)
        self.keys = keys


class EADParams(BaseModel):
    """EAD schedule parameters (paper units), validated strictly.

    * ``tau_max`` (> 0): the multiplier at ``t = 0``; > 1 explores early. Default 1.2.
    * ``tau_min`` (> 0, <= ``tau_max``): the floor reached late. Default 0.1.
    * ``decay`` (> 0, tokens): ``d`` in ``exp(t / d)``. Default 500 (the
      authors' released recipe at training step 0, in paper units).
    * ``warmup`` (>= 0, int tokens): positions ``t < warmup`` use 1.0. Default 0.
    * ``offset`` (>= 0, int tokens): added to the request's own token count, so the
      schedule and the noise key run at ``t + offset``. For a rollout resumed from its
      partial output, or a later turn of an episode, sent as a new request whose
      prompt holds the earlier tokens: the offset is how many of them the policy
      generated. Default 0.

    Numbers must be real numbers (ints are fine for floats); bools, strings,
    NaN and inf are rejected with an error naming the field.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    tau_max: _Positive = 1.2
    tau_min: _Positive = 0.1
    decay: _Positive = 500.0
    warmup: Annotated[int, Field(ge=0)] = 0
    offset: Annotated[int, Field(ge=0)] = 0

    @field_validator("warmup", "offset", mode="before")
    @classmethod
    def _numpy_int(cls, value: Any) -> Any:
        if isinstance(value, np.integer):
            return int(value)
        return value

    @field_validator("tau_min")
    @classmethod
    def _not_above_tau_max(cls, value: float, info: Any) -> float:
        tau_max = info.data.get("tau_max")
        if tau_max is not None and value > tau_max:
            raise ValueError(f"tau_min ({value}) must be <= tau_max ({tau_max})")
        return value

    def temperature_at(self, t: Any) -> Any:
        """``tau`` at the request's own token count ``t`` (scalar, numpy array or tensor;
        the same kind back): the schedule at ``t + offset``."""
        return ead_temperature(
            t + self.offset,
            tau_max=self.tau_max,
            tau_min=self.tau_min,
            decay=self.decay,
            warmup=self.warmup,
        )

    def to_extra_args(self) -> dict[str, float | int]:
        """The flat ``ead_*`` keys for ``SamplingParams.extra_args`` / ``vllm_xargs``
        (``ead_offset`` only when it is not 0)."""
        flat = {key: getattr(self, name) for name, key in EXTRA_ARGS_KEYS.items()}
        if not self.offset:
            del flat[EXTRA_ARGS_KEYS["offset"]]
        return flat

    @classmethod
    def from_extra_args(
        cls, extra_args: Mapping[str, Any] | None, defaults: EADParams | None = None
    ) -> EADParams | None:
        """Parse the ``ead_*`` keys of ``extra_args``.

        Without ``ead_*`` keys: ``defaults`` (an engine's EAD defaults; ``None``: not an
        EAD request). With some: those keys over ``defaults`` (else the model
        defaults). ``ead_enabled: 0`` opts out of ``defaults`` (``None``), ``1`` asks
        for them (or the model defaults). Other keys are ignored. An unknown ``ead_*``
        key, an invalid value, or ``ead_enabled: 0`` beside schedule keys raises
        :class:`EADParamsError` (a ``ValueError``) whose message and ``keys`` name the
        flat keys.
        """
        ours = {k: v for k, v in (extra_args or {}).items() if str(k).startswith(EXTRA_ARGS_PREFIX)}
        given = EXTRA_ARGS_SWITCH in ours  # an explicit null is invalid, not "unset"
        switch = ours.pop(EXTRA_ARGS_SWITCH, None)
        if given and (type(switch) not in (int, bool) or switch not in (0, 1)):
            raise EADParamsError(
                f"{EXTRA_ARGS_SWITCH} must be 0 or 1, got {switch!r}", (EXTRA_ARGS_SWITCH,)
            )
        if switch is not None and not switch:
            if ours:
                raise EADParamsError(
                    f"{EXTRA_ARGS_SWITCH}=0 conflicts with {', '.join(sorted(ours))}",
                    (EXTRA_ARGS_SWITCH,),
                )
            return None
        if not ours:
            return (defaults or cls()) if switch else defaults
        base = defaults.model_dump() if defaults is not None else {}
        by_key = {key: name for name, key in EXTRA_ARGS_KEYS.items()}
        unknown = sorted(k for k in ours if k not in by_key)
        if unknown:
            raise EADParamsError(
                f"unknown EAD argument(s) {', '.join(unknown)}; "
                f"known: {', '.join((*EXTRA_ARGS_KEYS.values(), EXTRA_ARGS_SWITCH))}",
                tuple(unknown),
            )
        try:
            return cls(**{**base, **{by_key[k]: v for k, v in ours.items()}})
        except ValidationError as exc:
            message, keys = describe_validation_error(
                exc, lambda field: EXTRA_ARGS_KEYS.get(field, field)
            )
            raise EADParamsError("invalid EAD arguments: " + message, keys) from None

    @classmethod
    def reference_recipe(cls, step: int = 0, **overrides: Any) -> EADParams:
        """The authors' released EAD recipe at training ``step``, in paper units.

        Their code computes ``max(1 + tau_max - exp(t / (20 * d_s)), tau_min)``
        with ``d_s = min(d0 + 5 * step, 40000)`` and ``d0 = 25`` (their run
        script), and leaves the first 10 generated tokens at the base
        temperature. Reading of that code: the cap ``d_max`` is applied to
        ``d_s`` in their units, *before* the x20, so in paper units the recipe
        is ``decay = exponent_scale * min(d0 + growth * step, d_max)``: 500
        tokens at step 0, growing by 100 tokens per step, capped at 800000.
        The x20 (``exponent_scale``) and the warm-up are explicit fields, never
        a hidden factor. ``tau_max``/``tau_min`` are their
        ``exploration_temp``/``stability_temp`` (1.2 and 0.1 in their script).
        ``overrides``: any field of :class:`ead_vllm.step_schedule.StepSchedule`
        (``tau_max``, ``tau_min``, ``d0``, ``growth``, ``d_max``, ``warmup``,
        ``exponent_scale``); the preset itself is
        :data:`ead_vllm.step_schedule.REFERENCE_PRESET`.
        """
        from ead_vllm.step_schedule import StepSchedule  # it builds EADParams

        return StepSchedule.reference(**overrides).params_at(step)


def reference_recipe(step: int = 0, **kwargs: Any) -> EADParams:
    """Alias of :meth:`EADParams.reference_recipe` (same arguments and result)."""
    return EADParams.reference_recipe(step, **kwargs)
