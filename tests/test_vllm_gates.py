"""The start-up gate of sampler="ead": an untested vLLM or a changed seam stops the engine
with one message (version found, supported set, way out); an inactive plugin checks nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from vllm.engine.arg_utils import EngineArgs  # noqa: E402

from ead_vllm.vllm_ext import plugin  # noqa: E402
from ead_vllm.vllm_ext.config import check_ead_config  # noqa: E402
from ead_vllm.vllm_ext.seams import gate, versions  # noqa: E402
from ead_vllm.vllm_ext.seams import v2_sampler as v2_seam  # noqa: E402
from ead_vllm.vllm_ext.seams.gate import UnsupportedVLLMError  # noqa: E402

SUPPORTED_WORDS = (
    "Supported: vLLM 0.29.0, 0.30.0, 0.31.0, 0.32.0 (live on CPU) and 0.33.0 "
    "(seams checked against sources)."
)


@pytest.fixture(autouse=True)
def fresh_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees an unchecked process (the gate remembers passing checks)."""
    plugin.register()
    monkeypatch.setattr(gate, "_passed", set())


def config(sampler: str | None = "ead") -> SimpleNamespace:
    extra = {} if sampler is None else {"sampler": sampler}
    return SimpleNamespace(
        additional_config=extra,
        speculative_config=None,
        model_config=SimpleNamespace(logits_processors=None),
    )


def assert_one_clear_message(message: str, found: str) -> None:
    assert message.startswith(f"ead-vllm: sampler='ead' does not start on vLLM {found}:")
    assert SUPPORTED_WORDS in message
    assert "additional_config={'sampler': 'default'}" in message
    assert "ead_vllm.vllm_ext.logits_processors:EADLogitsProcessor" in message
    assert "\n" not in message


@pytest.mark.parametrize("found", ["0.28.0", "0.34.0", "0.33.1", "0.33.0rc1", "0.32.0.dev3"])
def test_untested_version_stops_with_one_message(
    monkeypatch: pytest.MonkeyPatch, found: str
) -> None:
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: found)
    for runner in ("v1", "v2"):
        with pytest.raises(UnsupportedVLLMError) as info:
            check_ead_config(config(), runner=runner)
        assert_one_clear_message(str(info.value), found)
        assert "outside the tested set" in str(info.value)


def test_engine_config_is_refused_before_any_engine_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from vllm_engine_support import engine_model_dir

    model = engine_model_dir(tmp_path_factory.mktemp("gate-model"))
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.28.0")
    args = EngineArgs(
        model=str(model), dtype="float32", max_model_len=128, additional_config={"sampler": "ead"}
    )
    with pytest.raises(UnsupportedVLLMError) as info:
        args.create_engine_config()
    assert_one_clear_message(str(info.value), "0.28.0")
    # the same engine without the override is untouched by the gate
    plain = EngineArgs(model=str(model), dtype="float32", max_model_len=128)
    assert plain.create_engine_config().additional_config == {}


def test_changed_v1_seam_stops_with_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.v1.sample.sampler import Sampler

    def forward(self, logits, sampling_metadata, bonus_tokens=None):  # a future vLLM
        raise AssertionError("never called")

    monkeypatch.setattr(Sampler, "forward", forward)
    found = versions.installed_vllm_version()
    with pytest.raises(UnsupportedVLLMError) as info:
        check_ead_config(config(), runner="v1")
    message = str(info.value)
    assert_one_clear_message(message, found)
    assert (
        "vllm.v1.sample.sampler.Sampler.forward is (self, logits, sampling_metadata, "
        "bonus_tokens), expected (self, logits, sampling_metadata, predict_bonus_token, "
        "logprobs_mode_override)"
    ) in message
    check_ead_config(config(), runner="v2")  # runner V2 does not use that seam


def test_changed_v2_seam_stops_with_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.v1.worker.gpu.sample.sampler import Sampler

    shape = v2_seam.current()

    def add_request(self, req_idx, sampling_params, lora_request):  # a future vLLM
        raise AssertionError("never called")

    monkeypatch.setattr(Sampler, "add_request", add_request)
    with pytest.raises(UnsupportedVLLMError) as info:
        check_ead_config(config(), runner="v2")
    message = str(info.value)
    assert_one_clear_message(message, versions.installed_vllm_version())
    assert "runner V2's internals do not have the shape" in message
    expected = ", ".join(shape.add_request_params)
    assert (
        "vllm.v1.worker.gpu.sample.sampler.Sampler.add_request is (self, req_idx, "
        f"sampling_params, lora_request), expected ({expected})"
    ) in message


def test_missing_seam_is_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    import vllm.v1.sample.logits_processor.builtin as builtin

    monkeypatch.delattr(builtin, "process_dict_updates")
    with pytest.raises(UnsupportedVLLMError, match="process_dict_updates is missing"):
        check_ead_config(config(), runner="v1")


def test_runner_install_is_gated_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker checks again before touching its runner (engines built without EngineArgs)."""
    from ead_vllm.vllm_ext.v1_install import install_v1_sampler

    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.27.1")
    runner = SimpleNamespace(vllm_config=config(), is_pooling_model=False, sampler="stock")
    with pytest.raises(UnsupportedVLLMError, match=r"vLLM 0\.27\.1"):
        install_v1_sampler(runner)
    assert runner.sampler == "stock"


def test_inactive_plugin_checks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the gate ran without sampler='ead'")

    monkeypatch.setattr(gate, "check_vllm", refuse)
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.1.0")
    check_ead_config(config(None))
    check_ead_config(config("default"))


def test_installed_vllm_passes_and_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    found = versions.installed_vllm_version()
    assert versions.is_supported(found), found
    for runner in ("v1", "v2"):
        check_ead_config(config(), runner=runner)
    calls = []
    monkeypatch.setattr(gate, "mismatches", lambda e: calls.append(e) or [])
    check_ead_config(config(), runner="v1")
    assert calls == []  # a passed check is not repeated in the same process


def test_release_ignores_local_labels_only() -> None:
    assert versions.release("0.32.0+cpu") == "0.32.0"
    assert versions.release("0.33.0") == "0.33.0"
    assert versions.release("0.33.0rc1") == "0.33.0rc1"
    assert versions.is_supported("0.29.0+cpu") and not versions.is_supported("0.33.0.dev2")
    assert set(versions.SUPPORTED) == set(versions.LIVE_ON_CPU) | set(versions.SOURCES_CHECKED)


def test_gate_message_lists_every_shape_version() -> None:
    """Every version a seam adapter names is in the supported set, and vice versa for V2."""
    named = {v for shape in v2_seam.SHAPES for v in shape.versions}
    assert named == set(versions.SUPPORTED)
