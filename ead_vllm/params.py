"""Per-request EAD parameters and their flat ``SamplingParams.extra_args`` form.

All values are in the paper's units: ``tau_t = max(1 + tau_max - exp(t / decay), tau_min)``
with ``decay`` in tokens. :meth:`EADParams.reference_recipe` converts the
authors' released recipe (which divides by ``20 * d_s``) into these units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ead_vllm.schedules import decay_at_step, ead_temperature

_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]

EXTRA_ARGS_PREFIX = "ead_"
# field name -> flat key in SamplingParams.extra_args (flat: vllm_xargs rejects nested objects)
EXTRA_ARGS_KEYS: dict[str, str] = {
    "tau_max": "ead_tau_max",
    "tau_min": "ead_tau_min",
    "decay": "ead_decay",
    "warmup": "ead_warmup",
    "offset": "ead_offset",
}


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
    def from_extra_args(cls, extra_args: Mapping[str, Any] | None) -> EADParams | None:
        """Parse the ``ead_*`` keys of ``extra_args``; ``None`` when there are none.

        Other keys are ignored. Missing ``ead_*`` keys take the defaults. An
        unknown ``ead_*`` key or an invalid value raises :class:`EADParamsError`
        (a ``ValueError``) whose message and ``keys`` name the flat keys.
        """
        if not extra_args:
            return None
        ours = {k: v for k, v in extra_args.items() if str(k).startswith(EXTRA_ARGS_PREFIX)}
        if not ours:
            return None
        by_key = {key: name for name, key in EXTRA_ARGS_KEYS.items()}
        unknown = sorted(k for k in ours if k not in by_key)
        if unknown:
            raise EADParamsError(
                f"unknown EAD argument(s) {', '.join(unknown)}; "
                f"known: {', '.join(EXTRA_ARGS_KEYS.values())}",
                tuple(unknown),
            )
        try:
            return cls(**{by_key[k]: v for k, v in ours.items()})
        except ValidationError as exc:
            keys: list[str] = []
            parts: list[str] = []
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else "tau_min"
                key = EXTRA_ARGS_KEYS.get(name, name)
                keys.append(key)
                parts.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
            raise EADParamsError(
                "invalid EAD arguments: " + "; ".join(parts), tuple(keys)
            ) from None

    @classmethod
    def reference_recipe(
        cls,
        step: int = 0,
        *,
        tau_max: float = 1.2,
        tau_min: float = 0.1,
        d0: float = 25.0,
        growth: float = 5.0,
        d_max: float = 40000.0,
        exponent_scale: float = 20.0,
        warmup: int = 10,
    ) -> EADParams:
        """The authors' released EAD recipe at training ``step``, in paper units.

        Their code computes ``max(1 + tau_max - exp(t / (20 * d_s)), tau_min)``
        with ``d_s = min(d0 + 5 * step, 40000)`` and ``d0 = 25`` (their run
        script), and leaves the first 10 generated tokens at the base
        temperature. Reading of that code: the cap ``d_max`` is applied to
        ``d_s`` in their units, *before* the x20, so in paper units the recipe
        is ``decay = exponent_scale * min(d0 + growth * step, d_max)``: 500
        tokens at step 0, growing by 100 tokens per step, capped at 800000.
        The x20 (``exponent_scale``) and the warm-up are explicit arguments
        here, never a hidden factor. ``tau_max``/``tau_min`` are their
        ``exploration_temp``/``stability_temp`` (1.2 and 0.1 in their script).
        """
        if isinstance(exponent_scale, bool) or not exponent_scale > 0:
            raise ValueError(f"exponent_scale must be > 0, got {exponent_scale!r}")
        decay = exponent_scale * decay_at_step(step, d0=d0, growth=growth, d_max=d_max)
        return cls(tau_max=tau_max, tau_min=tau_min, decay=decay, warmup=warmup)


def reference_recipe(step: int = 0, **kwargs: Any) -> EADParams:
    """Alias of :meth:`EADParams.reference_recipe` (same arguments and result)."""
    return EADParams.reference_recipe(step, **kwargs)
