"""The EAD request surface, on a small FastAPI app behind the real EADMiddleware.

The app echoes the JSON body it receives, so each test sees exactly what vLLM's
handlers would get. The live vLLM server is exercised in test_serve_live.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from ead_vllm.serve.middleware import EADMiddleware
from ead_vllm.serve.request_ead import EADRequestError, apply_ead
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ead_vllm.params import EADParams


class CompletionRequest(BaseModel):
    prompt: str
    vllm_xargs: dict[str, Any] | None = None


def make_app(defaults: EADParams | None = None) -> TestClient:
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> dict[str, Any]:
        return {"received": await request.json()}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()

        async def chunks():  # a streamed response must pass through untouched
            for i in range(3):
                yield f"data: {json.dumps({'i': i, 'xargs': body.get('vllm_xargs')})}\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.post("/v1/other")
    async def other(request: Request) -> dict[str, Any]:
        return {"received": await request.json()}

    app.add_middleware(EADMiddleware, defaults=defaults)
    return TestClient(app)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return make_app()


@pytest.fixture(scope="module")
def client_with_defaults() -> TestClient:
    return make_app(EADParams(tau_max=1.5, tau_min=0.2, decay=300, warmup=2))


def received(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return resp.json()["received"]


def test_ead_object_becomes_flat_xargs(client: TestClient) -> None:
    body = {"prompt": "1+1=", "ead": {"tau_max": 1.2, "tau_min": 0.1, "decay": 500}}
    got = received(client.post("/v1/completions", json=body))
    assert "ead" not in got
    assert got["vllm_xargs"] == {
        "ead_tau_max": 1.2,
        "ead_tau_min": 0.1,
        "ead_decay": 500,
        "ead_warmup": 0,
    }


def test_ead_object_carries_an_offset(client: TestClient) -> None:
    body = {"prompt": "1+1=", "ead": {"decay": 500, "offset": 12}}
    assert received(client.post("/v1/completions", json=body))["vllm_xargs"]["ead_offset"] == 12
    bad = client.post("/v1/completions", json={"prompt": "x", "ead": {"offset": -1}})
    assert bad.status_code == 400 and "ead.offset" in bad.text


def test_other_xargs_are_kept(client: TestClient) -> None:
    body = {"prompt": "x", "ead": {"decay": 50}, "vllm_xargs": {"foo": "bar"}}
    got = received(client.post("/v1/completions", json=body))
    assert got["vllm_xargs"]["foo"] == "bar"
    assert got["vllm_xargs"]["ead_decay"] == 50


def test_plain_request_is_untouched_without_defaults(client: TestClient) -> None:
    got = received(client.post("/v1/completions", json={"prompt": "x"}))
    assert got == {"prompt": "x"}


def test_xargs_form_is_validated_and_completed(client: TestClient) -> None:
    got = received(
        client.post("/v1/completions", json={"prompt": "x", "vllm_xargs": {"ead_decay": 10}})
    )
    assert got["vllm_xargs"] == EADParams(decay=10).to_extra_args()


def test_server_defaults_apply_and_ead_false_opts_out(client_with_defaults: TestClient) -> None:
    c = client_with_defaults
    plain = received(c.post("/v1/completions", json={"prompt": "x"}))
    assert plain["vllm_xargs"] == {
        "ead_tau_max": 1.5,
        "ead_tau_min": 0.2,
        "ead_decay": 300,
        "ead_warmup": 2,
    }
    off = received(c.post("/v1/completions", json={"prompt": "x", "ead": False}))
    # the explicit opt-out also beats an engine's own defaults (EAD_VLLM_DEFAULTS)
    assert off["vllm_xargs"] == {"ead_enabled": 0}
    assert EADParams.from_extra_args(off["vllm_xargs"], EADParams()) is None
    partial = received(c.post("/v1/completions", json={"prompt": "x", "ead": {"decay": 40}}))
    assert partial["vllm_xargs"]["ead_decay"] == 40
    assert partial["vllm_xargs"]["ead_tau_max"] == 1.5
    on = received(c.post("/v1/completions", json={"prompt": "x", "ead": True}))
    assert on["vllm_xargs"]["ead_tau_min"] == 0.2


def test_the_xargs_switch_opts_out_or_in(
    client: TestClient, client_with_defaults: TestClient
) -> None:
    """``vllm_xargs: {"ead_enabled": 0 | 1}`` (TRL's server mode sends the first for
    evaluation): opt out, also of the server's defaults, or ask for them."""
    for c in (client, client_with_defaults):
        off = c.post("/v1/completions", json={"prompt": "x", "vllm_xargs": {"ead_enabled": 0}})
        assert received(off)["vllm_xargs"] == {"ead_enabled": 0}
    on = received(
        client.post("/v1/completions", json={"prompt": "x", "vllm_xargs": {"ead_enabled": 1}})
    )
    assert on["vllm_xargs"] == EADParams().to_extra_args()
    on = received(
        client_with_defaults.post(
            "/v1/completions", json={"prompt": "x", "vllm_xargs": {"ead_enabled": 1}}
        )
    )
    assert on["vllm_xargs"]["ead_tau_min"] == 0.2
    both = client.post(
        "/v1/completions", json={"prompt": "x", "vllm_xargs": {"ead_enabled": 0, "ead_decay": 9}}
    )
    assert both.status_code == 400 and both.json()["error"]["param"] == "vllm_xargs.ead_enabled"


