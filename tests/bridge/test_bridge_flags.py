"""The launcher's flags, parsed with OpenRLHF 0.11.2's own ``train_ppo_ray`` parser.

CPU stub: ``flash_attn`` (CUDA-only) is stubbed while OpenRLHF's training
modules are imported (``openrlhf_bridge.testing``), as in OpenRLHF's own CPU
tests; nothing of it is called here.
"""

from __future__ import annotations

import sys

import openrlhf.trainer.ppo_trainer as ppo_trainer
import openrlhf.trainer.ray as openrlhf_ray
import openrlhf.trainer.ray.launcher as launcher
import openrlhf.trainer.ray.ppo_actor as ppo_actor
import openrlhf.utils
import pytest

from ead_vllm.params import EADParams
from openrlhf_bridge import train_ppo_ray
from openrlhf_bridge.trainer import EADPPOTrainer
from openrlhf_bridge.vllm_engine import create_ead_vllm_engines
from openrlhf_bridge.workers import EADPolicyModelActor, EADReferenceModelActor

GRPO = [
    "--actor.model_name_or_path", "some/model",
    "--reward.remote_url", "reward.py",
    "--vllm.num_engines", "2",
    "--algo.advantage.estimator", "group_norm",
    "--rollout.n_samples_per_prompt", "8",
]  # fmt: skip


@pytest.fixture(scope="module")
def parser():
    return train_ppo_ray.build_parser()


def parse(*flags: str):
    return train_ppo_ray.parse_args([*GRPO, *flags])


def test_one_parser_holds_openrlhf_and_bridge_flags(parser):
    options = {opt for action in parser._actions for opt in action.option_strings}
    # OpenRLHF's own flags come from its module, not from a copy
    assert {"--rollout.n_samples_per_prompt", "--algo.advantage.is_correction_level"} <= options
    assert {"--ead.enable", "--ead.correction", "--e3.dynamic_budget", "--e3.eta"} <= options
    help_text = parser.format_help()
    assert "--ead.tau_max" in help_text and "--e3.temperature_controller" in help_text


def test_no_bridge_flag_leaves_openrlhf_alone():
    namespace, config = parse()
    assert not config.active
    assert getattr(namespace, "algo.advantage.is_correction_level") == "off"


def test_ead_paper_units_and_tis_mapping():
    namespace, config = parse(
        "--ead.enable", "--ead.tau_max", "1.2", "--ead.tau_min", "0.1", "--ead.d0", "300",
        "--ead.growth", "5", "--ead.d_max", "40000", "--ead.warmup", "0",
    )  # fmt: skip
    ead = config.ead
    assert (ead.correction, ead.exponent_scale, ead.tis_cap) == ("tis", 1.0, 2.0)
    assert ead.params_at(10) == EADParams(tau_max=1.2, tau_min=0.1, decay=350.0, warmup=0)
    assert ead.params_at(10**6).decay == 40000.0
    # TIS is OpenRLHF's own IS correction: token level, clip, ratio gate, [0, cap]
    assert getattr(namespace, "algo.advantage.is_correction_level") == "token"
    assert getattr(namespace, "algo.advantage.is_correction_mode") == "clip"
    assert getattr(namespace, "algo.advantage.is_correction_gating") == "ratio"
    assert getattr(namespace, "algo.advantage.is_correction_threshold") == [0.0, 2.0]


def test_reference_preset_is_the_authors_recipe():
    _, config = parse("--ead.enable", "--ead.preset", "reference")
    for step in (0, 7, 10**5):
        assert config.ead.params_at(step) == EADParams.reference_recipe(step)
    _, config = parse("--ead.enable", "--ead.preset", "reference", "--ead.d0", "50")
    assert config.ead.params_at(0).decay == 20 * 50


def test_positional_correction_keeps_openrlhf_is_flags():
    namespace, config = parse("--ead.enable", "--ead.d0", "500", "--ead.correction", "positional")
    assert config.positional and config.actor_temperature and config.ead.tis_cap is None
    assert getattr(namespace, "algo.advantage.is_correction_level") == "off"


def test_e3_flags():
    _, config = parse(
        "--e3.dynamic_budget", "--e3.n_min", "4", "--e3.n_max", "12", "--e3.widen", "2",
        "--e3.temperature_controller", "--e3.anneal_start", "30", "--e3.eta", "0.9",
        "--e3.min_temperature", "0.5", "--e3.max_temperature", "1.5",
    )  # fmt: skip
    assert (config.budget.n_min, config.budget.n_max, config.budget.widen) == (4, 12, 2)
    t = config.temperature
    assert (t.anneal_start, t.eta, t.min_temperature, t.max_temperature) == (30, 0.9, 0.5, 1.5)
    assert config.ead is None and config.actor_temperature


