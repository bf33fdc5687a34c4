"""ASGI middleware that gives vLLM's OpenAI server a first-class ``ead`` object.

Install it with vLLM's own flag, ``--middleware ead_vllm.serve.middleware.EADMiddleware``
(``ead-vllm serve`` does this for you). It

* rewrites the JSON body of ``POST /v1/completions`` and
  ``POST /v1/chat/completions``: the ``ead`` object (or server defaults) becomes
  the flat ``ead_*`` keys of ``vllm_xargs`` (see :mod:`ead_vllm.serve.request_ead`);
* answers bad EAD settings with HTTP 400 and an OpenAI-style error body naming
  the field, before anything reaches the engine;
* documents the ``ead`` object in ``GET /openapi.json``.

It is a plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``) so that
streamed responses pass through untouched. Server defaults come from the
``EAD_VLLM_SERVER_DEFAULTS`` environment variable (JSON of
:class:`~ead_vllm.params.EADParams` fields), because vLLM instantiates
middleware classes without arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ead_vllm.serve.openapi import add_ead_to_openapi
from ead_vllm.serve.request_ead import EADRequestError, apply_ead

from ead_vllm.params import EADParams

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULTS_ENV = "EAD_VLLM_SERVER_DEFAULTS"
REWRITTEN_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})
# Request bodies larger than this are refused before being buffered in memory.
MAX_BODY_BYTES = 32 * 1024 * 1024


def server_defaults_from_env() -> EADParams | None:
    """The server-wide EAD defaults from ``$EAD_VLLM_SERVER_DEFAULTS`` (JSON), or None."""
    raw = os.environ.get(DEFAULTS_ENV)
    if not raw:
        return None
    return EADParams.model_validate_json(raw)


def error_body(message: str, param: str | None, code: int = 400) -> bytes:
    """An OpenAI-style error response body (the shape vLLM's server uses)."""
    kind = "BadRequestError" if code == 400 else "RequestEntityTooLarge"
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    ).encode()


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class EADMiddleware:
    """ASGI middleware: EAD request rewriting, 400s for bad settings, OpenAPI docs."""

    def __init__(self, app: ASGIApp, defaults: EADParams | None = None) -> None:
        self.app = app
        self.defaults = defaults if defaults is not None else server_defaults_from_env()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method = scope.get("method")
        if method == "POST" and path in REWRITTEN_PATHS:
            await self._rewrite_request(scope, receive, send)
        elif method == "GET" and path == "/openapi.json":
            await self.app(scope, receive, _openapi_patching_send(send))
        else:
            await self.app(scope, receive, send)

    async def _rewrite_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _send_json(
                    send, 413, error_body(f"request body over {MAX_BODY_BYTES} bytes", None, 413)
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            new_raw = raw  # not JSON: vLLM answers with its own 400
        else:
            try:
                rewritten = apply_ead(body, self.defaults)
            except EADRequestError as exc:
                await _send_json(send, 400, error_body(str(exc), exc.param))
                return
            new_raw = raw if rewritten is body else json.dumps(rewritten).encode()

        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(new_raw)).encode()))
        scope = {**scope, "headers": headers}
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": new_raw, "more_body": False}
            return await receive()  # disconnect notifications while streaming

        await self.app(scope, replay, send)


def _openapi_patching_send(send: Send) -> Send:
    start: Message | None = None
    chunks: list[bytes] = []

    async def patched(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        if start["status"] == 200:
            body = json.dumps(add_ead_to_openapi(json.loads(body))).encode()
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return patched
