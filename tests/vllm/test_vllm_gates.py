"""The start-up gate of sampler="ead": an untested vLLM or a changed seam stops the engine
with one message (version found, supported set, way out); an inactive plugin checks nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from packaging.version import Version
from vllm.engine.arg_utils import EngineArgs

from ead_vllm.vllm_ext import plugin
from ead_vllm.vllm_ext.config import check_ead_config
from ead_vllm.vllm_ext.seams import gate, versions
from ead_vllm.vllm_ext.seams import v2_sampler as v2_seam
from ead_vllm.vllm_ext.seams.gate import UnsupportedVLLMError

pytestmark = [pytest.mark.vllm, pytest.mark.vllm_sources]

SUPPORTED_WORDS = (
    "Supported: vLLM 0.27.0, 0.28.0, 0.29.0, 0.30.0, 0.31.0, 0.32.0 (live on CPU) and "
    "0.24.0, 0.25.0, 0.25.1, 0.26.0, 0.33.0, 0.34.0 (seams checked against sources)."
)


@pytest.fixture(autouse=True)
def fresh_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees an unchecked process (the gate remembers passing checks), and no
    opt-in to untested releases unless it sets one."""
    plugin.register()
    monkeypatch.setattr(gate, "_passed", set())
    monkeypatch.delenv(gate.ALLOW_UNTESTED_ENV, raising=False)


RUNNERS = versions.runners(versions.installed_vllm_version())


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


@pytest.mark.parametrize("found", ["0.23.0", "0.35.0", "0.33.1", "0.34.0rc1", "0.32.0.dev3"])
def test_untested_version_stops_with_one_message(
    monkeypatch: pytest.MonkeyPatch, found: str
) -> None:
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: found)
    for runner in ("v1", "v2"):
        with pytest.raises(UnsupportedVLLMError) as info:
            check_ead_config(config(), runner=runner)
        assert_one_clear_message(str(info.value), found)
        assert "outside the tested set" in str(info.value)
        assert f"{gate.ALLOW_UNTESTED_ENV}=1" in str(info.value)


def _newer_releases() -> list[str]:
    here = versions.release(versions.installed_vllm_version())
    major, minor, patch = (int(x) for x in here.split("."))
    # the next patch release that is not itself supported (0.25.0's next is 0.25.2)
    later = (f"{major}.{minor}.{p}" for p in range(patch + 1, patch + 10))
    return [next(v for v in later if not versions.is_supported(v)), "0.35.0"]


@pytest.mark.parametrize("simulated", _newer_releases())
def test_opt_in_starts_a_newer_release_whose_seams_match(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, simulated: str
) -> None:
    """A simulated untested release whose internals are the installed ones (a patch
    release of the installed vLLM; 0.35.0 where the installed one is 0.34.0's sources):
    the opt-in starts it with one warning naming the version and what was and was not
    checked."""
    here = versions.release(versions.installed_vllm_version())
    if any(c.holds(simulated) != c.holds(here) for c in versions.CAPABILITIES):
        pytest.skip(f"the registry gives {simulated} other adapters than vLLM {here}'s")
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: simulated)
    with pytest.raises(UnsupportedVLLMError, match="outside the tested set"):
        check_ead_config(config(), runner="v2")  # refused without the opt-in
    monkeypatch.setenv(gate.ALLOW_UNTESTED_ENV, "1")
    with caplog.at_level("WARNING", logger="ead_vllm"):
        check_ead_config(config(), runner="v2")
    (record,) = [r for r in caplog.records if r.name == "ead_vllm"]
    message = record.getMessage()
    assert f"vLLM {simulated}, outside the tested set" in message
    assert "Checked: the signatures of all" in message and "Not checked:" in message
    assert "\n" not in message
    if "v1" not in versions.runners(simulated):
        with pytest.raises(UnsupportedVLLMError, match="no model runner V1"):
            check_ead_config(config(), runner="v1")