@pytest.mark.parametrize(
    ("ead", "param"),
    [
        ({"tau_min": 0}, "ead.tau_min"),
        ({"tau_min": -1}, "ead.tau_min"),
        ({"tau_max": 0.5, "tau_min": 0.9}, "ead.tau_min"),
        ({"decay": 0}, "ead.decay"),
        ({"decay": "500"}, "ead.decay"),
        ({"warmup": -1}, "ead.warmup"),
        ({"warmup": 1.5}, "ead.warmup"),
        ({"tau_max": True}, "ead.tau_max"),
        ({"tau_max": None}, "ead.tau_max"),
        ({"bogus": 1}, "ead.bogus"),
        ("fast", "ead"),
        (3, "ead"),
        ([1.2, 0.1], "ead"),
    ],
)
def test_bad_ead_object_gets_400_naming_the_field(client: TestClient, ead: Any, param: str) -> None:
    resp = client.post("/v1/completions", json={"prompt": "x", "ead": ead})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param
    assert err["code"] == 400 and err["type"] == "BadRequestError"
    assert param.split(".")[-1] in err["message"]


@pytest.mark.parametrize(
    ("xargs", "param"),
    [
        ({"ead_tau_min": 0}, "vllm_xargs.ead_tau_min"),
        ({"ead_decay": "soon"}, "vllm_xargs.ead_decay"),
        ({"ead_bogus": 1}, "vllm_xargs.ead_bogus"),
    ],
)
def test_bad_xargs_get_400_naming_the_key(client: TestClient, xargs: Any, param: str) -> None:
    resp = client.post("/v1/completions", json={"prompt": "x", "vllm_xargs": xargs})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param


def test_nan_is_rejected(client: TestClient) -> None:
    raw = b'{"prompt": "x", "ead": {"decay": NaN}}'  # Python's json accepts NaN literals
    resp = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "ead.decay"


def test_object_and_xargs_together_are_refused(client: TestClient) -> None:
    body = {"prompt": "x", "ead": {"decay": 5}, "vllm_xargs": {"ead_decay": 6}}
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "ead"


def test_not_json_passes_through_to_the_app(client: TestClient) -> None:
    resp = client.post(
        "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422  # the app's own validation answers, not a crash


def test_other_routes_are_not_rewritten(client: TestClient) -> None:
    got = received(client.post("/v1/other", json={"ead": {"decay": 0}}))
    assert got == {"ead": {"decay": 0}}


def test_streaming_response_passes_through(client: TestClient) -> None:
    with client.stream(
        "POST", "/v1/chat/completions", json={"messages": [], "ead": {"decay": 7}}
    ) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert [json.loads(e[6:])["i"] for e in events] == [0, 1, 2]
    assert json.loads(events[0][6:])["xargs"]["ead_decay"] == 7


def test_openapi_documents_the_ead_object(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    props = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    assert "ead" in props
    refs = [s.get("$ref") for s in props["ead"]["anyOf"]]
    assert "#/components/schemas/EADParams" in refs
    ead = schema["components"]["schemas"]["EADParams"]
    assert set(ead["properties"]) == {"tau_max", "tau_min", "decay", "warmup", "offset"}


def test_apply_ead_returns_an_untouched_body_itself() -> None:
    # the middleware forwards the original bytes, without re-encoding, in this case
    body = {"prompt": "x", "vllm_xargs": {"a": 1}}
    assert apply_ead(body) is body
    assert apply_ead(body, EADParams()) is not body


def test_apply_ead_does_not_modify_its_input() -> None:
    body = {"prompt": "x", "ead": {"decay": 5}, "vllm_xargs": {"a": 1}}
    snapshot = json.loads(json.dumps(body))
    apply_ead(body, EADParams())
    assert body == snapshot


# Fuzz: any JSON value in place of the `ead` object either validates as EADParams
# (then the rewritten xargs carry exactly its values) or raises EADRequestError.
json_scalars = (
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
ead_like = st.dictionaries(
    st.sampled_from(["tau_max", "tau_min", "decay", "warmup", "extra"]), json_values, max_size=4
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ead=json_values | ead_like)
def test_fuzz_apply_ead(ead: Any) -> None:
    try:
        out = apply_ead({"prompt": "x", "ead": ead})
    except EADRequestError as exc:
        assert exc.param == "ead" or exc.param.startswith("ead.")
        return
    if ead is None:
        assert "vllm_xargs" not in out
        return
    if ead is False:  # an explicit opt-out, also of an engine's own defaults
        assert out["vllm_xargs"] == {"ead_enabled": 0}
        return
    params = EADParams.from_extra_args(out["vllm_xargs"])
    assert params is not None
    assert all(math.isfinite(v) for v in params.to_extra_args().values())
    if isinstance(ead, dict):
        for k, v in ead.items():
            assert getattr(params, k) == v


xargs_like = st.dictionaries(
    st.sampled_from(["ead_tau_max", "ead_tau_min", "ead_decay", "ead_warmup", "ead_offset",
                     "ead_enabled", "ead_bogus", "seed"]),
    json_values | st.sampled_from([0, 1, True, False]),
    max_size=4,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xargs=xargs_like, with_defaults=st.booleans())
def test_fuzz_apply_ead_xargs(xargs: dict, with_defaults: bool) -> None:
    """Any ``vllm_xargs`` either validates (the result parses as the engine will) or
    raises EADRequestError naming a ``vllm_xargs.`` key: never another exception."""
    defaults = EADParams(decay=300) if with_defaults else None
    try:
        out = apply_ead({"prompt": "x", "vllm_xargs": xargs}, defaults)
    except EADRequestError as exc:
        assert exc.param.startswith("vllm_xargs.ead_")
        return
    sent = out.get("vllm_xargs", {})
    assert sent.get("seed", None) == xargs.get("seed")
    parsed = EADParams.from_extra_args(sent)
    if xargs.get("ead_enabled") in (0, False):
        assert parsed is None and sent["ead_enabled"] == 0
    elif any(k.startswith("ead_") for k in xargs) or with_defaults:
        assert parsed is not None
