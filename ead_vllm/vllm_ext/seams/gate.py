"""The start-up gate of the sampler override: a supported vLLM whose seams fit, or one error.

Runs only with ``sampler="ead"`` (from :func:`ead_vllm.vllm_ext.config.check_ead_config`,
i.e. when the engine config is created and again when a runner installs the
sampler). Three checks, all before any request:

1. the vLLM version is in :data:`~.versions.SUPPORTED` (local labels such as
   ``+cpu`` ignored), or the user opted in to an untested release (below);
2. that version has the runner asked for (:func:`~.versions.runners`: vLLM 0.34.0
   and later have runner V2 only);
3. every seam the runner's override touches has exactly the parameters its adapter
   expects (``inspect.signature`` of the real objects, see :mod:`.signature`).

A failure raises :class:`~ead_vllm.vllm_ext.errors.UnsupportedVLLMError`: one line
naming the version found, the supported set and the way out.

**Untested releases.** ``EAD_VLLM_ALLOW_UNTESTED_VLLM=1`` in the engine's
environment lets the override start on a release outside the supported set *when
check 3 passes*, with the adapters the version registry's rules choose for it. It
logs one warning naming the version, what was checked (every seam's signature) and
what was not (behaviour behind the signatures, which only the live tests and the
source review prove). A seam that does not match still refuses.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from ead_vllm.vllm_ext.errors import DEFAULT_WAY_OUT, UnsupportedVLLMError
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
    RUNNER_V1,
    installed_vllm_version,
    is_supported,
    release,
    runners,
    supported_text,
)

__all__ = ["ALLOW_UNTESTED_ENV", "UnsupportedVLLMError", "check_vllm", "expectations"]

Runner = Literal["v1", "v2"]

ALLOW_UNTESTED_ENV = "EAD_VLLM_ALLOW_UNTESTED_VLLM"

logger = logging.getLogger("ead_vllm")

V2_ONLY_WAY_OUT = (
    "start the engine without the EAD sampler override, with "
    "additional_config={'sampler': 'default'} (or without --sampler ead): stock vLLM "
    "sampling; or keep annealed decoding inside vLLM's own sampler with the logits-processor "
    "mode, logits_processors=['ead_vllm.vllm_ext.logits_processors:EADLogitsProcessorV2']"
)


def way_out(version: str) -> str:
    """What to do instead on vLLM ``version``: only runner V2's processor where V1 is gone."""
    return DEFAULT_WAY_OUT if RUNNER_V1.holds(version) else V2_ONLY_WAY_OUT


def expectations(runner: Runner, version: str) -> tuple[Expectation, ...]:
    """The seams runner ``runner``'s override relies on, for vLLM release ``version``."""
    if runner == "v1":
        return (
            *frontend.EXPECTED,
            *v1_logits_processor.EXPECTED,
            *v1_sampler.expected(version),
            *v1_stock_sampling.expected(version),
        )
    return (
        *frontend.EXPECTED,
        *v2_sampler.shape_for(version).expected(version),
        *v2_stock_sampling.expected(version),
        # the EAD rows' masks call vLLM's top-k/top-p on both runners
        v1_stock_sampling.top_k_top_p_expectation(version),
        *v2_logits_processor.expected(version),
    )


def allow_untested() -> bool:
    """True when the user opted in to untested releases (``EAD_VLLM_ALLOW_UNTESTED_VLLM=1``)."""
    return os.environ.get(ALLOW_UNTESTED_ENV, "").strip().lower() in ("1", "true", "yes")


_passed: set[tuple[Runner, str]] = set()


def require_seams(runner: Runner, found: str, checks: tuple[Expectation, ...]) -> None:
    """Raise :class:`UnsupportedVLLMError` unless every one of ``checks`` (seams of runner
    ``runner`` in vLLM ``found``) has the shape ead-vllm was written for."""
    wrong = mismatches(checks)
    if wrong:
        raise UnsupportedVLLMError(
            f"sampler='ead' does not start on vLLM {found}: runner {runner.upper()}'s "
            f"internals do not have the shape ead-vllm was written for: {'; '.join(wrong)}. "
            f"Supported: {supported_text()}",
            way_out=way_out(found),
        )


def check_vllm(runner: Runner, version: str | None = None) -> None:
    """Raise :class:`UnsupportedVLLMError` unless the EAD override can run on this vLLM.

    ``runner`` is the model runner that will build the sampler; ``version`` defaults
    to the installed vLLM's. A passing check is remembered for the process.
    """
    found = installed_vllm_version() if version is None else version
    if (runner, found) in _passed:
        return
    start = f"sampler='ead' does not start on vLLM {found}"
    tail = f"Supported: {supported_text()}"
    untested = not is_supported(found)
    if untested and not allow_untested():
        raise UnsupportedVLLMError(
            f"{start}: that version is outside the tested set (set {ALLOW_UNTESTED_ENV}=1 to "
            f"start anyway when every seam matches). {tail}",
            way_out=way_out(found),
        )
    if runner not in runners(found):
        raise UnsupportedVLLMError(
            f"{start}: it has no model runner {runner.upper()} (vLLM 0.34.0 removed runner "
            f"V1). {tail}",
            way_out=way_out(found),
        )
    checked = expectations(runner, release(found))
    require_seams(runner, found, checked)
    if untested:
        logger.warning(
            "ead-vllm: starting sampler='ead' on vLLM %s, outside the tested set, because "
            "%s=1. Checked: the signatures of all %d vLLM internals runner %s's override "
            "touches (they match). Not checked: what vLLM does behind them (stage order, "
            "noise, log-prob modes), which only the live test matrix and the source review "
            "of a supported release prove. %s.",
            found,
            ALLOW_UNTESTED_ENV,
            len(checked),
            runner.upper(),
            tail,
        )
    _passed.add((runner, found))
