"""Running the simulator: in a background thread for tests, or as a subprocess for e2e runs and benchmarks.

Both bind their socket before uvicorn starts, so the port is known (port 0 picks a free one without a race)
and the result URLs can name the server's real address from the first request on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from airflow_provider_liangxin.simulator.app import create_app
from airflow_provider_liangxin.simulator.config import DEFAULT_HOST, DEV_API_KEY, SimulatorConfig
from airflow_provider_liangxin.simulator.faults import FaultConfig
from airflow_provider_liangxin.simulator.service import Simulator
from airflow_provider_liangxin.simulator.transport import protocol_class

logger = logging.getLogger("airflow_provider_liangxin.simulator")


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port that was free a moment ago (for subprocesses, which must be told a port up front)."""
    with contextlib.closing(bind_socket(host, 0)) as sock:
        return int(sock.getsockname()[1])


def url_for(host: str, port: int) -> str:
    """The URL clients should use; a wildcard bind is reached through loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def uvicorn_config(app: FastAPI, *, log_level: str = "warning") -> uvicorn.Config:
    """httptools + uvloop when available, no uvicorn access log (the gate writes its own one-liner)."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover
        loop = "asyncio"
    return uvicorn.Config(
        app,
        http=protocol_class(),
        loop=loop,
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=log_level,
        timeout_graceful_shutdown=3,
        server_header=False,
    )


def simulator_of(app: FastAPI) -> Simulator:
    return app.state.simulator  # type: ignore[no-any-return]


class SimulatorServer:
    """uvicorn in a daemon thread on loopback; use as a context manager or call start()/stop()."""

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.host = host
        self.port = port
        self.app = create_app(self.config)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    @property
    def base_url(self) -> str:
        return url_for(self.host, self.port)

    @property
    def api_key(self) -> str:
        return self.config.api_keys[0]

    @property
    def simulator(self) -> Simulator:
        """The in-process state; read it freely, but mutate it only through the admin API (other thread)."""
        return simulator_of(self.app)

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        sock = bind_socket(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        self.simulator.store.base_url = self.config.public_base_url or self.base_url
        self._server = uvicorn.Server(uvicorn_config(self.app))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="liangxin-simulator", daemon=True
        )
        self._thread.start()
        try:
            deadline = time.monotonic() + timeout
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the LiangXin simulator did not start")
                time.sleep(0.01)
            self._client = httpx.Client(base_url=self.base_url, timeout=10.0)
        except BaseException:  # Ctrl-C while starting included: leave no thread or port behind
            self.stop()
            sock.close()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut uvicorn down and wait for its thread; open client connections get ``timeout_graceful_shutdown``.

        Called from ``__exit__``, so Ctrl-C (KeyboardInterrupt) in the ``with`` block stops the server too. A
        signal that ends the whole process ends this daemon thread with it, and the kernel frees the port.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        logger.info("LiangXin simulator on %s stopped", self.base_url)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------- admin API helpers

    def _admin(self, method: str, path: str, json: Any = None) -> Any:
        if self._client is None:
            raise RuntimeError("the simulator is not running")
        response = self._client.request(method, f"/_sim/{path}", json=json)
        response.raise_for_status()
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._admin("GET", "health")  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "stats")  # type: ignore[no-any-return]

    def tasks(self) -> list[dict[str, Any]]:
        return self._admin("GET", "tasks")["tasks"]  # type: ignore[no-any-return]

    def faults(self) -> dict[str, Any]:
        return self._admin("GET", "faults")  # type: ignore[no-any-return]

    def set_faults(self, faults: Mapping[str, Any] | FaultConfig) -> dict[str, Any]:
        payload = faults.to_dict() if isinstance(faults, FaultConfig) else dict(faults)
        return self._admin("POST", "faults", payload)  # type: ignore[no-any-return]

    def reset(self) -> None:
        self._admin("POST", "reset")

    def callbacks(self) -> list[dict[str, Any]]:
        return self._admin("GET", "callbacks")["deliveries"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def run_simulator(
    config: SimulatorConfig | None = None, *, host: str = DEFAULT_HOST, port: int = 0
) -> Iterator[SimulatorServer]:
    """``with run_simulator(SimulatorConfig(durations=(0.1, 0.1, 0.3))) as sim: sim.base_url ...``"""
    server = SimulatorServer(config, host=host, port=port).start()
    try:
        yield server
    finally:
        server.stop()


class SimulatorProcess:
    """``python -m airflow_provider_liangxin.simulator`` as a child process, stopped with SIGTERM.

    Output goes to ``log_path`` so a chatty INFO log can never fill a pipe; without one, a temporary log file is
    used and removed again after a clean stop. The child runs with ``--stop-on-stdin-close`` and this object
    holds its stdin: if the owning process dies in any way (SIGTERM, SIGKILL, a crash) the pipe closes and the
    simulator stops itself, so it never outlives its owner or keeps its port.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        api_key: str = DEV_API_KEY,
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.api_key = api_key
        self.args = [*args]
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="liangxin-sim-", suffix=".log")[1])
        self.env = {**os.environ, **(env or {})}
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return url_for(self.host, self.port)

    def start(self, timeout: float = 20.0) -> SimulatorProcess:
        command = [
            self.python,
            "-m",
            "airflow_provider_liangxin.simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--stop-on-stdin-close",
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        try:
            self._wait_ready(timeout)
        except BaseException:  # not ready, or Ctrl-C while waiting: no child left behind
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the simulator exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/_sim/health", timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not become ready; see {self.log_path}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (0 for a clean stop)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if self._own_log and self.process.returncode == 0:
            self.log_path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
