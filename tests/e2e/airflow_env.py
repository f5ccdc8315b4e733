"""A real, throw-away Airflow 3 (and LiangXin simulator) on loopback, for the e2e tests and the demo.

``AirflowEnv`` runs the four Airflow components as separate processes (api-server, scheduler, dag-processor,
triggerer) with their own temporary ``AIRFLOW_HOME``, SQLite and LocalExecutor — the same shape as
``airflow standalone`` but with one log file per component, loopback-only sockets (no serve-logs servers on
0.0.0.0) and a process group per component so ``stop()`` also ends LocalExecutor workers and task processes.
With ``executor="celery"`` (or ``LIANGXIN_E2E_EXECUTOR=celery``, as ``./run celery`` sets) it runs the
CeleryExecutor instead: a loopback Redis server and separate ``airflow celery worker`` components.

``Simulator`` runs ``python -m airflow_provider_liangxin.simulator`` on a free loopback port (the simulator's own
``SimulatorProcess``) and adds the stats and record look-ups the tests need.

Nothing started here may outlive its owner, however the owner stops (``stop()``, an exception, Ctrl-C, SIGTERM from
a CI timeout or ``timeout``, SIGHUP from a closed terminal): every process is tracked as a tree (``ProcessTree``:
children found with psutil, and everything left in the component's own session), ended with SIGTERM and, after a
short grace, SIGKILL; ``install_signal_handlers()`` turns SIGTERM/SIGHUP into the same unwinding as Ctrl-C; temp
folders the harness created are removed; and each stop reports itself in one line (``StopReport.line()``).
Whatever is still running at interpreter exit is stopped by an ``atexit`` hook.

Demo (prints the path of a generated image)::

    python -m tests.e2e.airflow_env demo [--output-dir DIR] [--prompt TEXT]

With ``LIANGXIN_BASE_URL`` and ``LIANGXIN_API_KEY`` set, the demo talks to that server instead of starting the
simulator.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import psutil

from airflow_provider_liangxin._api import RECORD_INFO_PATH
from airflow_provider_liangxin.simulator import SimulatorProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO_ROOT / "dags"
E2E_DAGS = Path(__file__).resolve().parent / "dags"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SQLITE_SETTINGS_MODULE = "liangxin_harness_sqlite"
#: The executor a stack runs on unless its test asks for one: ``local`` (LocalExecutor) or ``celery``
#: (CeleryExecutor: a Redis broker and ``airflow celery worker`` processes, see ``AirflowEnv``); ``./run celery``
#: sets it to run the e2e suite on Celery workers.
EXECUTOR_ENV = "LIANGXIN_E2E_EXECUTOR"
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}


def e2e_executor() -> str:
    """The executor named by ``LIANGXIN_E2E_EXECUTOR`` (``local`` when unset)."""
    name = os.environ.get(EXECUTOR_ENV, "").strip().lower() or "local"
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {', '.join(EXECUTORS)}")
    return name


def redis_server_binary() -> str:
    """Debian's ``redis-server`` (``./run celery`` installs the package when it is missing)."""
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("the CeleryExecutor stack needs redis-server: run ./run celery (it installs it)")
    return found


