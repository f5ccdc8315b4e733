"""The ASGI gate in front of every route: auth, body limit, admin loopback rule, drops, stats and the log line.

Written as plain ASGI rather than ``BaseHTTPMiddleware`` because it sits on the hot recordInfo path, where
Starlette's wrapper would cost more than the handler. It also owns the raw ``send``, which is what a
connection drop needs (see :mod:`transport`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_liangxin.simulator.shapes import BODY_TOO_LARGE, INVALID_TOKEN, LOOPBACK_ONLY
from airflow_provider_liangxin.simulator.stats import route_key
from airflow_provider_liangxin.simulator.transport import drop_connection

if TYPE_CHECKING:
    from airflow_provider_liangxin.simulator.service import Simulator

logger = logging.getLogger("airflow_provider_liangxin.simulator.access")

#: Scope keys the routes set for the gate.
TASK_ID_KEY = "liangxin.task_id"
DROP_KEY = "liangxin.drop"

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_LOOPBACK = ("127.", "::1", "localhost")


class SimulatorGate:
    def __init__(self, app: ASGIApp, simulator: Simulator) -> None:
        self.app = app
        self.simulator = simulator

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        status: int | str = 0
        dropped = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, dropped
            if dropped:
                return
            if message["type"] == "http.response.start":
                if scope.get(DROP_KEY):
                    dropped, status = True, "dropped"
                    await drop_connection(scope, receive, send)
                    return
                status = message["status"]
            await send(message)

        try:
            if path.startswith("/api/"):
                if not self._authorized(scope):
                    status = 401
                    await _send_json(send, 401, INVALID_TOKEN)
                    return
                if method == "POST":
                    body = await _read_body(scope, receive, self.simulator.config.max_body_bytes)
                    if body is None:
                        status = 413
                        await _send_json(send, 413, BODY_TOO_LARGE)
                        return
                    receive = _replay(body, receive)
            elif path.startswith("/_sim/") and not _is_loopback(scope):
                status = 403
                await _send_json(send, 403, LOOPBACK_ONLY)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            self.simulator.stats.count(route_key(method, path), status or "no response")
            if logger.isEnabledFor(logging.INFO):
                # One line per request; the Authorization header is never read into it.
                logger.info(
                    "%s %s %s task=%s %.1fms",
                    method,
                    path,
                    status or "-",
                    scope.get(TASK_ID_KEY) or "-",
                    (time.perf_counter() - started) * 1000,
                )

    def _authorized(self, scope: dict[str, Any]) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and token.strip() in self.simulator.api_keys
        return False


def _is_loopback(scope: dict[str, Any]) -> bool:
    client = scope.get("client")
    return client is None or str(client[0]).startswith(_LOOPBACK)


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(scope: dict[str, Any], receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it exceeds ``limit`` (a declared length is trusted up front)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                if int(value) > limit:
                    return None
            except ValueError:
                pass
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the already-read body to the app once, then fall through to the real channel (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
