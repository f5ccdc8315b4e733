"""A tiny real HTTP server whose answers are scripted per test.

Unit tests of the hook's status, body-shape and retry handling need exact, odd answers (HTML bodies, a 429 with
an HTTP-date Retry-After, a dropped connection) that the simulator is not meant to produce on demand. Running
them over a real socket covers the sync (httpx) and async (aiohttp) transports with the same script.

Hostile answers too: a body of tens of megabytes (``filler``), an answer trickled a byte at a time (``trickle``),
and :class:`HoldingServer`, a host that accepts connections and never answers. Every loop they run stops when
the server is closed, so nothing outlives a test.
"""

from __future__ import annotations

import http
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_FILLER_CHUNK = b"x" * 65536


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the socket without answering
    #: Seconds between single bytes of the answer (from the status line on, or from the body on if
    #: ``trickle_headers`` is false): a server that never stalls a read long enough for a per-read timeout.
    trickle: float = 0.0
    trickle_headers: bool = True
    #: This many more body bytes (``b"x"``) after ``body``, written in 64 KiB chunks until the client goes away.
    filler: int = 0
    #: False: no Content-Length; the body ends when the connection closes.
    declare_length: bool = True


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.default = Reply(500, {"code": 500, "msg": "no scripted reply left", "data": None})
        self.requests: list[Seen] = []
        #: Body bytes of each raw (trickled or filler) answer written before the client went away.
        self.sent: list[int] = []
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(Seen(self.command, self.path, dict(self.headers), body))
                reply = server.replies.pop(0) if server.replies else server.default
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                payload = reply.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                payload = payload or b""
                if reply.trickle or reply.filler or not reply.declare_length:
                    self._raw(reply, payload)
                    return
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    self.close_connection = True  # the client gave up waiting (a timeout test): nothing to report

            def _raw(self, reply: Reply, payload: bytes) -> None:
                headers = {"Content-Type": "application/json", **reply.headers}
                if reply.declare_length:
                    headers["Content-Length"] = str(len(payload) + reply.filler)
                else:
                    headers["Connection"] = "close"
                lines = [f"HTTP/1.1 {reply.status} {http.HTTPStatus(reply.status).phrase}"]
                lines += [f"{name}: {value}" for name, value in headers.items()]
                head = ("\r\n".join(lines) + "\r\n\r\n").encode()
                self.close_connection = True
                sent = 0
                try:
                    if reply.trickle:
                        slow = head + payload if reply.trickle_headers else payload
                        if not reply.trickle_headers:
                            self.wfile.write(head)
                        for byte in slow:
                            if server.stopping.wait(reply.trickle):
                                return
                            self.wfile.write(bytes([byte]))
                            sent += 1
                        return
                    self.wfile.write(head + payload)
                    left = reply.filler
                    while left > 0 and not server.stopping.is_set():
                        chunk = _FILLER_CHUNK[: min(left, len(_FILLER_CHUNK))]
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        left -= len(chunk)
                except OSError:
                    pass  # the client went away: what a cap or a deadline is for
                finally:
                    server.sent.append(sent)

            do_GET = do_POST = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class HoldingServer:
    """A host that accepts TCP connections and never answers (a hung or blackholed API), until closed."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self._listener.settimeout(0.05)
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def __enter__(self) -> HoldingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.held:
            conn.close()
        self._listener.close()


def ok(data: Any) -> Reply:
    return Reply(200, {"code": 200, "msg": "success", "data": data})


def record(task_id: str = "task_seedream-v4-5_1", state: str = "generating", **extra: Any) -> dict[str, Any]:
    data = {
        "taskId": task_id,
        "model": "seedream-v4-5",
        "state": state,
        "param": json.dumps({"model": "seedream-v4-5", "input": {"prompt": "a cat"}}),
        "resultJson": "",
        "failCode": "",
        "failMsg": "",
        "createTime": 1777600000000,
        "updateTime": 1777600001000,
        "completeTime": None,
    }
    if state == "success":
        data["resultJson"] = json.dumps({"resultUrls": ["https://cdn.example/a.png"]})
        data["completeTime"] = 1777600012000
    data.update(extra)
    return data