def redis_ping(port: int, timeout: float = 2.0) -> bool:
    """Whether a Redis server answers PING on loopback ``port`` (raw RESP: no client library needed here)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str:
    """The executable next to the running interpreter (the venv's), falling back to PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


# ---------------------------------------------------------------------------------------------- lifecycle

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL; Airflow's triggerer does not end on SIGTERM alone


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's ``KeyboardInterrupt`` so every ``finally`` and context manager on
    the way out stops what it started (Python's default for both is to die on the spot, orphaning every child)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C (only the main thread can install handlers)."""
    if _in_main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _raise_interrupted)


def interrupt_signal(exc: BaseException) -> signal.Signals:
    """The signal behind a ``KeyboardInterrupt`` (SIGINT unless it is an ``Interrupted``)."""
    return signal.Signals(getattr(exc, "signum", signal.SIGINT))


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block is done, then deliver them to the handlers that were in place.

    Used while a process is spawned and registered (an interruption in between would orphan it) and while
    everything is stopped (a second Ctrl-C must not abandon the cleanup half-way). Python-level only: blocking the
    signals in the kernel instead would be inherited by the children spawned inside the block.
    """
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def hold(signum: int, _frame: FrameType | None) -> None:
        if signum not in pending:
            pending.append(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for held in pending:
            signal.raise_signal(held)


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie holds no port or file; its parent, or init, reaps it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for ``procs`` to end; returns those still alive."""
    left = [p for p in procs if _alive(p)]
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


class ProcessTree:
    """Processes this harness started, and everything they started in turn.

    A root spawned with ``start_new_session=True`` owns a session: whatever stays in it (LocalExecutor workers,
    task runners, the triggerer's runner) is found again even after its parent died and it was re-parented to init,
    which psutil's ``children()`` alone would miss.
    """

    def __init__(self) -> None:
        self.roots: list[subprocess.Popen[bytes]] = []
        self._sessions: set[int] = set()

    def add(self, proc: subprocess.Popen[bytes], *, own_session: bool) -> None:
        self.roots.append(proc)
        if own_session:
            self._sessions.add(proc.pid)  # a session leader's session id is its pid

    def members(self) -> dict[int, psutil.Process]:
        """Every live process of the tree, by pid."""
        found: dict[int, psutil.Process] = {}
        for root in self.roots:
            if root.returncode is not None:  # reaped: its pid may belong to someone else by now
                continue
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(root.pid)
                found[proc.pid] = proc
                found.update((child.pid, child) for child in proc.children(recursive=True))
        if self._sessions:
            for proc in psutil.process_iter():
                with contextlib.suppress(psutil.Error, OSError):
                    if proc.pid not in found and os.getsid(proc.pid) in self._sessions:
                        found[proc.pid] = proc
        return {pid: proc for pid, proc in found.items() if _alive(proc)}

    def stop(self, grace: float = STOP_GRACE) -> tuple[int, int, list[int]]:
        """SIGTERM the whole tree, SIGKILL what is left after ``grace``; returns (ended, killed, survivor pids)."""
        first = self.members()
        for proc in first.values():
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        left = _wait_gone(first.values(), grace)
        # Anything forked while the tree was shutting down is killed with the stragglers.
        late = [proc for pid, proc in self.members().items() if pid not in first]
        to_kill = [*left, *late]
        for proc in to_kill:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        survivors = _wait_gone(to_kill, 5.0)
        for root in self.roots:  # reap our own children (no zombies left behind)
            with contextlib.suppress(subprocess.TimeoutExpired):
                root.wait(timeout=1)
        self.roots.clear()
        self._sessions.clear()
        return len(first) + len(late), len(to_kill), [proc.pid for proc in survivors]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (``SO_REUSEADDR``, as servers do: TIME_WAIT is no owner)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _wait_ports_free(ports: Iterable[int], timeout: float = 3.0) -> tuple[list[int], list[int]]:
    ports = sorted(set(ports))
    deadline = time.monotonic() + timeout
    busy = [p for p in ports if not port_is_free(p)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.05)
        busy = [p for p in busy if not port_is_free(p)]
    return [p for p in ports if p not in busy], busy


@dataclasses.dataclass
class StopReport:
    """What one stop (or several, merged) ended and freed; ``line()`` is the one-line summary users see."""

    processes: int = 0
    killed: int = 0
    survivors: list[int] = dataclasses.field(default_factory=list)
    ports_freed: list[int] = dataclasses.field(default_factory=list)
    ports_busy: list[int] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.survivors and not self.ports_busy

    def merge(self, other: StopReport) -> StopReport:
        return StopReport(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(StopReport))  # type: ignore[arg-type]
        )

    def line(self) -> str:
        ended = f"{self.processes} process{'es' if self.processes != 1 else ''} ended"
        parts = [ended + (f" ({self.killed} needed SIGKILL)" if self.killed else "")]
        if self.ports_freed:
            parts.append(
                f"port{'s' if len(self.ports_freed) > 1 else ''} {', '.join(map(str, self.ports_freed))} freed"
            )
        if self.removed:
            parts.append(f"{', '.join(self.removed)} removed")
        if self.kept:
            parts.append(f"kept for inspection: {', '.join(self.kept)}")
        if self.survivors:
            parts.append(f"STILL RUNNING: pids {', '.join(map(str, self.survivors))}")
        if self.ports_busy:
            parts.append(f"STILL IN USE: ports {', '.join(map(str, self.ports_busy))}")
        return "stopped: " + ", ".join(parts)


#: Every stop's report, in order: the demo and tests/conftest.py summarise the ones of their own run.
STOP_REPORTS: list[StopReport] = []


class _Stoppable(Protocol):
    def stop(self) -> Any: ...


_LIVE: dict[int, _Stoppable] = {}


def _register(obj: _Stoppable) -> None:
    _LIVE[id(obj)] = obj


def _unregister(obj: _Stoppable) -> None:
    _LIVE.pop(id(obj), None)


def stop_everything() -> StopReport:
    """Stop whatever is still running (newest first); the ``atexit`` safety net, also usable by a test session."""
    before = len(STOP_REPORTS)
    for obj in reversed(list(_LIVE.values())):
        with contextlib.suppress(Exception):
            obj.stop()
    report = StopReport()
    for item in STOP_REPORTS[before:]:
        report = report.merge(item)
    return report


def _stop_at_exit() -> None:
    if _LIVE:
        report = stop_everything()
        with contextlib.suppress(OSError, ValueError):
            print(f"liangxin harness at exit: {report.line()}", file=sys.stderr, flush=True)


atexit.register(_stop_at_exit)


