"""Fixtures for the simulator's contract tests: one real server per session, reset before each test.

Everything goes over real HTTP on loopback, so these tests pin the bytes a provider will actually see.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from airflow_provider_liangxin._api import CREATE_TASK_PATH, RECORD_INFO_PATH
from airflow_provider_liangxin.simulator import SimulatorConfig, SimulatorServer, run_simulator

FAST_DURATIONS = (0.05, 0.05, 0.2)


@pytest.fixture(scope="session")
def sim() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(durations=FAST_DURATIONS, allow_insecure_callbacks=True, callback_backoff=0.05)
    with run_simulator(config) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_simulator(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").reset()


@pytest.fixture
def client(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=10.0) as http:
        yield http


def create(client: httpx.Client, prompt: str = "a red fox", model: str = "seedream-v4-5", **extra: Any) -> str:
    """Create a task that must be accepted; returns its id."""
    callback = extra.pop("callBackUrl", None)
    body: dict[str, Any] = {"model": model, "input": {"prompt": prompt, **extra}}
    if callback:
        body["callBackUrl"] = callback
    response = client.post(CREATE_TASK_PATH, json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]["taskId"]


def record(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(RECORD_INFO_PATH, params={"taskId": task_id})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_for_state(client: httpx.Client, task_id: str, *states: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = record(client, task_id)
        if data["state"] in states:
            return data
        assert time.monotonic() < deadline, f"{task_id} stuck in {data['state']}"
        time.sleep(0.02)


class CallbackReceiver:
    """A tiny http.server on loopback. Paths choose the behaviour:

    ``/ok`` answers 200; ``/flaky/N`` answers 500 to the first N posts for a task, then 200; ``/down`` always 500.
    """

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    receiver.received.append({"path": self.path, "body": body, "time": time.time()})
                    seen = sum(
                        1
                        for r in receiver.received
                        if r["path"] == self.path and r["body"]["data"]["taskId"] == body["data"]["taskId"]
                    )
                failing = self.path == "/down" or (
                    self.path.startswith("/flaky/") and seen <= int(self.path.rsplit("/", 1)[1])
                )
                status = 500 if failing else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"] for r in self.received if r["path"] == path]


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as server:
        yield server


def wait_until(condition: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)
