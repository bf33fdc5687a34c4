"""The ``vllm.general_plugins`` entry point of ead-vllm.

vLLM calls :func:`register` in every process it starts (API server, engine
core, workers) before any model runner is built. Registering only wraps
vLLM functions; each wrapper checks ``additional_config["sampler"]`` and
does nothing unless it is ``"ead"``, so an installed but inactive plugin
leaves vLLM's behaviour unchanged (one exception, a fix for a vLLM crash
that numba triggers: see :mod:`ead_vllm.vllm_ext.seams.dispatcher`). Runner modules are
patched when (and in whichever process) they are imported.
"""

from __future__ import annotations

from ead_vllm.vllm_ext._post_import import when_imported

_registered = False


def register() -> None:
    """Install the ead-vllm patches into this process (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True
    from ead_vllm.vllm_ext import frontend, v1_install, v2_install
    from ead_vllm.vllm_ext.seams import dispatcher

    when_imported(dispatcher.DISPATCHER_MODULE, dispatcher.patch_dispatcher)
    when_imported(frontend.ARG_UTILS_MODULE, frontend.patch_arg_utils)
    when_imported(frontend.INPUT_PROCESSOR_MODULE, frontend.patch_input_processor)
    when_imported(v1_install.V1_RUNNER_MODULE, v1_install.patch_v1_runner)
    when_imported(v2_install.V2_RUNNER_MODULE, v2_install.patch_v2_runner)
    # vLLM 0.34.0 and later on non-x86 CPUs: refused with sampler="ead" (own CPUSampler)
    when_imported(v2_install.STANDALONE_CPU_RUNNER_MODULE, v2_install.patch_standalone_cpu_runner)
