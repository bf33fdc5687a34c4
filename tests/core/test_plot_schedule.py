"""``ead-vllm plot-schedule`` writes a valid PNG."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ead_vllm.cli import build_parser, main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_subcommand_is_registered():
    assert "plot-schedule" in build_parser().format_help()


def test_writes_a_png_of_the_schedule(tmp_path, capsys):
    out = tmp_path / "figs" / "ead.png"
    rc = main(["plot-schedule", "-o", str(out), "--steps", "0", "50", "--dpi", "50"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert png_size(out) == (320, 240)  # one 6.4 x 4.8 inch panel at 50 dpi

    from PIL import Image

    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        # the curves put real colour on the canvas (not a blank image)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is not None and len(colours) > 20


def test_second_panel_with_the_e3_target_and_the_reference_recipe(tmp_path):
    out = tmp_path / "both.png"
    rc = main(
        [
            "plot-schedule",
            "-o",
            str(out),
            "--reference-recipe",
            "--e3-total-steps",
            "480",
            "--e3-eta",
            "0.85",
            "--dpi",
            "40",
        ]
    )
    assert rc == 0
    assert png_size(out) == (512, 192)  # two panels side by side


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tau-min", "5"], "tau_min"),
        (["--d0", "0"], "d0"),
        (["--e3-total-steps", "10", "--e3-eta", "1.5"], "e3-eta"),
        (["--max-tokens", "0"], "max-tokens"),
    ],
)
def test_bad_parameters_exit_2_with_a_message(tmp_path, capsys, argv, message):
    out = tmp_path / "bad.png"
    assert main(["plot-schedule", "-o", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