def test_bridge_flags_reach_openrlhf_hierarchical_args():
    from openrlhf.utils.config import hierarchize

    namespace, _ = parse("--ead.enable", "--ead.d0", "500", "--e3.dynamic_budget")
    args = hierarchize(namespace)
    assert args.ead.enable and args.ead.d0 == 500 and args.e3.dynamic_budget
    assert args.rollout.n_samples_per_prompt == 8


BAD = [
    (["--ead.tau_max", "1.5"], "--ead.tau_max given without --ead.enable"),
    (["--ead.enable"], "needs --ead.d0"),
    (["--ead.enable", "--ead.d0", "9", "--ead.tau_min", "2"], "tau_min"),
    (["--ead.enable", "--ead.d0", "90", "--ead.d_max", "50"], "--ead.d_max (50.0) must be >="),
    (["--ead.enable", "--ead.d0", "9", "--ead.tis_cap", "0.5"], "--ead.tis_cap must be"),
    (["--e3.n_min", "2"], "--e3.n_min given without --e3.dynamic_budget"),
    (["--e3.eta", "0.5"], "without --e3.temperature_controller"),
    (["--e3.dynamic_budget", "--e3.n_min", "9"], "n_min <= --rollout.n_samples_per_prompt"),
    (
        ["--e3.dynamic_budget", "--algo.advantage.estimator", "gae"],
        "needs a group-relative estimator",
    ),
    (["--e3.dynamic_budget", "--algo.dynamic_filtering_enable"], "Use one"),
    (["--ead.enable", "--ead.d0", "9", "--train.async_enable"], "--train.async_enable"),
    (["--ead.enable", "--ead.d0", "9", "--vllm.num_engines", "0"], "needs vLLM rollouts"),
    (["--ead.enable", "--ead.d0", "9", "--rollout.temperature", "0"], "must be > 0"),
    (
        ["--ead.enable", "--ead.d0", "9", "--algo.advantage.is_correction_mode", "mask"],
        "conflicts with --algo.advantage.is_correction_mode",
    ),
    (
        [
            "--ead.enable",
            "--ead.d0",
            "9",
            "--ead.tis_cap",
            "3",
            "--algo.advantage.is_correction_threshold",
            "0",
            "4",
        ],
        "not both",
    ),  # fmt: skip
    (
        ["--ead.enable", "--ead.d0", "9", "--ead.correction", "positional", "--ead.tis_cap", "3"],
        "tis only",
    ),
    (["--e3.temperature_controller", "--e3.eta", "0"], "--e3.eta must be in (0, 1]"),
    (
        ["--e3.temperature_controller", "--e3.min_temperature", "1.1"],
        "--e3.min_temperature <= --rollout.temperature",
    ),
    (
        ["--e3.temperature_controller", "--e3.total_steps", "10", "--e3.anneal_start", "20"],
        "--e3.anneal_start (20) must be <= --e3.total_steps (10)",
    ),
    (["--ead.enable", "--ead.correction", "both"], "invalid choice"),
]


BAD_VALUES = [
    (
        ["--ead.tau_min", "5", "--ead.tau_max", "1.2"],
        "--ead.tau_min (5.0) must be <= --ead.tau_max (1.2)",
    ),
    (["--ead.tau_min", "5"], "--ead.tau_min (5.0) must be <= --ead.tau_max (1.2)"),
    (["--ead.tau_max", "0"], "--ead.tau_max must be a finite number > 0, got 0.0"),
    (["--ead.tau_max", "nan"], "--ead.tau_max must be a finite number > 0, got nan"),
    (["--ead.tau_min", "-1"], "--ead.tau_min must be a finite number > 0, got -1.0"),
    (["--ead.d0", "inf", "--ead.d_max", "inf"], "--ead.d0 must be a finite number > 0"),
    (["--ead.growth", "-1"], "--ead.growth must be a finite number >= 0, got -1.0"),
    (["--ead.warmup", "-3"], "--ead.warmup must be >= 0, got -3"),
    (["--ead.preset", "reference", "--ead.d_max", "1e308"], "--ead.d_max (1e+308) is too large"),
    (["--ead.tau_min", "abc"], "argument --ead.tau_min: invalid float value: 'abc'"),
    (["--ead.warmup", "1.5"], "argument --ead.warmup: invalid int value: '1.5'"),
]
BAD += [(["--ead.enable", "--ead.d0", "9", *flags], message) for flags, message in BAD_VALUES]
BAD += [
    (["--e3.dynamic_budget", "--e3.widen", "-1"], "--e3.widen must be >= 0, got -1"),
    (["--e3.dynamic_budget", "--e3.n_min", "0"], "--e3.n_min must be >= 1, got 0"),
    (["--e3.temperature_controller", "--e3.max_temperature", "inf"],
     "--e3.max_temperature must be a finite number, got inf"),
    (["--e3.temperature_controller", "--e3.warmup_steps", "0"], "--e3.warmup_steps must be >= 1"),
    (["--e3.temperature_controller", "--e3.total_steps", "0"], "--e3.total_steps must be >= 1"),
    (["--e3.temperature_controller", "--e3.anneal_start", "-1"], "--e3.anneal_start must be >= 0"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "message"), BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_combinations_exit_with_one_line_naming_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(*flags)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # One line (no 190-line usage, no validation dump of an internal model) naming the flag.
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "python -m openrlhf_bridge.train_ppo_ray: error: "
    )
    assert message in lines[0]
    assert "--ead." in lines[0] or "--e3." in lines[0]
    assert "validation error" not in err and "pydantic" not in err and "usage:" not in err


