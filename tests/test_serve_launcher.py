"""`ead-vllm serve` argument handling: vLLM's own parser, plus what EAD changes."""

from __future__ import annotations

import pytest
from ead_vllm.serve.launcher import MIDDLEWARE, TOY_MODEL_NAME, parse_args

from ead_vllm.toy import model_path


def test_defaults_serve_the_toy_model_on_loopback_with_ead() -> None:
    args = parse_args(["--port", "8123"])
    assert args.model_tag == str(model_path())
    assert args.served_model_name == [TOY_MODEL_NAME]
    assert args.host == "127.0.0.1"
    assert args.port == 8123
    assert args.additional_config["sampler"] == "ead"
    assert args.middleware == [MIDDLEWARE]
    assert args.ead_defaults is None


def test_user_choices_are_kept() -> None:
    args = parse_args(
        [
            "/models/m",
            "--host",
            "0.0.0.0",
            "--additional-config",
            '{"foo": 1}',
            "--middleware",
            "my.Middleware",
            "--ead-defaults",
            '{"decay": 40}',
        ]
    )
    assert args.model_tag == "/models/m" and not args.served_model_name
    assert args.host == "0.0.0.0"
    assert args.additional_config == {"foo": 1, "sampler": "ead"}
    assert args.middleware == ["my.Middleware", MIDDLEWARE]
    assert args.ead_defaults == '{"decay": 40}'


@pytest.mark.parametrize("bad", ['{"tau_min": 0}', '{"decay": "x"}', "not json", '{"bogus": 1}'])
def test_bad_ead_defaults_exit_with_a_message(bad: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--ead-defaults", bad])
    assert exc.value.code == 2
    assert "--ead-defaults" in capsys.readouterr().err
