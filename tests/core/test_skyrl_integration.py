"""``ead_vllm.integrations.skyrl``: the ``additional_kwargs`` a SkyRL step callback writes.

SkyRL itself is not installed here (0.4.0 needs Python >= 3.12); the request these
dictionaries become is checked against a live server in
``tests/serve/test_trainer_wire.py``.
"""

from __future__ import annotations

import pytest

from ead_vllm.integrations.skyrl import ead_additional_kwargs, schedule_step
from ead_vllm.step_schedule import StepSchedule

SCHEDULE = StepSchedule(d0=2.0, growth=4.0, tau_max=2.0, tau_min=0.3)


def test_first_skyrl_step_is_the_schedules_step_0() -> None:
    assert schedule_step(1) == 0
    assert schedule_step(7) == 6
    for bad in (0, -1):
        with pytest.raises(ValueError, match="starts at 1"):
            schedule_step(bad)
    for bad in (True, 1.0, "1"):
        with pytest.raises(TypeError):
            schedule_step(bad)  # type: ignore[arg-type]


def test_keys_of_the_step_land_in_extra_args() -> None:
    out = ead_additional_kwargs(None, SCHEDULE, 2)
    assert out == {"extra_args": SCHEDULE.params_at(2).to_extra_args()}
    assert out["extra_args"]["ead_decay"] == pytest.approx(10.0)


def test_each_step_replaces_the_previous_steps_keys_and_keeps_the_users() -> None:
    mine = {"repetition_penalty": 1.1, "extra_args": {"kv_tag": "a"}}
    step_0 = ead_additional_kwargs(mine, SCHEDULE, 0)
    step_5 = ead_additional_kwargs(step_0, SCHEDULE, 5)
    assert step_5 == {
        "repetition_penalty": 1.1,
        "extra_args": {"kv_tag": "a", **SCHEDULE.params_at(5).to_extra_args()},
    }
    assert mine == {"repetition_penalty": 1.1, "extra_args": {"kv_tag": "a"}}  # not modified
    assert ead_additional_kwargs(step_5, SCHEDULE, None) == {
        "repetition_penalty": 1.1,
        "extra_args": {"kv_tag": "a", "ead_enabled": 0},
    }


def test_a_non_mapping_extra_args_and_a_bad_step_are_refused() -> None:
    with pytest.raises(TypeError, match="must be a mapping"):
        ead_additional_kwargs({"extra_args": ["ead_decay", 3]}, SCHEDULE, 0)
    with pytest.raises(ValueError):
        ead_additional_kwargs(None, SCHEDULE, -1)