def test_opt_in_still_refuses_a_seam_that_does_not_match(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.v1.worker.gpu.sample.sampler import Sampler

    def add_request(self, req_idx, sampling_params, lora_request):  # a future vLLM
        raise AssertionError("never called")

    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.35.0")
    monkeypatch.setenv(gate.ALLOW_UNTESTED_ENV, "1")
    monkeypatch.setattr(Sampler, "add_request", add_request)
    with pytest.raises(UnsupportedVLLMError) as info:
        check_ead_config(config(), runner="v2")
    assert "Sampler.add_request is (self, req_idx, sampling_params, lora_request)" in str(
        info.value
    )
    assert "runner V2's internals do not have the shape" in str(info.value)


def test_engine_config_is_refused_before_any_engine_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from vllm_engine_support import engine_model_dir

    model = engine_model_dir(tmp_path_factory.mktemp("gate-model"))
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.23.0")
    args = EngineArgs(
        model=str(model), dtype="float32", max_model_len=128, additional_config={"sampler": "ead"}
    )
    with pytest.raises(UnsupportedVLLMError) as info:
        args.create_engine_config()
    assert_one_clear_message(str(info.value), "0.23.0")
    # the same engine without the override is untouched by the gate
    plain = EngineArgs(model=str(model), dtype="float32", max_model_len=128)
    assert plain.create_engine_config().additional_config == {}


@pytest.mark.skipif("v1" not in RUNNERS, reason="this vLLM has no runner V1")
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


@pytest.mark.skipif("v1" not in RUNNERS, reason="this vLLM has no runner V1")
def test_missing_seam_is_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    import vllm.v1.sample.logits_processor.builtin as builtin

    monkeypatch.delattr(builtin, "process_dict_updates")
    with pytest.raises(UnsupportedVLLMError, match="process_dict_updates is missing"):
        check_ead_config(config(), runner="v1")


@pytest.mark.skipif("v1" not in RUNNERS, reason="this vLLM has no runner V1")
def test_runner_v1_install_is_gated_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker checks again before touching its runner (engines built without EngineArgs)."""
    from ead_vllm.vllm_ext.v1_install import install_v1_sampler

    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.27.1")
    runner = SimpleNamespace(vllm_config=config(), is_pooling_model=False, sampler="stock")
    with pytest.raises(UnsupportedVLLMError, match=r"vLLM 0\.27\.1"):
        install_v1_sampler(runner)
    assert runner.sampler == "stock"


def test_runner_v2_load_is_gated_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runner V2's patched ``load_model`` checks before building any sampler."""
    from types import ModuleType

    from ead_vllm.vllm_ext.v2_install import patch_v2_runner

    class GPUModelRunner:
        def __init__(self) -> None:
            self.vllm_config, self.sampler = config(), None

        def load_model(self) -> None:
            self.sampler = module.Sampler()

    module = ModuleType("fake_runner")
    module.GPUModelRunner, module.Sampler = GPUModelRunner, object
    patch_v2_runner(module)
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.27.1")
    runner = GPUModelRunner()
    with pytest.raises(UnsupportedVLLMError, match=r"vLLM 0\.27\.1"):
        runner.load_model()
    assert runner.sampler is None


def test_inactive_plugin_checks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the gate ran without sampler='ead'")

    monkeypatch.setattr(gate, "check_vllm", refuse)
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.1.0")
    check_ead_config(config(None))
    check_ead_config(config("default"))


def test_installed_vllm_passes_and_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """On vLLM 0.34.0's sources this is the 0.34.0 gate passing for runner V2 (and
    refusing runner V1, which 0.34.0 deleted)."""
    found = versions.installed_vllm_version()
    assert versions.is_supported(found), found
    for runner in RUNNERS:
        check_ead_config(config(), runner=runner)
    if "v1" not in RUNNERS:
        with pytest.raises(UnsupportedVLLMError, match="no model runner V1") as info:
            check_ead_config(config(), runner="v1")
        assert "EADLogitsProcessorV2" in str(info.value)
        assert "EADLogitsProcessor'" not in str(info.value)
        assert "EADLogitsProcessor for" not in str(info.value)
    calls = []
    monkeypatch.setattr(gate, "mismatches", lambda e: calls.append(e) or [])
    check_ead_config(config(), runner=RUNNERS[-1])
    assert calls == []  # a passed check is not repeated in the same process


def test_release_ignores_local_labels_only() -> None:
    assert versions.release("0.32.0+cpu") == "0.32.0"
    assert versions.release("0.33.0") == "0.33.0"
    assert versions.release("0.33.0rc1") == "0.33.0rc1"
    assert versions.is_supported("0.29.0+cpu") and not versions.is_supported("0.33.0.dev2")
    assert set(versions.SUPPORTED) == set(versions.LIVE_ON_CPU) | set(versions.SOURCES_CHECKED)


def test_every_supported_release_has_exactly_one_v2_sampler_shape() -> None:
    for version in versions.SUPPORTED:
        assert sum(shape.fits(version) for shape in v2_seam.SHAPES) == 1, version
    assert {v for shape in v2_seam.SHAPES for v in shape.versions} == set(versions.SUPPORTED)


def test_capabilities_follow_release_order() -> None:
    v1 = versions.RUNNER_V1
    assert v1.releases() == (
        *("0.24.0", "0.25.0", "0.25.1", "0.26.0", "0.27.0", "0.28.0"),
        *("0.29.0", "0.30.0", "0.31.0", "0.32.0", "0.33.0"),
    )
    assert list(versions.SUPPORTED) == sorted(versions.SUPPORTED, key=Version)
    assert versions.runners("0.34.0") == ("v2",) and versions.runners("0.33.0+cu129") == (
        "v1",
        "v2",
    )
    assert versions.CPU_SPLITMIX_NOISE.releases() == ("0.32.0", "0.33.0", "0.34.0")
    assert versions.V2_FUSED_FLAG_USE_FLASHINFER.releases() == ("0.30.0",)
    assert versions.STANDALONE_CPU_RUNNER.holds("0.34.0rc1")  # rules apply to any version
    assert not versions.V2_LOGITS_PROCESSORS.holds("0.30.0")
    # the runner-V2 Sampler shapes: A0 before the thinking budget, A up to 0.30.0, then B
    shapes = {v: v2_seam.shape_for(v).name for v in versions.SUPPORTED}
    assert shapes["0.24.0"] == "A0" and shapes["0.27.0"] == "A0"
    assert shapes["0.28.0"] == "A" and shapes["0.30.0"] == "A"
    assert shapes["0.31.0"] == "B" and shapes["0.34.0"] == "B"
    a = v2_seam.shape_for("0.28.0")
    assert "enable_trace_replay" not in a.init_params("0.28.0")
    assert "enable_trace_replay" in a.init_params("0.29.0")
    assert versions.V2_GUMBEL_IS_DRAFTING.releases()[0] == "0.29.0"
    assert versions.V1_LOGPROBS_CU_TENSOR.releases()[0] == "0.29.0"
    assert not versions.CPU_NOISE_ANY_SEEDED_ROW.holds("0.28.0")
    assert versions.V2_LOGITS_IN_MODEL_DTYPE.releases() == ("0.26.0",)
