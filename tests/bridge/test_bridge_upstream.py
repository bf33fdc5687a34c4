"""The OpenRLHF gate: a release or an overridden method other than the bridge's stops the
launcher with one line; the source of every overridden method is fingerprinted."""

from __future__ import annotations

import hashlib
import inspect

import pytest

from openrlhf_bridge import upstream
from openrlhf_bridge.upstream import UnsupportedOpenRLHFError, check_openrlhf

#: sha256 (first 16 hex digits) of each overridden method's source in OpenRLHF 0.11.2.
#: A change means: re-read that method and the bridge code that overrides or copies it
#: (compute_advantages_and_returns is re-implemented in openrlhf_bridge/experience.py).
FINGERPRINTS = {
    "RemoteExperienceMaker.__init__": "71047508ccbdc2b3",
    "RemoteExperienceMaker.compute_advantages_and_returns": "43a58ae8e1c4aea2",
    "SamplesGenerator.__init__": "483b8aa85d702619",
    "SamplesGenerator.generate_samples": "7bf3f3e95631452b",
    "SamplesGenerator._process_response_into_experience": "f99fc0dd86a8ebb5",
    "SamplesGenerator.generate_eval_samples": "d5b5ff27b1a7e157",
    "PPOTrainer.train_step": "82f2cc733e64f4a4",
    "PPOTrainer.init_checkpoint_states": "a4040b46b5ffd283",
    "RolloutRayActor.__init__": "164c0215250b1878",
    "PolicyModelActor.init_model_from_pretrained": "e472b193eeab8255",
    "PolicyModelActor.forward": "d7545a910395bf13",
}


def test_installed_openrlhf_passes() -> None:
    assert upstream.installed_openrlhf_version() in upstream.SUPPORTED_OPENRLHF
    check_openrlhf()


@pytest.mark.parametrize("found", ["0.11.1", "0.12.0", "not installed"])
def test_another_release_stops_with_one_line(found: str) -> None:
    with pytest.raises(UnsupportedOpenRLHFError) as info:
        check_openrlhf(found)
    message = str(info.value)
    assert message.startswith(f"ead-vllm: the bridge does not start on OpenRLHF {found}")
    assert "Way out: install openrlhf==0.11.2" in message and "\n" not in message


def test_a_changed_overridden_method_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    def generate_samples(self, prompts, **generate_kwargs):  # a future OpenRLHF
        raise AssertionError("never called")

    monkeypatch.setattr(SamplesGenerator, "generate_samples", generate_samples)
    with pytest.raises(UnsupportedOpenRLHFError) as info:
        check_openrlhf()
    assert (
        "SamplesGenerator.generate_samples is (self, prompts, generate_kwargs), "
        "expected (self, generate_kwargs)"
    ) in str(info.value)


def test_the_private_attribute_read_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream.inspect, "getsource", lambda obj: "class RayActorGroup: ...")
    with pytest.raises(UnsupportedOpenRLHFError, match="_actor_handlers"):
        check_openrlhf()


def test_sources_of_the_overridden_methods_are_the_ones_read() -> None:
    changed = []
    for module, cls, name, _, _ in upstream.OVERRIDDEN:
        source = inspect.getsource(upstream.upstream_method(module, cls, name))
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        if FINGERPRINTS[f"{cls}.{name}"] != digest:
            changed.append(f"{module}.{cls}.{name} (now {digest})")
    assert not changed, "re-read these OpenRLHF methods and the bridge code over them: " + (
        "; ".join(changed)
    )
    assert len(FINGERPRINTS) == len(upstream.OVERRIDDEN)


def test_the_launcher_stops_on_another_release(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from openrlhf_bridge import train_ppo_ray
    from openrlhf_bridge.testing import GRPO_ARGS

    monkeypatch.setattr(upstream, "installed_openrlhf_version", lambda: "0.12.0")
    with pytest.raises(SystemExit) as info:
        train_ppo_ray.main(list(GRPO_ARGS))
    assert info.value.code == 1
    assert "the bridge does not start on OpenRLHF 0.12.0" in capsys.readouterr().err
