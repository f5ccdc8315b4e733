"""A tiny real HTTP server whose answers are scripted per test.

Unit tests of the hook's status, body-shape and retry handling need exact, odd answers (HTML bodies, a 429 with
an HTTP-date Retry-After, a dropped connection) that the simulator is not meant to produce on demand. Running
them over a real socket covers the sync (httpx) and async (aiohttp) transports with the same script.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the socket without answering


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
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

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
        self._httpd.shutdown()
        self._httpd.server_close()


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
