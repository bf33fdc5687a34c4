"""EAD's per-request keys in SkyRL's sampling config, one training step at a time (SkyRL 0.4.0).

SkyRL sends every rollout turn to its vLLM servers as ``POST /inference/v1/generate``
with ``{"sampling_params": ..., "model": ..., "token_ids": ...}``. It builds
``sampling_params`` from ``generator.sampling_params`` (its typed fields, then every
key of ``additional_kwargs`` that is not already set), so EAD's keys travel as
``additional_kwargs["extra_args"]``, which vLLM reads as ``SamplingParams.extra_args``.
SkyRL rebuilds the sampling parameters from the config right after
``TrainingCallback.on_step_start``, so a callback that rewrites ``additional_kwargs``
there gives each step its own decay ``d_s``::

    from skyrl.train.utils.callbacks import TrainingCallback
    from ead_vllm.integrations.skyrl import ead_additional_kwargs, schedule_step
    from ead_vllm.step_schedule import StepSchedule

    class EADStepCallback(TrainingCallback):
        def __init__(self, schedule: StepSchedule) -> None:
            self.schedule = schedule

        def on_step_start(self, trainer, callback_input, control) -> None:
            sp = trainer.cfg.generator.sampling_params
            sp.additional_kwargs = ead_additional_kwargs(
                sp.additional_kwargs, self.schedule, schedule_step(callback_input.global_step)
            )

This module does not import SkyRL (0.4.0 needs Python >= 3.12, and these are plain
dictionaries), so it can be imported and tested anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ead_vllm.params import EXTRA_ARGS_PREFIX
from ead_vllm.step_schedule import StepSchedule

__all__ = ["EXTRA_ARGS_FIELD", "ead_additional_kwargs", "schedule_step"]

# the key of ``generator.sampling_params.additional_kwargs`` that becomes vLLM's extra_args
EXTRA_ARGS_FIELD = "extra_args"
# SkyRL's training loop numbers its steps from 1 (``global_step += 1`` before the loop)
SKYRL_FIRST_STEP = 1


def schedule_step(global_step: int) -> int:
    """The :class:`StepSchedule` step of SkyRL's ``global_step`` (its first step is 1).

    The schedule counts from 0 (the first step's decay is ``d0``), as the TRL and
    OpenRLHF integrations do.
    """
    if isinstance(global_step, bool) or not isinstance(global_step, int):
        raise TypeError(f"global_step must be an int, got {type(global_step).__name__}")
    if global_step < SKYRL_FIRST_STEP:
        raise ValueError(f"SkyRL's global_step starts at {SKYRL_FIRST_STEP}, got {global_step}")
    return global_step - SKYRL_FIRST_STEP


def ead_additional_kwargs(
    additional_kwargs: Mapping[str, Any] | None, schedule: StepSchedule, step: int | None
) -> dict[str, Any]:
    """``additional_kwargs`` with the ``ead_*`` keys of ``schedule`` at ``step`` in ``extra_args``.

    A new dict: the other keys of ``additional_kwargs`` and of its ``extra_args`` are
    kept, and the ``ead_*`` keys already there (the previous step's) are replaced.
    ``step=None`` writes ``{"ead_enabled": 0}`` (stock sampling, also on an engine
    with EAD defaults), for evaluation sampling params. Raises ``TypeError`` when
    ``extra_args`` is not a mapping, and the schedule's ``ValueError`` for a bad step.
    """
    out = dict(additional_kwargs or {})
    previous = out.get(EXTRA_ARGS_FIELD)
    if previous is None:
        previous = {}
    if not isinstance(previous, Mapping):
        raise TypeError(
            f"additional_kwargs[{EXTRA_ARGS_FIELD!r}] must be a mapping, "
            f"got {type(previous).__name__}"
        )
    kept = {k: v for k, v in previous.items() if not str(k).startswith(EXTRA_ARGS_PREFIX)}
    out[EXTRA_ARGS_FIELD] = {**kept, **schedule.request_keys(step)}
    return out
