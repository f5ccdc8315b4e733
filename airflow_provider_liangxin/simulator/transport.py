"""Dropping a connection without any response, which ASGI itself cannot express.

An ASGI app that raises or returns early still gets an answer from uvicorn (a 500), and one that starts a
response and stops gives the client a status line. To emulate a load balancer that resets a connection, the
simulator runs uvicorn with a protocol subclass that puts the connection's asyncio transport into the scope
(key :data:`TRANSPORT_KEY`). Dropping is then ``transport.abort()`` followed by waiting for uvicorn's own
``http.disconnect``: uvicorn marks the cycle disconnected and sends nothing, and the client sees a reset
(httpx: ``RemoteProtocolError``/``ReadError``, aiohttp: ``ServerDisconnectedError``).

Under another server (or TestClient) there is no transport in the scope; the fallback starts a response that
promises one body byte and then raises, so the server closes the connection mid-response: a transport error
for the client too, though after a status line.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

TRANSPORT_KEY = "liangxin.transport"

Scope = dict[str, Any]


class ConnectionDropped(Exception):
    """Raised by the fallback drop so the server closes a half-sent response."""


def protocol_class() -> type[asyncio.Protocol]:
    """uvicorn's fastest available HTTP protocol, extended to expose the transport to the app."""
    base: type[Any]
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - httptools ships with uvicorn[standard]
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class DroppableProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            app: Any = self.app  # type: ignore[has-type]

            async def with_transport(scope: Scope, receive: Any, send: Any) -> None:
                scope[TRANSPORT_KEY] = transport
                await app(scope, receive, send)

            self.app = with_transport

    return DroppableProtocol


async def drop_connection(scope: Scope, receive: Any, send: Any) -> None:
    """Close the client's connection without sending a byte (see the module docstring)."""
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
        raise ConnectionDropped("simulated connection drop")
    transport.abort()
    # Wait for uvicorn to notice (connection_lost runs on the next loop turn); until then it would still
    # answer 500 for an app that returns without a response.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            while (await receive())["type"] != "http.disconnect":
                pass
