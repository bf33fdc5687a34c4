"""Seam: the frontend hooks, ``InputProcessor._validate_params`` and ``EngineArgs``.

One shape in every supported release (0.24.0-0.34.0; from 0.32.0 ``_validate_params``
returns a value, which the wrapper passes on unchanged).
"""

from __future__ import annotations

from ead_vllm.vllm_ext.seams.signature import Expectation, attr

INPUT_PROCESSOR_MODULE = "vllm.v1.engine.input_processor"
ARG_UTILS_MODULE = "vllm.engine.arg_utils"


EXPECTED: tuple[Expectation, ...] = (
    Expectation(
        f"{INPUT_PROCESSOR_MODULE}.InputProcessor._validate_params",
        lambda: attr(INPUT_PROCESSOR_MODULE, "InputProcessor", "_validate_params"),
        ("self", "params", "supported_tasks"),
    ),
    Expectation(
        f"{ARG_UTILS_MODULE}.EngineArgs.add_cli_args",
        lambda: attr(ARG_UTILS_MODULE, "EngineArgs", "add_cli_args"),
        ("parser",),
    ),
    Expectation(
        f"{ARG_UTILS_MODULE}.EngineArgs.from_cli_args",
        lambda: attr(ARG_UTILS_MODULE, "EngineArgs", "from_cli_args"),
        ("args",),
    ),
    Expectation(
        f"{ARG_UTILS_MODULE}.EngineArgs.create_engine_config",
        lambda: attr(ARG_UTILS_MODULE, "EngineArgs", "create_engine_config"),
        ("self", "usage_context", "headless"),
    ),
)
