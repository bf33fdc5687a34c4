"""EADParams: strict validation, flat extra_args form, and the authors' reference recipe."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ead_vllm.params import EADParams, EADParamsError, reference_recipe


def field_of(exc: ValidationError) -> set[str]:
    return {str(e["loc"][0]) for e in exc.errors()}


def test_defaults_and_partial_specs():
    p = EADParams()
    assert (p.tau_max, p.tau_min, p.decay, p.warmup) == (1.2, 0.1, 500.0, 0)
    q = EADParams(decay=1000)
    assert q.decay == 1000.0 and isinstance(q.decay, float) and q.tau_max == 1.2
    assert EADParams(tau_max=0.5, tau_min=0.5).tau_min == 0.5  # equal bounds are fine
    assert EADParams(warmup=np.int64(4)).warmup == 4
    with pytest.raises(ValidationError):
        p.tau_max = 2.0  # frozen: a request's parameters cannot drift


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tau_min": 0.0}, "tau_min"),
        ({"tau_min": -0.1}, "tau_min"),
        ({"tau_max": 0.0, "tau_min": 0.1}, "tau_max"),
        ({"tau_max": 1.0, "tau_min": 1.5}, "tau_min"),
        ({"decay": 0.0}, "decay"),
        ({"decay": -5}, "decay"),
        ({"decay": float("nan")}, "decay"),
        ({"decay": float("inf")}, "decay"),
        ({"tau_max": float("nan")}, "tau_max"),
        ({"tau_min": float("-inf")}, "tau_min"),
        ({"warmup": -1}, "warmup"),
        ({"warmup": 2.5}, "warmup"),
        ({"warmup": 3.0}, "warmup"),
        ({"warmup": True}, "warmup"),
        ({"tau_max": True}, "tau_max"),
        ({"tau_max": "1.2"}, "tau_max"),
        ({"decay": None}, "decay"),
        ({"decay": [500]}, "decay"),
        ({"temperature": 1.0}, "temperature"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValidationError) as info:
        EADParams(**kwargs)
    assert field in field_of(info.value)
    assert field in str(info.value)


def test_tau_min_above_tau_max_message_names_both():
    with pytest.raises(ValidationError, match=r"tau_min \(2\.0\) must be <= tau_max \(1\.2\)"):
        EADParams(tau_min=2.0)


def test_temperature_at_uses_the_schedule():
    p = EADParams(tau_max=1.5, tau_min=0.2, decay=100, warmup=3)
    assert p.temperature_at(2) == 1.0
    assert p.temperature_at(50) == pytest.approx(2.5 - math.exp(0.5))
    out = p.temperature_at(torch.tensor([0, 3, 10**9]))
    np.testing.assert_allclose(out.numpy(), [1.0, 2.5 - math.exp(0.03), 0.2], rtol=1e-6)


def test_extra_args_round_trip_and_are_json_friendly():
    p = EADParams(tau_max=1.3, tau_min=0.2, decay=750.5, warmup=4)
    flat = p.to_extra_args()
    assert flat == {"ead_tau_max": 1.3, "ead_tau_min": 0.2, "ead_decay": 750.5, "ead_warmup": 4}
    assert EADParams.from_extra_args(json.loads(json.dumps(flat))) == p
    # other keys in extra_args belong to other extensions and are left alone
    assert EADParams.from_extra_args({**flat, "other_key": "x"}) == p


@pytest.mark.parametrize("extra", [None, {}, {"foo": 1}, {"eadtau": 2}])
def test_no_ead_keys_means_no_ead(extra):
    assert EADParams.from_extra_args(extra) is None


def test_partial_extra_args_take_the_defaults():
    p = EADParams.from_extra_args({"ead_decay": 2000})
    assert p == EADParams(decay=2000.0)


def test_unknown_ead_key_is_an_error_naming_it():
    with pytest.raises(EADParamsError, match="ead_tau_mx") as info:
        EADParams.from_extra_args({"ead_tau_mx": 1.2, "ead_decay": 100})
    assert info.value.keys == ("ead_tau_mx",)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"ead_tau_min": -1}, "ead_tau_min"),
        ({"ead_tau_min": 2.0}, "ead_tau_min"),
        ({"ead_decay": "500"}, "ead_decay"),
        ({"ead_warmup": 1.5}, "ead_warmup"),
        ({"ead_tau_max": float("nan")}, "ead_tau_max"),
        ({"ead_tau_max": False}, "ead_tau_max"),
    ],
)
def test_invalid_extra_args_name_the_flat_key(extra, key):
    with pytest.raises(EADParamsError) as info:
        EADParams.from_extra_args(extra)
    assert key in str(info.value)
    assert info.value.keys == (key,)


def authors_temperature(t: int, step: int) -> float:
    """The authors' released 'negexp' schedule, written from its description."""
    if t < 10:
        return 1.0
    d = min(25 + 5 * step, 40000)
    x = t / (20 * d)
    return max(1 + 1.2 - (math.exp(x) if x < 700 else math.inf), 0.1)  # numpy's exp gives inf