class Progress:
    """Timestamped progress lines on stderr, so a 30-60 s start is not 30-60 s of silence.

    Writing must never fail the caller: after SIGHUP the terminal may be gone (EIO) or the pipe closed.
    """

    def __init__(self, stream: Any = None) -> None:
        self.started = time.monotonic()
        self.stream = stream

    def __call__(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(f"[{time.monotonic() - self.started:5.1f}s] {message}", file=self.stream or sys.stderr, flush=True)


def _quiet(_message: str) -> None:
    """The default progress sink: the tests read results through the API, not from progress lines."""


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


class Simulator(SimulatorProcess):
    """The simulator's own subprocess runner plus the admin and record look-ups the e2e tests need."""

    def __init__(
        self,
        *,
        durations: str = "0.5,0.5,1.5",
        faults: Mapping[str, Any] | None = None,
        log_dir: Path | None = None,
        extra_args: Iterable[str] = (),
        api_key: str | None = None,
    ):
        args = ["--durations", durations, "--log-level", "warning", *extra_args]
        if faults:
            args += ["--faults", json.dumps(faults)]
        if api_key:  # a key of the caller's: the simulator then prints none (the dev key it prints is public)
            args += ["--api-key", api_key]
        # A folder of our own is removed by stop(); a caller's ``log_dir`` is the caller's to keep.
        self.own_log_dir = None if log_dir else Path(tempfile.mkdtemp(prefix="liangxin-sim-"))
        log_path = Path(log_dir or self.own_log_dir) / "simulator.log"  # type: ignore[arg-type]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(args, log_path=log_path, **({"api_key": api_key} if api_key else {}))
        self.stop_report: StopReport | None = None
        self._starting = False
        #: Restarts done by ``restart()``.
        self.restarts = 0

    def start(self, timeout: float = 20.0) -> Simulator:
        with deferred_signals():
            _register(self)
        self._starting = True  # a failed start stops the process (SimulatorProcess.start) but keeps the log...
        try:
            super().start(timeout)
        except RuntimeError as exc:
            log = tail(self.log_path, 20)
            self.stop()
            raise RuntimeError(f"{exc}\n{log}") from exc  # ...until its tail is in the error
        except BaseException:
            self.stop()
            raise
        finally:
            self._starting = False
            if self.stop_report is not None:
                self._remove_own_log_dir()
        return self

    def _remove_own_log_dir(self) -> None:
        if self.own_log_dir is not None and self.own_log_dir.exists():
            shutil.rmtree(self.own_log_dir, ignore_errors=True)
            STOP_REPORTS.append(StopReport(removed=[str(self.own_log_dir)]))

    def stop(self, timeout: float = STOP_GRACE) -> int | None:
        """The simulator's process tree ended (SIGTERM, SIGKILL after ``timeout``), its port checked free and
        its own log folder removed; the one-line summary is in ``stop_report``."""
        if self.stop_report is not None and (self.process is None or self.process.returncode is not None):
            return None if self.process is None else self.process.returncode  # stopped already
        with deferred_signals():
            tree = ProcessTree()
            if self.process is not None:
                tree.add(self.process, own_session=False)
            ended, killed, survivors = tree.stop(grace=timeout)
            code = super().stop(timeout)
            freed, busy = _wait_ports_free([self.port]) if self.process is not None else ([], [])
            self.stop_report = StopReport(ended, killed, survivors, freed, busy)
            STOP_REPORTS.append(self.stop_report)
            _unregister(self)
            if not self._starting:
                self._remove_own_log_dir()
            return code

    def restart(self, down: float = 0.0, timeout: float = 20.0) -> None:
        """Stop the simulator (SIGTERM: in-flight answers finish, the counters are saved with ``--db``), stay down
        ``down`` seconds (clients meet refused connections), and start it again on the same port and arguments."""
        with deferred_signals():
            SimulatorProcess.stop(self)
        time.sleep(down)
        self.restarts += 1
        try:
            SimulatorProcess.start(self, timeout)
        except BaseException:
            self.stop()
            raise

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/_sim/stats", timeout=10)
        response.raise_for_status()
        return response.json()

    def tasks(self) -> list[dict[str, Any]]:
        """Every LiangXin task with its prompt, state and decided outcome (``GET /_sim/tasks``: no recordInfo call,
        so no fault dice and no poll counted)."""
        response = httpx.get(f"{self.base_url}/_sim/tasks", timeout=30)
        response.raise_for_status()
        return response.json()["tasks"]

    def callbacks(self) -> list[dict[str, Any]]:
        """The simulator's callback delivery log (``taskId``, ``url``, ``attempt``, ``status``, ``ok``, ...)."""
        response = httpx.get(f"{self.base_url}/_sim/callbacks", timeout=10)
        response.raise_for_status()
        return response.json()["deliveries"]

    def record(self, task_id: str) -> dict[str, Any]:
        """The ``recordInfo`` data of one task, as the provider sees it (``param`` decoded); the simulator counts
        it in ``recordinfo_per_task`` like any other."""
        response = httpx.get(
            f"{self.base_url}{RECORD_INFO_PATH}",
            params={"taskId": task_id},
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )
        response.raise_for_status()
        data = response.json()["data"]
        if isinstance(data.get("param"), str):  # LiangXin sends the original request as a JSON string
            data["param"] = json.loads(data["param"])
        return data

    def connection_json(self) -> str:
        return json.dumps({"conn_type": "liangxin", "host": self.base_url, "password": self.api_key})


class _AllAdminsToken(httpx.Auth):
    """The REST client's credentials. With ``simple_auth_manager_all_admins`` Airflow 3.0 and 3.2+ let anonymous
    requests in; 3.1 answers 401 and hands out an admin token at ``GET /auth/token`` instead (./run compat). The
    token is fetched on the first 401, so other versions never ask for one."""

    requires_response_body = True

    def __init__(self, base_url: str) -> None:
        self.token_url = f"{base_url}/auth/token"
        self.token: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code == 401:
            answer = yield httpx.Request("GET", self.token_url)
            if answer.status_code < 300:
                self.token = answer.json()["access_token"]
                request.headers["Authorization"] = f"Bearer {self.token}"
                yield request


class AirflowEnv:
    """One real Airflow 3 deployment in a temporary ``AIRFLOW_HOME``; see the module docstring."""

    def __init__(
        self,
        *,
        dag_folders: Mapping[str, Path] | None = None,
        env: Mapping[str, str] | None = None,
        home: Path | None = None,
        progress: Callable[[str], None] | None = None,
        callbacks: bool = False,
        users: Mapping[str, str] | None = None,
        triggerers: int = 1,
        executor: str | None = None,
        celery_workers: int = 2,
        celery_concurrency: int = 8,
    ) -> None:
        """``executor``: ``local`` or ``celery`` (default: ``LIANGXIN_E2E_EXECUTOR``, else ``local``). With
        ``celery`` the env also runs a Redis server (broker and result backend; no persistence, its folder in the
        home) and ``celery_workers`` separate ``airflow celery worker`` components (``celery-worker-1``, ...) of
        ``celery_concurrency`` pool processes each (2 x 8: the 16 task slots ``[core] parallelism`` gives the
        LocalExecutor), without serve-logs."""
        if triggerers < 1:
            raise ValueError(f"triggerers must be >= 1, got {triggerers}")
        #: Triggerer components: ``triggerer``, then ``triggerer-2``, ... (each its own process and log file).
        self.triggerers = ["triggerer", *(f"triggerer-{i}" for i in range(2, triggerers + 1))]
        #: Each component's ``airflow`` arguments, so ``start_component`` can start it again after a stop or kill.
        self.component_args: dict[str, list[str]] = {}
        #: Without ``home`` the env makes a temp folder of its own, and stop() removes it.
        self.owns_home = home is None
        self.home = Path(home or tempfile.mkdtemp(prefix="liangxin-airflow-"))
        self.dag_folders = dict(dag_folders or {"dags-folder": EXAMPLE_DAGS})
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.component_logs = self.home / "component-logs"
        self.log_folder = self.home / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        #: The LiangXin callback receiver mounted in the api-server, LiangXin told to call back its loopback URL.
        self.callbacks = callbacks
        #: With ``users`` ({name: SimpleAuthManager role}) logins are real: no all-admins mode, each user gets a
        #: random password (``passwords``), and the REST client logs in as ``admin`` (always among them).
        self.users = {"admin": "admin", **users} if users is not None else None
        self.passwords = {name: secrets.token_urlsafe(12) for name in self.users or {}}
        self.executor = executor or e2e_executor()
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor={self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        self.celery_workers = [f"celery-worker-{n}" for n in range(1, celery_workers + 1)] if self.celery else []
        self.celery_concurrency = celery_concurrency
        self.redis_port = free_port() if self.celery else None
        self.env = self._environment(env or {})
        self.timings: dict[str, float] = {}
        self.progress = progress or _quiet
        self.stop_report: StopReport | None = None
        self._tree = ProcessTree()
        self._client = httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            timeout=30,
            auth=_AdminToken(self) if self.users else _AllAdminsToken(self.base_url),
        )

    # ---------------------------------------------------------------- setup
    def _environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
        bundles = [
            {
                "name": name,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(path), "refresh_interval": 5},
            }
            for name, path in self.dag_folders.items()
        ]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(next(iter(self.dag_folders.values()))),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__PARALLELISM": "16",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                # Airflow 3.0 answers the REST xcomEntries ``deserialize=true`` the tests use only with this on (3.1
                # dropped the option and always allows it): ./run compat.
                "AIRFLOW__API__ENABLE_XCOM_DESERIALIZE_SUPPORT": "True",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_folder),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # Only manual runs: a @daily DAG must not start a scheduled run of its own when unpaused.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                # The task supervisor notices its task process exited only at its next wake-up (default 5 s). A
                # deferred task's "success" exit event then reaches the scheduler late, and if the resumed attempt
                # is already running the scheduler fails it as "state changed externally" (Airflow bug
                # apache/airflow#72716, 3.3.x). Waking every second keeps that window short.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        if self.celery:
            redis = f"redis://127.0.0.1:{self.redis_port}"
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__CELERY__BROKER_URL": f"{redis}/0",
                    # Results in Redis too: a db+sqlite backend would add writers to the one SQLite file.
                    "AIRFLOW__CELERY__RESULT_BACKEND": f"{redis}/1",
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.celery_concurrency),
                    # The provider's default (1 day), said explicitly: without it every worker logs a warning.
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
                }
            )
        # SQLite's lock wait is 5 s by default; on a loaded 2-core machine a component waiting longer dies with
        # "database is locked" (seen: the triggerer and dag-processor under 1,000 mapped tasks). 60 s, through a
        # module in $AIRFLOW_HOME/config, which Airflow puts on sys.path before it connects (written by start()).
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = f"{SQLITE_SETTINGS_MODULE}.CONNECT_ARGS"
        if self.users:
            passwords_file = self.home / "simple_auth_manager_passwords.json"
            self.home.mkdir(parents=True, exist_ok=True)
            passwords_file.write_text(json.dumps(self.passwords))
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "False"
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = ",".join(f"{u}:{r}" for u, r in self.users.items())
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords_file)
        if self.callbacks:
            env["AIRFLOW__LIANGXIN__CALLBACK_RECEIVER_ENABLED"] = "True"
            env["AIRFLOW__LIANGXIN__CALLBACK_BASE_URL"] = self.base_url
        env.update(extra)
        return env

    def session_members(self, proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
        members = []
        for candidate in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(candidate.pid) == proc.pid:
                    members.append(candidate)
        return members

    def stop_component(self, name: str, grace: float = STOP_GRACE, *, leader_first: float = 0.0) -> None:
        """End one component's whole session (e.g. every triggerer process) while the rest keeps running.

        ``leader_first`` > 0: SIGTERM only the component's own process first and give it that many seconds to shut
        down its own way, as a deployment's rolling restart does (the scheduler's LocalExecutor lets the tasks it
        runs finish: a deferring task defers, nothing is killed half-way); then the rest of the session is ended.
        """
        proc = self.procs.pop(name)
        with deferred_signals():
            if leader_first > 0:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=leader_first)
            members = self.session_members(proc)
            for member in members:
                with contextlib.suppress(psutil.Error):
                    member.terminate()
            for member in _wait_gone(members, grace):
                with contextlib.suppress(psutil.Error):
                    member.kill()
            _wait_gone(members, 5.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)

    def start_component(self, name: str) -> None:
        """Start a component again (after ``stop_component`` or ``kill_component``) with its original arguments."""
        if name in self.procs:
            raise RuntimeError(f"airflow {name} is still running")
        self._spawn(name, self.component_args[name])

    def restart_component(self, name: str, *, leader_first: float = 0.0) -> None:
        self.stop_component(name, leader_first=leader_first)
        self.start_component(name)

    def alive_triggerer_jobs(self) -> list[dict[str, Any]]:
        """The triggerer jobs Airflow counts as alive (heartbeat within ``triggerer_health_check_threshold``)."""
        return self.get("/jobs", params={"job_type": "TriggererJob", "is_alive": True, "limit": 100})["jobs"]

    def _popen(self, name: str, args: list[str], *, program: str | None = None) -> subprocess.Popen[bytes]:
        """``airflow <args>`` (or ``program <args>``) in a session of its own, logging to
        ``component-logs/<name>.log``, tracked before any signal can interrupt (see ``deferred_signals``)."""
        self.component_logs.mkdir(parents=True, exist_ok=True)
        with (self.component_logs / f"{name}.log").open("ab") as log, deferred_signals():
            proc = subprocess.Popen(
                [program or _bin("airflow"), *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                start_new_session=True,  # own session: stop() finds its workers and task processes again
            )
            self._tree.add(proc, own_session=True)
            _register(self)
        return proc

    def _spawn(self, name: str, args: list[str], *, program: str | None = None) -> None:
        self.component_args[name] = args
        self.procs[name] = self._popen(name, args, program=program)

    def start(self) -> AirflowEnv:
        t0 = time.monotonic()
        self._started_at = t0
        self.home.mkdir(parents=True, exist_ok=True)
        self.component_logs.mkdir(parents=True, exist_ok=True)
        (self.home / "config").mkdir(exist_ok=True)
        (self.home / "config" / f"{SQLITE_SETTINGS_MODULE}.py").write_text("CONNECT_ARGS = {'timeout': 60}\n")
        _register(self)
        self.progress(f"preparing the Airflow metadata DB (airflow db migrate) in {self.home}")
        migrate = self._popen("db-migrate", ["db", "migrate"])
        try:
            code = migrate.wait(timeout=240)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"airflow db migrate took over 240 s\n{tail(self.component_logs / 'db-migrate.log')}"
            ) from None
        if code != 0:
            raise RuntimeError(f"airflow db migrate exited with {code}\n{tail(self.component_logs / 'db-migrate.log')}")
        self.timings["db_migrate"] = time.monotonic() - t0
        if self.celery:
            self._start_redis()
        extra = f" x{len(self.triggerers)}" if len(self.triggerers) > 1 else ""
        self.progress(f"starting Airflow: {', '.join(COMPONENTS)}{extra} ({EXECUTORS[self.executor]}, SQLite)")
        self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"])
        self._spawn("scheduler", ["scheduler", "--skip-serve-logs"])
        self._spawn("dag-processor", ["dag-processor"])
        for name in self.triggerers:
            self._spawn(name, ["triggerer", "--skip-serve-logs"])
        for name in self.celery_workers:
            self._spawn_celery_worker(name)
        self.progress(f"waiting for the api-server on {self.base_url}")
        return self

    # ---------------------------------------------------------------- CeleryExecutor
    @property
    def celery(self) -> bool:
        return self.executor == "celery"

    def _start_redis(self, timeout: float = 30.0) -> None:
        """The broker: ``redis-server`` on loopback, no RDB/AOF persistence, working folder ``<home>/redis``."""
        assert self.redis_port is not None
        folder = self.home / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self.progress(f"starting Redis on redis://127.0.0.1:{self.redis_port} (the CeleryExecutor's broker)")
        args = ["--port", str(self.redis_port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(folder), "--daemonize", "no", "--databases", "4"]
        self._spawn("redis", args, program=redis_server_binary())
        deadline = time.monotonic() + timeout
        while not redis_ping(self.redis_port):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis not answering after {timeout}s\n{tail(self.component_logs / 'redis.log')}")
            time.sleep(0.1)

    def _spawn_celery_worker(self, name: str) -> None:
        """One ``airflow celery worker`` (its own session and log), named ``<name>@<host>`` so several can share
        the machine; no serve-logs server (it would listen on 0.0.0.0), no mingle/gossip chatter."""
        args = ["celery", "worker", "--skip-serve-logs", "--concurrency", str(self.celery_concurrency)]
        args += ["--celery-hostname", f"{name}@%h", "--without-mingle", "--without-gossip"]
        self._spawn(name, args)

    def celery_workers_ready(self) -> list[str]:
        """The workers whose log says Celery's ``<name>@<host> ready.``"""
        ready = []
        for name in self.celery_workers:
            with contextlib.suppress(OSError):
                if f"{name}@" in (text := (self.component_logs / f"{name}.log").read_text(errors="replace")) and (
                    " ready." in text
                ):
                    ready.append(name)
        return ready

    def component_of(self, pid: int) -> str | None:
        """The component (``procs`` key) whose session ``pid`` runs in."""
        with contextlib.suppress(OSError):
            sid = os.getsid(pid)
            return next((name for name, proc in self.procs.items() if proc.pid == sid), None)
        return None

    def kill_component(self, name: str) -> list[int]:
        """SIGKILL one component's whole session at once (a crashed machine, ``kill -9``: no cleanup, no goodbye to
        the broker or the api-server); returns the pids killed. The rest of the deployment keeps running."""
        proc = self.procs.pop(name)
        with deferred_signals():
            members = self.session_members(proc)
            for member in members:
                with contextlib.suppress(psutil.Error):
                    member.kill()
            _wait_gone(members, 10.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        return [member.pid for member in members]

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {proc.returncode}:\n{tail(self.component_logs / f'{name}.log')}"
                )

    def wait_ready(self, dag_ids: Iterable[str] = (), timeout: float = 180) -> None:
        """Wait for a healthy api-server, scheduler, triggerer and dag-processor, and for ``dag_ids`` to be parsed."""
        deadline = time.monotonic() + timeout
        wanted = set(dag_ids)
        last: object = None
        reported: set[str] = set()

        def once(key: str, message: str) -> None:
            if key not in reported:
                reported.add(key)
                self.progress(message)

        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = self._client.get("/monitor/health").json()
                once("api", f"api-server answering on {self.base_url}")
                parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
                up = [part for part in parts if (health.get(part) or {}).get("status") == "healthy"]
                for part in up:
                    if part != "metadatabase":
                        once(part, f"{part.replace('_', '-')} healthy")
                healthy = len(up) == len(parts)
                if self.celery:
                    ready = self.celery_workers_ready()
                    for name in ready:
                        once(name, f"{name} ready")
                    healthy = healthy and len(ready) == len(self.celery_workers)
                dags = {d["dag_id"] for d in self.get("/dags", params={"limit": 1000})["dags"]} if wanted else set()
                last = (health, sorted(dags))
                for dag_id in sorted(wanted & dags):
                    once(f"dag:{dag_id}", f"DAG {dag_id} parsed")
                if healthy and len(self.triggerers) > 1:
                    alive = len(self.alive_triggerer_jobs())
                    healthy = alive >= len(self.triggerers)
                    if healthy:
                        once("triggerers", f"{alive} triggerers alive")
                if healthy and wanted <= dags:
                    self.timings["startup"] = time.monotonic() - self._started_at
                    return
                errors = self.get("/importErrors")["import_errors"]
                if errors:
                    raise RuntimeError(f"DAG import errors: {json.dumps(errors, indent=1)}")
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
            time.sleep(0.5)
        raise TimeoutError(f"Airflow not ready after {timeout}s; last seen: {last}\n{self.component_tails()}")

    # ---------------------------------------------------------------- REST
    def token(self, username: str) -> str:
        """A JWT for ``username`` (an env with ``users``), as the UI's login gets it."""
        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": username, "password": self.passwords[username]},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def get(self, path: str, **kwargs: Any) -> Any:
        """A REST read, tried again (3 tries in all) when the one api-server worker, starved on a loaded machine,
        does not answer within the client's 30 s (seen with two Celery workers beside four other stacks)."""
        for attempt in range(3):
            try:
                response = self._client.get(path, **kwargs)
                break
            except httpx.TimeoutException:
                if attempt == 2:
                    raise
                print(f"GET {path}: no answer in time, trying again", file=sys.stderr, flush=True)
        response.raise_for_status()
        return response.json()

    def _write(self, method: str, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """A REST write, tried again (3 tries in all) when the api-server answers 5xx: SQLite under load answers
        500 ("database is locked") and rolls the write back."""
        for attempt in range(3):
            response = self._client.request(method, path, json=body)
            if response.status_code < 500 or attempt == 2:
                break
            print(f"{method} {path}: HTTP {response.status_code}, trying again", file=sys.stderr, flush=True)
            time.sleep(1 + attempt)
        response.raise_for_status()
        return response

    def unpause(self, dag_id: str) -> None:
        self._write("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, unpause: bool = True) -> str:
        if unpause:
            self.unpause(dag_id)
        response = self._write("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf or {})})
        return response.json()["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        state = "unknown"
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            state = self.run_state(dag_id, run_id)
            if self.progress is not _quiet:
                self._report_task_states(dag_id, run_id, seen)
            if state in TERMINAL_RUN_STATES:
                self.progress(f"run {run_id}: {state}")
                return state
            time.sleep(1)
        raise TimeoutError(f"{dag_id}/{run_id} still {state!r} after {timeout}s\n{self.failure_report(dag_id, run_id)}")

    def _report_task_states(self, dag_id: str, run_id: str, seen: dict[str, str]) -> None:
        with contextlib.suppress(httpx.HTTPError):
            for ti in sorted(self.task_instances(dag_id, run_id), key=lambda t: (t["start_date"] or "", t["task_id"])):
                label = f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]
                state = ti["state"]
                if state and seen.get(label) != state:  # None: not scheduled yet, nothing to tell
                    seen[label] = state
                    self.progress(
                        f"task {label}: {state}" + (f" (try {ti['try_number']})" if ti["try_number"] > 1 else "")
                    )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        entry = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": "true"},
        )
        value = entry["value"]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    # ---------------------------------------------------------------- logs
    def _task_log_dir(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Path:
        path = self.log_folder / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return path / f"map_index={map_index}" if map_index >= 0 else path

    def task_log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int = 1,
        map_index: int = -1,
        *,
        triggers: bool = True,
    ) -> str:
        """The worker log of one attempt, with the attempt's trigger logs (``attempt=N.log.trigger.M.log``) appended
        unless ``triggers`` is False."""
        folder = self._task_log_dir(dag_id, run_id, task_id, map_index)
        trigger_logs = self.trigger_log_files(dag_id, run_id, task_id, try_number, map_index) if triggers else []
        parts = []
        for path in [folder / f"attempt={try_number}.log", *trigger_logs]:
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def trigger_log_files(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> list[Path]:
        folder = self._task_log_dir(dag_id, run_id, task_id, map_index)
        return sorted(folder.glob(f"attempt={try_number}.log.trigger.*.log"))

    def component_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"===== {name} (last {lines} lines)\n{tail(self.component_logs / f'{name}.log', lines)}"
            for name in (
                "db-migrate",
                *COMPONENTS,
                *self.triggerers[1:],
                *(("redis", *self.celery_workers) if self.celery else ()),
            )
            if (self.component_logs / f"{name}.log").exists()
        )

    def failure_report(self, dag_id: str, run_id: str, lines: int = 40) -> str:
        """Logs of every task instance of the run that did not succeed, plus scheduler and triggerer tails."""
        out = [f"##### {dag_id} / {run_id}"]
        try:
            tis = self.task_instances(dag_id, run_id)
        except httpx.HTTPError as exc:
            tis = []
            out.append(f"<cannot list task instances: {exc}>")
        for ti in tis:
            if ti["state"] == "success":
                continue
            label = f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]
            out.append(f"=== {label}: {ti['state']} (try {ti['try_number']})")
            for attempt in range(1, max(ti["try_number"], 1) + 1):
                out.append(self.task_log(dag_id, run_id, ti["task_id"], attempt, ti["map_index"]) or "<no log file>")
        for name in ("scheduler", *self.triggerers):
            out.append(f"===== {name} (last {lines} lines)\n{tail(self.component_logs / f'{name}.log', lines)}")
        return "\n".join(out)

    # ---------------------------------------------------------------- processes
    def task_processes(self, ti_id: str) -> list[psutil.Process]:
        """Processes of one running task instance: the task runner titles itself ``airflow worker -- <ti id>``."""
        found = []
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if f"airflow worker -- {ti_id}" in " ".join(child.cmdline()):
                            found.append(child)
        return found

    def wait_first_try_polling(
        self, dag_id: str, run_id: str, *, task_id: str = "generate", timeout: float = 90
    ) -> tuple[str, list[psutil.Process], dict[str, Any]]:
        """Wait until try 1 of the run's (unmapped) task ``task_id`` has created its LiangXin task (the ``task_id``
        XCom) and is running in a worker process: (LiangXin taskId, that task's processes, the task instance)."""
        deadline = time.monotonic() + timeout
        ti: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            ti = next(t for t in self.task_instances(dag_id, run_id) if t["task_id"] == task_id)
            if ti["state"] == "running" and ti["try_number"] == 1:
                try:
                    liangxin_task_id = self.xcom(dag_id, run_id, task_id, key="task_id")
                except httpx.HTTPStatusError:  # 404 until the task is created
                    liangxin_task_id = None
                procs = self.task_processes(ti["id"]) if liangxin_task_id else []
                if procs:
                    return str(liangxin_task_id), procs, ti
            if self.run_state(dag_id, run_id) in ("success", "failed"):
                break
            time.sleep(0.5)
        raise AssertionError(f"no running worker for try 1 (last TI {ti})\n{self.failure_report(dag_id, run_id)}")

    # ---------------------------------------------------------------- teardown
    def stop(self, grace: float = STOP_GRACE) -> StopReport:
        """End every process tree (SIGTERM, SIGKILL after ``grace``), check the api-server's port is free, and
        remove the home if this env created it. Safe to call twice and after a failed or interrupted start."""
        with deferred_signals():
            self._client.close()
            ended, killed, survivors = self._tree.stop(grace)
            self.procs.clear()
            freed, busy = _wait_ports_free([self.port, *([self.redis_port] if self.redis_port else [])])
            removed = []
            if self.owns_home and self.home.exists():
                shutil.rmtree(self.home, ignore_errors=True)
                removed.append(str(self.home))
            self.stop_report = StopReport(ended, killed, survivors, freed, busy, removed)
            STOP_REPORTS.append(self.stop_report)
            _unregister(self)
        return self.stop_report

    def __enter__(self) -> AirflowEnv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _AdminToken(httpx.Auth):
    """Bearer auth for the REST client of an env with real logins: logs in as admin, again after a 401."""

    def __init__(self, env: AirflowEnv) -> None:
        self.env = env
        self.value: str | None = None

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        for attempt in range(2):
            if self.value is None or attempt:
                try:
                    self.value = self.env.token("admin")
                except httpx.HTTPError:
                    self.value = None
            if self.value:
                request.headers["Authorization"] = f"Bearer {self.value}"
            response = yield request
            if response.status_code != 401:
                return


@contextlib.contextmanager
def liangxin_airflow(
    *,
    output_dir: Path,
    dag_folders: Mapping[str, Path] | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    sim_durations: str = "0.5,0.5,1.5",
    sim_faults: Mapping[str, Any] | None = None,
    home: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    callbacks: bool = False,
    sim_args: Iterable[str] = (),
    users: Mapping[str, str] | None = None,
    sim_api_key: str | None = None,
    triggerers: int = 1,
    executor: str | None = None,
    celery_workers: int = 2,
) -> Iterator[tuple[AirflowEnv, Simulator | None]]:
    """A simulator (unless ``base_url`` is given) and an Airflow whose ``liangxin_default`` connection points at it.

    Without ``home`` both live in one temp folder that is removed on the way out, however the block ends.
    """
    say = progress or _quiet
    own_home = None if home is not None else Path(tempfile.mkdtemp(prefix="liangxin-airflow-"))
    sim = None
    try:
        if base_url is None:
            say("starting the LiangXin simulator")
            # Callbacks: LiangXin calls the api-server back on loopback http (the simulator's dev flag), retrying
            # a few times over ~8 s as the real one "retries briefly".
            extra_args = [*(["--allow-insecure-callbacks", "--callback-attempts", "5"] if callbacks else []), *sim_args]
            sim = Simulator(
                durations=sim_durations,
                faults=sim_faults,
                log_dir=home or own_home,
                extra_args=extra_args,
                api_key=sim_api_key,
            ).start()
            say(f"simulator ready on {sim.base_url}")
            conn = sim.connection_json()
        else:
            say(f"using the LiangXin API at {base_url}")
            conn = json.dumps({"conn_type": "liangxin", "host": base_url, "password": api_key or ""})
        env = AirflowEnv(
            dag_folders=dag_folders,
            home=home or own_home,
            env={"AIRFLOW_CONN_LIANGXIN_DEFAULT": conn, "LIANGXIN_OUTPUT_DIR": str(output_dir), **(extra_env or {})},
            progress=progress,
            callbacks=callbacks,
            users=users,
            triggerers=triggerers,
            executor=executor,
            celery_workers=celery_workers,
        )
        env.owns_home = own_home is not None
        try:
            env.start()
            yield env, sim
        finally:
            env.stop()
    finally:
        if sim is not None:
            sim.stop()
        if own_home is not None and own_home.exists():  # a failed start may leave it before env owned it
            with deferred_signals():
                shutil.rmtree(own_home, ignore_errors=True)
                STOP_REPORTS.append(StopReport(removed=[str(own_home)]))


class DemoFailed(RuntimeError):
    """The demo's DAG run did not succeed; the Airflow home is kept for its logs (``home``)."""

    def __init__(self, message: str, home: Path) -> None:
        super().__init__(message)
        self.home = home


def run_demo(
    output_dir: str | Path,
    prompt: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 300,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Run ``liangxin_seedream_single`` on a real Airflow and return the path of the stored image.

    Starts the simulator unless ``base_url`` is given. The temporary ``AIRFLOW_HOME`` is removed on success and on
    interruption, and kept (``DemoFailed.home``) when the run itself failed, for its task logs.
    """
    say = progress or _quiet
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="liangxin-demo-airflow-"))
    dag_id = "liangxin_seedream_single"
    # The simulator finishes in seconds: poll it often. A real LiangXin task takes longer; keep the DAG default.
    extra_env = {"LIANGXIN_POLL_INTERVAL": "1"} if base_url is None else {}
    keep = False
    try:
        with liangxin_airflow(
            output_dir=output, base_url=base_url, api_key=api_key, home=home, extra_env=extra_env, progress=progress
        ) as (env, _sim):
            env.wait_ready([dag_id], timeout=timeout)
            run_id = env.trigger(dag_id, {"prompt": prompt} if prompt else None)
            say(f"triggered {dag_id}: run {run_id}")
            state = env.wait_for_run(dag_id, run_id, timeout=timeout)
            if state != "success":
                keep = True
                raise DemoFailed(f"{dag_id} run {run_id} ended {state}\n{env.failure_report(dag_id, run_id)}", home)
            image = local_path(env.xcom(dag_id, run_id, "report_image"))
            say(f"image stored at {image}")
    finally:
        with deferred_signals():
            if keep:
                STOP_REPORTS.append(StopReport(kept=[str(home)]))
            elif home.exists():
                shutil.rmtree(home, ignore_errors=True)
                STOP_REPORTS.append(StopReport(removed=[str(home)]))
    return image


def local_path(stored: str) -> Path:
    """A stored result's path as a local ``Path`` (the provider reports ``file://`` URLs for local folders)."""
    return Path(url2pathname(urlsplit(stored).path)) if stored.startswith("file://") else Path(stored)


def main(argv: list[str] | None = None) -> int:
    """The demo CLI. Exit codes: 0 done, 1 failed, 128 + signal number when stopped by SIGINT/SIGTERM/SIGHUP;
    every way out ends with one ``stopped: ...`` line on stderr saying what was ended, freed and removed."""
    install_signal_handlers()
    say = Progress()
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.airflow_env", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run liangxin_seedream_single on a real Airflow and print the image path")
    demo.add_argument("--output-dir", default=os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output"))
    demo.add_argument("--prompt", default=None)
    args = parser.parse_args(argv)
    base_url = os.environ.get("LIANGXIN_BASE_URL") or None
    api_key = os.environ.get("LIANGXIN_API_KEY") or None
    where = "the real LiangXin API" if base_url else "the embedded simulator"
    say(f"demo: liangxin_seedream_single on a real Airflow 3 against {where}")
    first_report = len(STOP_REPORTS)
    code = 0
    try:
        path = run_demo(args.output_dir, args.prompt, base_url=base_url, api_key=api_key, progress=say)
    except KeyboardInterrupt as exc:
        signum = interrupt_signal(exc)
        say(f"interrupted by {signum.name}")
        code = 128 + signum
    except Exception as exc:
        say(f"the demo failed: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        report = StopReport()
        for item in STOP_REPORTS[first_report:]:
            report = report.merge(item)
        say(report.line())
    if code == 0:
        with contextlib.suppress(OSError, ValueError):
            print(
                f"Generated by {where} through a real Airflow in {time.monotonic() - say.started:.0f} s.",
                file=sys.stderr,
            )
            print(f"Your image: {path}  (its JSON sidecar: {path.with_suffix('.json')})", file=sys.stderr)
            print(path, flush=True)
    return code if report.clean or code else 1


if __name__ == "__main__":
    raise SystemExit(main())