def test_errors_about_openrlhf_flags_keep_argparse_output(capsys):
    with pytest.raises(SystemExit) as exc:
        parse("--rollout.n_samples_per_prompt", "many")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m openrlhf_bridge.train_ppo_ray")  # stock argparse
    assert "argument --rollout.n_samples_per_prompt: invalid int value" in err


class _ReachedTrain(Exception):
    pass


def test_main_runs_openrlhf_main_with_bridge_classes_installed(monkeypatch):
    """The launcher runs OpenRLHF's own __main__ block (its post-parse checks included)
    and its train() sees the bridge's classes; everything is restored afterwards."""
    seen = {}

    def fake_get_strategy(args):
        caller = sys._getframe(1).f_globals  # train()'s globals: the runpy'd OpenRLHF module
        seen["args"] = args
        seen["actor"] = caller["PolicyModelActor"]
        seen["ref"] = caller["ReferenceModelActor"]
        seen["engines"] = caller["create_vllm_engines"]
        seen["trainer"] = ppo_trainer.PPOTrainer  # train() imports it from here later
        raise _ReachedTrain

    monkeypatch.setattr(openrlhf.utils, "get_strategy", fake_get_strategy)
    monkeypatch.setattr("ray.is_initialized", lambda: True)
    # flash-attn cannot be installed here (CUDA only): the launch check is told it is
    monkeypatch.setattr(train_ppo_ray, "missing_for_training", lambda: [])
    originals = (ppo_actor.PolicyModelActor, launcher.ReferenceModelActor, ppo_trainer.PPOTrainer)
    originals += (openrlhf_ray.create_vllm_engines,)
    with pytest.raises(_ReachedTrain):
        train_ppo_ray.main(
            [*GRPO, "--ead.enable", "--ead.preset", "reference", "--ead.correction", "positional",
             "--e3.temperature_controller"]
        )  # fmt: skip
    assert seen["actor"] is EADPolicyModelActor and seen["ref"] is EADReferenceModelActor
    assert seen["engines"] is create_ead_vllm_engines and seen["trainer"] is EADPPOTrainer
    args = seen["args"]
    assert (
        args.ead.enable and args.ead.correction == "positional" and args.e3.temperature_controller
    )
    assert args.actor.eps_clip_low_high == (0.2, 0.2)  # OpenRLHF's post-parse code ran
    now = (ppo_actor.PolicyModelActor, launcher.ReferenceModelActor, ppo_trainer.PPOTrainer)
    assert now + (openrlhf_ray.create_vllm_engines,) == originals


def doc_commands() -> list[list[str]]:
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```bash\n(python -m openrlhf_bridge\.train_ppo_ray.*?)```", text, re.S)
    return [shlex.split(block.replace("\\\n", " "))[3:] for block in blocks]


def test_documented_command_lines_pass_openrlhf_and_bridge_checks(monkeypatch):
    commands = doc_commands()
    assert len(commands) == 2
    seen = []

    def fake_get_strategy(args):
        seen.append(args)
        raise _ReachedTrain

    monkeypatch.setattr(openrlhf.utils, "get_strategy", fake_get_strategy)
    monkeypatch.setattr("ray.is_initialized", lambda: True)
    # flash-attn cannot be installed here (CUDA only): the launch check is told it is
    monkeypatch.setattr(train_ppo_ray, "missing_for_training", lambda: [])
    for argv in commands:
        with pytest.raises(_ReachedTrain):
            train_ppo_ray.main(argv)  # OpenRLHF's own post-parse assertions run first
    ead_run, e3_run = seen
    assert ead_run.ead.enable and ead_run.algo.advantage.is_correction_mode == "clip"
    assert ead_run.algo.advantage.is_correction_threshold == [0.0, 2.0]
    assert e3_run.e3.dynamic_budget and e3_run.e3.temperature_controller and not e3_run.ead.enable