@pytest.mark.parametrize("step", [0, 1, 37, 500, 7995, 7996, 20000])
def test_reference_recipe_reproduces_the_released_code(step):
    p = EADParams.reference_recipe(step)
    assert p.warmup == 10
    assert p.decay == 20 * min(25 + 5 * step, 40000)
    for t in (0, 9, 10, 11, 100, 499, 1000, 3072, 10**7):
        assert p.temperature_at(t) == pytest.approx(authors_temperature(t, step), abs=1e-12)


def test_reference_recipe_in_paper_units():
    assert EADParams.reference_recipe().decay == 500.0  # "d0 = 25" is 500 tokens
    assert EADParams.reference_recipe(100).decay == 500.0 + 100 * 100  # 100 tokens per step
    assert EADParams.reference_recipe(10**6).decay == 800_000.0  # cap 40000 before the x20
    assert reference_recipe(3, tau_max=1.5, warmup=0) == EADParams(
        tau_max=1.5, tau_min=0.1, decay=20 * 40.0, warmup=0
    )
    assert EADParams.reference_recipe(0, exponent_scale=1.0).decay == 25.0
    with pytest.raises(ValueError):
        EADParams.reference_recipe(0, exponent_scale=0)
    with pytest.raises(ValueError):
        EADParams.reference_recipe(-1)


def test_ead_offset_shifts_the_schedule_and_is_validated():
    """``ead_offset``: t of a resumed request or a later turn starts at the offset."""
    shifted = EADParams.from_extra_args({"ead_decay": 10.0, "ead_offset": 7})
    plain = EADParams(decay=10.0)
    assert shifted.offset == 7 and plain.offset == 0
    assert shifted.temperature_at(3.0) == plain.temperature_at(10.0)
    assert shifted.to_extra_args()["ead_offset"] == 7
    assert "ead_offset" not in plain.to_extra_args()  # a 0 offset adds no key
    assert EADParams.from_extra_args(shifted.to_extra_args()) == shifted
    assert EADParams(offset=np.int64(4)).offset == 4
    for bad in (-1, 2.5, True, "3", float("nan")):
        with pytest.raises(EADParamsError, match="ead_offset") as info:
            EADParams.from_extra_args({"ead_offset": bad})
        assert info.value.keys == ("ead_offset",)


def test_engine_defaults_fill_in_and_a_request_opts_out():
    """An engine's EAD defaults: requests without keys get them, keys go over them,
    ``ead_enabled: 0`` opts out, ``ead_enabled: 1`` asks for them."""
    defaults = EADParams(tau_max=1.5, tau_min=0.2, decay=300.0, warmup=2)
    assert EADParams.from_extra_args({}, defaults) == defaults
    assert EADParams.from_extra_args({"foo": 1}, defaults) == defaults
    assert EADParams.from_extra_args({"ead_decay": 40}, defaults) == EADParams(
        tau_max=1.5, tau_min=0.2, decay=40.0, warmup=2
    )
    assert EADParams.from_extra_args({"ead_enabled": 0}, defaults) is None
    assert EADParams.from_extra_args({"ead_enabled": 1}, defaults) == defaults
    assert EADParams.from_extra_args({"ead_enabled": 1}) == EADParams()
    assert EADParams.from_extra_args({}) is None  # no defaults: not an EAD request
    for bad in (2, -1, "0", 0.0):
        with pytest.raises(EADParamsError, match="ead_enabled") as info:
            EADParams.from_extra_args({"ead_enabled": bad}, defaults)
        assert info.value.keys == ("ead_enabled",)
    with pytest.raises(EADParamsError, match="ead_enabled=0 conflicts with ead_decay"):
        EADParams.from_extra_args({"ead_enabled": 0, "ead_decay": 5.0}, defaults)
    # a merge that breaks a rule is reported on the request's key
    with pytest.raises(EADParamsError, match="ead_tau_min"):
        EADParams.from_extra_args({"ead_tau_min": 1.9}, defaults)
