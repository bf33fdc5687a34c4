"""The vllm.general_plugins entry point: --sampler on vLLM's CLI, start-up refusals, validation."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from types import SimpleNamespace

import pytest
from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
from vllm.exceptions import VLLMValidationError
from vllm.utils.argparse_utils import FlexibleArgumentParser

from ead_vllm.vllm_ext import plugin
from ead_vllm.vllm_ext._post_import import when_imported
from ead_vllm.vllm_ext.config import (
    SPEC_DECODE_REFUSAL,
    check_ead_config,
    ead_sampler_enabled,
    sampler_choice,
)
from ead_vllm.vllm_ext.validation import parse_ead_params

pytestmark = [pytest.mark.vllm, pytest.mark.vllm_sources]


@pytest.fixture(autouse=True, scope="module")
def registered():
    plugin.register()


def test_entry_point_is_installed():
    names = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert names.get("ead_vllm") == "ead_vllm.vllm_ext.plugin:register"


def parse(argv: list[str]) -> AsyncEngineArgs:
    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    return AsyncEngineArgs.from_cli_args(parser.parse_args(argv))


def test_sampler_flag_becomes_additional_config():
    assert parse(["--model", "m", "--sampler", "ead"]).additional_config == {"sampler": "ead"}
    assert parse(["--model", "m"]).additional_config == {}
    assert parse(["--model", "m", "--sampler", "default"]).additional_config == {}
    both = parse(["--model", "m", "--sampler", "ead", "--additional-config", '{"x": 1}'])
    assert both.additional_config == {"x": 1, "sampler": "ead"}
    with pytest.raises(ValueError, match="contradicts"):
        parse(["--model", "m", "--sampler", "ead", "--additional-config", '{"sampler": "default"}'])
    with pytest.raises(SystemExit):
        parse(["--model", "m", "--sampler", "greedy"])


def test_environment_switch_reaches_engines_built_by_other_code(tmp_path_factory, monkeypatch):
    """EAD_VLLM_SAMPLER=ead turns the override on for an engine whose arguments the user
    does not control (a trainer's LLM(...)); an explicit choice wins over it."""
    from vllm_engine_support import engine_model_dir

    from ead_vllm.vllm_ext.config import SAMPLER_ENV

    model = str(engine_model_dir(tmp_path_factory.mktemp("env-switch-model")))

    def sampler_of(**kwargs):
        args = EngineArgs(model=model, dtype="float32", max_model_len=128, **kwargs)
        return args.create_engine_config().additional_config.get("sampler")

    assert sampler_of() is None  # unset: stock, nothing recorded
    monkeypatch.setenv(SAMPLER_ENV, "ead")
    assert sampler_of() == "ead"
    assert sampler_of(additional_config={"x": 1}) == "ead"
    assert sampler_of(additional_config={"sampler": "default"}) == "default"
    assert parse(["--model", "m", "--sampler", "default"]).additional_config == {
        "sampler": "default"
    }  # `--sampler default` beats the variable too
    monkeypatch.setenv(SAMPLER_ENV, "greedy")
    with pytest.raises(ValueError, match="EAD_VLLM_SAMPLER must be one of default, ead"):
        sampler_of()


def test_engine_wide_defaults_are_checked_at_start_up(tmp_path_factory, monkeypatch):
    from vllm_engine_support import engine_model_dir

    from ead_vllm.params import EADParams
    from ead_vllm.vllm_ext.config import DEFAULTS_ENV, SAMPLER_ENV, engine_ead_defaults
    from ead_vllm.vllm_ext.errors import EADConfigError

    model = str(engine_model_dir(tmp_path_factory.mktemp("defaults-model")))

    def config(**kwargs):
        return EngineArgs(
            model=model, dtype="float32", max_model_len=128, **kwargs
        ).create_engine_config()

    ead = {"sampler": "ead", "ead_defaults": {"tau_max": 1.5, "decay": 40}}
    assert engine_ead_defaults(config(additional_config=ead)) == EADParams(tau_max=1.5, decay=40)
    monkeypatch.setenv(SAMPLER_ENV, "ead")
    monkeypatch.setenv(DEFAULTS_ENV, '{"decay": 25, "warmup": 3}')
    assert engine_ead_defaults(config()) == EADParams(decay=25, warmup=3)
    assert engine_ead_defaults(config(additional_config=ead)).decay == 40  # explicit wins
    for bad, words in (
        ('{"decay": -1}', "decay"),
        ('{"decay": 5', "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"speed": 2}', "speed"),
    ):
        monkeypatch.setenv(DEFAULTS_ENV, bad)
        with pytest.raises(EADConfigError, match=words) as info:
            config()
        assert str(info.value).startswith("ead-vllm: ") and "EAD_VLLM_DEFAULTS" in str(info.value)
    monkeypatch.delenv(SAMPLER_ENV)
    monkeypatch.setenv(DEFAULTS_ENV, '{"decay": 25}')
    with pytest.raises(EADConfigError, match="the EAD sampler is off"):
        config()


def test_vllm_serve_parser_has_the_flag():
    from ead_vllm.vllm_ext.seams.serving import make_arg_parser

    parser = make_arg_parser()(FlexibleArgumentParser())
    args = parser.parse_args(["--model", "m", "--sampler", "ead"])
    assert AsyncEngineArgs.from_cli_args(args).additional_config["sampler"] == "ead"
    assert "--sampler" in parser.format_help()


def config(sampler=None, **kwargs) -> SimpleNamespace:
    extra = {} if sampler is None else {"sampler": sampler}
    model = SimpleNamespace(logits_processors=kwargs.pop("logits_processors", None))
    return SimpleNamespace(
        additional_config=extra, model_config=model, speculative_config=None, **kwargs
    )


def test_config_checks():
    assert sampler_choice(config()) == "default" and not ead_sampler_enabled(config())
    assert ead_sampler_enabled(config("ead"))
    with pytest.raises(ValueError, match="must be one of"):
        sampler_choice(config("fancy"))
    check_ead_config(config())  # default: nothing to refuse
    check_ead_config(SimpleNamespace(**{**vars(config()), "speculative_config": object()}))
    with pytest.raises(ValueError, match="speculative decoding"):
        check_ead_config(SimpleNamespace(**{**vars(config("ead")), "speculative_config": object()}))
    lp = "ead_vllm.vllm_ext.logits_processors:EADLogitsProcessor"
    with pytest.raises(ValueError, match="use one of them"):
        check_ead_config(config("ead", logits_processors=[lp]))


def test_engine_config_refuses_speculative_decoding(tmp_path_factory):
    from vllm_engine_support import engine_model_dir

    model = engine_model_dir(tmp_path_factory.mktemp("plugin-model"))
    args = EngineArgs(
        model=str(model),
        dtype="float32",
        max_model_len=128,
        additional_config={"sampler": "ead"},
        speculative_config={"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3},
    )
    with pytest.raises(ValueError, match="speculative decoding") as info:
        args.create_engine_config()
    if "Model Runner V2 does not yet support" in str(info.value):
        # vLLM 0.24.0-0.26.0 refuse ngram drafts themselves on a runner V2 they were told
        # to use (VLLM_USE_V2_MODEL_RUNNER=1: the runner-V2 test switch), before the
        # config reaches ead-vllm's check (check_ead_config: test_config_checks)
        from vllm_engine_support import RUNNER

        assert RUNNER == "v2"
    else:
        assert str(info.value).startswith(f"ead-vllm: {SPEC_DECODE_REFUSAL}. Way out: start the")
    with pytest.raises(ValueError, match="must be one of"):
        EngineArgs(
            model=str(model), dtype="float32", max_model_len=128, additional_config={"sampler": "x"}
        ).create_engine_config()


@pytest.mark.parametrize(
    ("extra_args", "key"),
    [
        ({"ead_tau_max": 0.0}, "ead_tau_max"),
        ({"ead_decay": -1}, "ead_decay"),
        ({"ead_warmup": 1.5}, "ead_warmup"),
        ({"ead_tau_max": 0.5, "ead_tau_min": 0.9}, "ead_tau_min"),
        ({"ead_unknown": 1}, "ead_unknown"),
    ],
)
def test_validation_error_names_the_key(extra_args, key):
    params = SimpleNamespace(extra_args=extra_args)
    with pytest.raises(VLLMValidationError, match=key) as info:
        parse_ead_params(params)
    assert info.value.parameter == key


def test_validation_accepts_good_and_absent_keys():
    assert parse_ead_params(SimpleNamespace(extra_args=None)) is None
    assert parse_ead_params(SimpleNamespace(extra_args={"other": 1})) is None
    params = parse_ead_params(SimpleNamespace(extra_args={"ead_tau_max": 2, "ead_decay": 50}))
    assert params.tau_max == 2.0 and params.decay == 50.0


def test_post_import_hook(tmp_path, monkeypatch):
    pkg = tmp_path / "ead_hook_probe.py"
    pkg.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    when_imported("ead_hook_probe", lambda m: seen.append(m.VALUE))
    assert seen == []
    import ead_hook_probe  # noqa: F401

    assert seen == [1]
    when_imported("ead_hook_probe", lambda m: seen.append(m.VALUE + 1))
    assert seen == [1, 2]
    del sys.modules["ead_hook_probe"]


def test_kernel_override_scan_survives_numba():
    pytest.importorskip("numba")
    import llvmlite.binding.ffi as ffi

    # the kernel-override scan (and so the crash the patch prevents) exists from vLLM 0.31 on
    dispatcher = pytest.importorskip("vllm.triton_utils.dispatcher")
    if not hasattr(dispatcher, "_rebind_kernels"):
        pytest.skip("vLLM 0.34.0 renamed the scan (_rebind_impls) and fixed the crash")

    from ead_vllm.vllm_ext.seams.dispatcher import _scannable

    assert not _scannable(ffi)  # what makes vLLM's own scan raise
    assert getattr(dispatcher._rebind_kernels, "_ead_patched", False)
    dispatcher._rebind_kernels([])  # scans every module, llvmlite's included
    assert dispatcher.sys is sys
