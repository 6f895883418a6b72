"""ASGI middleware that refuses request bodies over a size limit with 413, before the app runs.

Example:
    >>> from fastapi import FastAPI
    >>> app = FastAPI()
    >>> app.add_middleware(BodyLimit, max_bytes=1_000_000)
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_DRAIN_LIMIT = 8 * 1024 * 1024  # read (and drop) at most this much of a too-large body before answering


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``max_bytes`` with 413.

    The declared ``Content-Length`` is checked first; the body is then read (chunked or
    not) and counted, and the app only runs once the whole body is in and within limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer and size-check the body, then run the app on it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _reply(send, 400, {"detail": "invalid Content-Length"})
                return
            if int(declared) > self.max_bytes:
                if headers.get(b"expect", b"").lower() != b"100-continue":
                    await _drain(receive)
                await _reply(send, 413, self._too_large())
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await _drain(receive)
                await _reply(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> dict[str, Any]:
        return {"detail": f"request body too large (limit {self.max_bytes} bytes)"}


async def _drain(receive: Receive) -> None:
    """Read and drop the rest of a refused body, so the client gets to read our answer."""
    seen = 0
    while seen < _DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _reply(send: Send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
