"""``make vllm-check VLLM=<version>``: assess a vLLM release's internals against our seams.

Run with a release's Python sources first on ``PYTHONPATH`` (``VLLM_TARGET_DEVICE=cpu``;
the Makefile target downloads the hash-pinned wheel and unpacks them). For each seam
module it prints ``same`` or what changed:

* every :class:`~.signature.Expectation` the adapters chosen for that release (by the
  rules of :mod:`.versions`) rely on, compared with ``inspect.signature`` of the real
  objects;
* the vLLM source files behind the seam, by content hash, against the fingerprints
  recorded for the newest supported release (``seams/fingerprints.json``): a file that
  changed without a signature change is a behaviour to re-read (0.34.0's ``gumbel.py``
  was one).

Then it says whether the release can be added as "seams checked against sources".
Exit status 0 when every signature matches, 1 otherwise. ``--record`` writes the
fingerprints of the sources on ``PYTHONPATH`` (after adding a release).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from ead_vllm.vllm_ext.seams import (
    frontend,
    v1_logits_processor,
    v1_sampler,
    v1_stock_sampling,
    v2_logits_processor,
    v2_runner,
    v2_sampler,
    v2_stock_sampling,
)
from ead_vllm.vllm_ext.seams.signature import Expectation
from ead_vllm.vllm_ext.seams.versions import (
    SUPPORTED,
    installed_vllm_version,
    release,
    runners,
)

FINGERPRINTS = Path(__file__).with_name("fingerprints.json")

#: seam -> (its expectations for a release, the vLLM modules whose sources it relies on)
SEAMS = {
    "frontend": (
        lambda v: frontend.EXPECTED,
        (frontend.INPUT_PROCESSOR_MODULE, frontend.ARG_UTILS_MODULE),
    ),
    "v2_sampler": (
        lambda v: v2_sampler.shape_for(v).expected(v),
        (v2_sampler.SAMPLER_MODULE, v2_sampler.STATES_MODULE),
    ),
    "v2_stock_sampling": (
        lambda v: (*v2_stock_sampling.expected(v), v1_stock_sampling.top_k_top_p_expectation(v)),
        ("vllm.v1.worker.gpu.sample.gumbel", v1_stock_sampling.OPS_MODULE),
    ),
    "v2_logits_processor": (
        v2_logits_processor.expected,
        (v2_logits_processor.INTERFACE_MODULE, v2_logits_processor.BUFFERS_MODULE),
    ),
    "v2_runner": (v2_runner.expected, (v2_runner.RUNNER_MODULE,)),
    "v1_sampler": (
        v1_sampler.expected,
        (v1_sampler.SAMPLER_MODULE, v1_sampler.METADATA_MODULE),
    ),
    "v1_logits_processor": (
        lambda v: v1_logits_processor.EXPECTED,
        (v1_logits_processor.INTERFACE_MODULE, v1_logits_processor.BUILTIN_MODULE),
    ),
    "v1_stock_sampling": (v1_stock_sampling.expected, (v1_stock_sampling.OPS_MODULE,)),
}
V1_SEAMS = ("v1_sampler", "v1_logits_processor", "v1_stock_sampling")


def source_hash(module: str) -> str | None:
    """sha256 of ``module``'s source file (``None`` when the module does not exist)."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None or spec.origin is None:
        return None
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


def fingerprints() -> dict[str, str | None]:
    """Content hashes of every vLLM module a seam relies on, in the installed vLLM."""
    return {m: source_hash(m) for _, modules in SEAMS.values() for m in modules}


def report(version: str) -> tuple[list[str], bool]:
    """Lines of the per-seam report for ``version``, and whether every signature matched."""
    known = json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.exists() else {}
    baseline_version = known.get("release", "?")
    baseline = known.get("modules", {})
    lines, ok = [], True
    has_v1 = "v1" in runners(version)
    for name, (expected, modules) in SEAMS.items():
        if name in V1_SEAMS and not has_v1:
            lines.append(f"{name}: not used (vLLM {version} has no runner V1)")
            continue
        checks: tuple[Expectation, ...] = tuple(expected(version))
        wrong = [m for e in checks if (m := e.mismatch()) is not None]
        ok = ok and not wrong
        changed = [m for m in modules if m in baseline and source_hash(m) != baseline[m]]
        if not wrong and not changed:
            lines.append(
                f"{name}: same ({len(checks)} signatures; sources as in {baseline_version})"
            )
            continue
        lines.append(f"{name}: CHANGED")
        lines += [f"  signature: {m}" for m in wrong]
        for m in changed:
            how = "absent in" if baseline[m] is None else "differs from"
            lines.append(
                f"  source {how} {baseline_version}'s (re-read it; signatures "
                f"{'differ' if wrong else 'match'}): {m.replace('.', '/')}.py"
            )
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--record", action="store_true", help="write seams/fingerprints.json from these sources"
    )
    args = parser.parse_args(argv)
    found = installed_vllm_version()
    version = release(found)
    if args.record:
        FINGERPRINTS.write_text(
            json.dumps({"release": version, "modules": fingerprints()}, indent=1, sort_keys=True)
            + "\n"
        )
        print(f"recorded the seam fingerprints of vLLM {version} in {FINGERPRINTS}")
        return 0
    print(f"== vllm-check: vLLM {found} (runners: {', '.join(runners(version))})")
    lines, ok = report(version)
    print("\n".join(lines))
    if version in SUPPORTED:
        verdict = f"vLLM {version} is already supported"
    elif ok:
        verdict = (
            f"vLLM {version} can be added as 'seams checked against sources': every signature "
            "matches. Add it to SOURCES_CHECKED in seams/versions.py (and any capability it "
            "changes), re-read the sources marked above, pin its hash, then --record"
        )
    else:
        verdict = f"vLLM {version} cannot be added yet: adapt the seams marked CHANGED first"
    print(f"== vllm-check: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
