"""The one shape of every start-up refusal: ``ead-vllm: <what went wrong>. Way out: <...>``.

A refusal always says what was found and what to do instead, so a user reading a
server's crash log can act on the one line. Subclasses say which check refused.
"""

from __future__ import annotations

import logging

#: ead-vllm's engine-side log lines, under vLLM's logger so they appear in vLLM's output
#: (vLLM configures the ``vllm`` logger's handlers in every process it starts).
engine_logger = logging.getLogger("vllm.ead_vllm")


def log_installed(runner: str, sampler: object) -> None:
    """One INFO line when a runner has built the EAD sampler (tests read it back)."""
    engine_logger.info(
        "ead-vllm: EAD sampler installed on model runner %s (%s)",
        runner.upper(),
        type(sampler).__name__,
    )


#: What works on any vLLM: stock sampling, or annealing inside vLLM's own sampler.
DEFAULT_WAY_OUT = (
    "start the engine without the EAD sampler override, with "
    "additional_config={'sampler': 'default'} (or without --sampler ead): stock vLLM "
    "sampling; or keep annealed decoding inside vLLM's own sampler with the logits-processor "
    "mode, logits_processors=['ead_vllm.vllm_ext.logits_processors:EADLogitsProcessorV2'] "
    "(runner V2, vLLM 0.31 and later; EADLogitsProcessor for runner V1 on vLLM 0.24-0.33)"
)


class EADStartupError(RuntimeError):
    """ead-vllm refuses to start: ``what`` happened; ``way_out`` says what to do instead."""

    def __init__(self, what: str, *, way_out: str = DEFAULT_WAY_OUT) -> None:
        self.what = what
        self.way_out = way_out
        super().__init__(f"ead-vllm: {what.rstrip('.')}. Way out: {way_out}.")


class UnsupportedVLLMError(EADStartupError):
    """The installed vLLM cannot run the EAD sampler override (version or seam shape)."""


class EADConfigError(EADStartupError, ValueError):
    """The engine's configuration cannot be served correctly with ``sampler="ead"``."""
