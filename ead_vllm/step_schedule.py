"""EAD across training steps: the schedule's parameters for the rollouts of each step.

The EAD paper grows the decay with the training step ``s``:
``d_s = min(d0 + growth * s, d_max)`` (:func:`ead_vllm.schedules.decay_at_step`), so
later steps stay hot for longer as the policy learns to finish its answers. Every
trainer integration (the OpenRLHF bridge, :mod:`ead_vllm.integrations.trl`) asks a
:class:`StepSchedule` for the :class:`~ead_vllm.params.EADParams` of its current step;
this is the one place that rule and the authors' preset are written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ead_vllm.params import EXTRA_ARGS_SWITCH, EADParams
from ead_vllm.schedules import decay_at_step

# The authors' released run script (see EADParams.reference_recipe for the reading of
# their code): d0/growth/d_max in their own units, which their code multiplies by 20
# in the exponent (500 tokens at step 0), and the first 10 tokens left at T.
REFERENCE_PRESET: dict[str, float | int] = {
    "tau_max": 1.2,
    "tau_min": 0.1,
    "d0": 25.0,
    "growth": 5.0,
    "d_max": 40000.0,
    "warmup": 10,
    "exponent_scale": 20.0,
}

# The EAD paper's truncated importance sampling cap ``C`` (weights ``min(pi / pi_rollout,
# C)``), the default of every trainer integration's TIS.
DEFAULT_TIS_CAP = 2.0


@dataclass(frozen=True, kw_only=True)
class StepSchedule:
    """EAD's parameters as a function of the global training step.

    * ``d0`` (> 0, tokens after ``exponent_scale``), ``growth`` (>= 0 per step),
      ``d_max`` (> 0): ``decay = exponent_scale * min(d0 + growth * step, d_max)``.
    * ``tau_max``, ``tau_min``, ``warmup``: as in :class:`~ead_vllm.params.EADParams`.
    * ``exponent_scale`` (> 0): 1 in paper units; 20 for the authors' recipe
      (:meth:`reference`), whose code multiplies the decay by 20 in the exponent.

    Values are checked when parameters are built (:meth:`params_at`), with the
    errors of :class:`~ead_vllm.params.EADParams` and
    :func:`~ead_vllm.schedules.decay_at_step`; :meth:`check` builds step 0's.
    """

    d0: float
    tau_max: float = 1.2
    tau_min: float = 0.1
    growth: float = 5.0
    d_max: float = 40000.0
    warmup: int = 0
    exponent_scale: float = 1.0

    @classmethod
    def reference(cls, **overrides: Any) -> StepSchedule:
        """The authors' released recipe (:data:`REFERENCE_PRESET`), fields overridable."""
        return replace(cls(**REFERENCE_PRESET), **overrides)  # type: ignore[arg-type]

    def decay_at(self, step: int) -> float:
        """``d_s`` in paper units (tokens) for global training ``step`` (int >= 0)."""
        if isinstance(self.exponent_scale, bool) or not self.exponent_scale > 0:
            raise ValueError(f"exponent_scale must be > 0, got {self.exponent_scale!r}")
        return self.exponent_scale * decay_at_step(
            step, d0=self.d0, growth=self.growth, d_max=self.d_max
        )

    def params_at(self, step: int) -> EADParams:
        """The EAD parameters of the rollouts of global training ``step``."""
        return EADParams(
            tau_max=self.tau_max,
            tau_min=self.tau_min,
            decay=self.decay_at(step),
            warmup=self.warmup,
        )

    def request_keys(self, step: int | None) -> dict[str, float | int]:
        """The ``ead_*`` keys one request carries in ``SamplingParams.extra_args``.

        The schedule's parameters at global training ``step`` (int >= 0), or, for
        ``step=None`` (evaluation), ``{"ead_enabled": 0}``: stock sampling for this
        request, even on an engine with EAD defaults. Every trainer integration builds
        its requests' keys here.
        """
        if step is None:
            return {EXTRA_ARGS_SWITCH: 0}
        return dict(self.params_at(step).to_extra_args())

    def check(self) -> StepSchedule:
        """Raise ``ValueError`` (or pydantic's, a ``ValueError``) on an invalid field; else self."""
        self.params_at(0)
        return self
