"""The start-up gate of the sampler override: a supported vLLM whose seams fit, or one error.

Runs only with ``sampler="ead"`` (from :func:`ead_vllm.vllm_ext.config.check_ead_config`,
i.e. when the engine config is created and again when a runner installs the
sampler). Two checks, both before any request:

1. the vLLM version is in :data:`~.versions.SUPPORTED` (local labels such as
   ``+cpu`` ignored);
2. every seam the chosen runner's override touches has exactly the parameters its
   adapter expects (``inspect.signature`` of the real objects, see :mod:`.signature`).

Either failure raises :class:`UnsupportedVLLMError` with one message naming the
version found, the supported set and the way out.
"""

from __future__ import annotations

from typing import Literal

from ead_vllm.vllm_ext.seams import (
    frontend,
    v1_logits_processor,
    v1_sampler,
    v1_stock_sampling,
    v2_logits_processor,
    v2_sampler,
    v2_stock_sampling,
)
from ead_vllm.vllm_ext.seams.signature import Expectation, mismatches
from ead_vllm.vllm_ext.seams.versions import (
    installed_vllm_version,
    is_supported,
    release,
    supported_text,
)

Runner = Literal["v1", "v2"]

WAY_OUT = (
    "Way out: start the engine without the EAD sampler override, with "
    "additional_config={'sampler': 'default'} (or without --sampler ead): stock vLLM "
    "sampling; or keep annealed decoding inside vLLM's own sampler with the logits-processor "
    "mode, logits_processors=['ead_vllm.vllm_ext.logits_processors:EADLogitsProcessor'] "
    "(runner V1; EADLogitsProcessorV2 for runner V2 on vLLM 0.31 and later)."
)


class UnsupportedVLLMError(RuntimeError):
    """The installed vLLM cannot run the EAD sampler override (version or seam shape)."""


def expectations(runner: Runner, version: str) -> tuple[Expectation, ...]:
    """The seams runner ``runner``'s override relies on, for vLLM release ``version``."""
    common = (*frontend.EXPECTED, *v1_logits_processor.EXPECTED)
    if runner == "v1":
        return (*common, *v1_sampler.EXPECTED, *v1_stock_sampling.expected(version))
    shape = v2_sampler.shape_for(version)
    if shape is None:  # not reached for supported versions
        return common
    return (
        *common,
        *shape.expected(),
        *v2_stock_sampling.expected(version),
        # the EAD rows' masks call vLLM's top-k/top-p on both runners
        v1_stock_sampling.top_k_top_p_expectation(version),
        *v2_logits_processor.expected(version),
    )


_passed: set[tuple[Runner, str]] = set()


def check_vllm(runner: Runner, version: str | None = None) -> None:
    """Raise :class:`UnsupportedVLLMError` unless the EAD override can run on this vLLM.

    ``runner`` is the model runner that will build the sampler; ``version`` defaults
    to the installed vLLM's. A passing check is remembered for the process.
    """
    found = installed_vllm_version() if version is None else version
    if (runner, found) in _passed:
        return
    if not is_supported(found):
        raise UnsupportedVLLMError(
            f"ead-vllm: sampler='ead' does not start on vLLM {found}: that version is "
            f"outside the tested set. Supported: {supported_text()}. {WAY_OUT}"
        )
    wrong = mismatches(expectations(runner, release(found)))
    if wrong:
        raise UnsupportedVLLMError(
            f"ead-vllm: sampler='ead' does not start on vLLM {found}: runner "
            f"{runner.upper()}'s internals do not have the shape ead-vllm was written "
            f"for: {'; '.join(wrong)}. Supported: {supported_text()}. {WAY_OUT}"
        )
    _passed.add((runner, found))
