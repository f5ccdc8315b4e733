"""Stopping the demo or a test session, whichever way, leaves no process, no port and no temp folder behind.

Real processes throughout: ``./run demo`` (or the harness module) and ``pytest`` run as subprocesses and are sent
the signals a user, a CI timeout or a closed terminal sends. Every process of the demo is recorded with psutil
before the signal; afterwards none may be alive, the ports it announced must be free, its ``AIRFLOW_HOME`` gone,
and it must have said so in one ``stopped: ...`` line. Signals go out as soon as the state under test exists (the
api-server answering, the components starting, the DB migrating), not after a whole DAG run, to keep CI short.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.airflow_env import EXECUTOR_ENV, REPO_ROOT, port_is_free

STOP_BOUND = 20.0  # seconds from the signal to a clean exit (grace 3 s, SIGKILL, simulator, removal)
START_BOUND = 240.0  # seconds for the demo to reach the state under test on a busy 2-core CI machine


def _child_env(tmp_path: Path) -> dict[str, str]:
    """A private TMPDIR (so leftovers are ours to see) and none of this session's Airflow settings but its
    executor."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and not k.startswith("LIANGXIN_")}
    if EXECUTOR_ENV in os.environ:  # ./run celery: the demo's Redis and Celery workers must go too
        env[EXECUTOR_ENV] = os.environ[EXECUTOR_ENV]
    env.update(TMPDIR=str(tmpdir), LIANGXIN_OUTPUT_DIR=str(tmp_path / "output"), PYTHONUNBUFFERED="1")
    env["LIANGXIN_VENV"] = sys.prefix  # ./run demo uses this session's virtualenv, never makes another
    return env


class Watched:
    """A subprocess whose stderr lines are collected and whose descendants are recorded as they appear."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.lines: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self._done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._track, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def _track(self) -> None:
        while not self._done.is_set() and self.proc.poll() is None:
            self.snapshot()
            time.sleep(0.1)

    def snapshot(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_BOUND) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            assert self.proc.poll() is None, f"exited with {self.proc.returncode} before {pattern!r}:\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} after {timeout}s:\n{self.output()}")

    def alive(self) -> list[str]:
        return [
            f"{p.pid} {' '.join(p.cmdline())[:120]}"
            for p in self.seen.values()
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ]

    def cleanup(self) -> None:
        """Whatever a failing test left running is killed here, so a red test does not leak processes either."""
        self._done.set()
        for proc in (
            [*self.seen.values(), psutil.Process(self.proc.pid)] if self.proc.poll() is None else [*self.seen.values()]
        ):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def watch(tmp_path) -> Iterator[Callable[[list[str]], Watched]]:
    started: list[Watched] = []

    def start(args: list[str]) -> Watched:
        started.append(Watched(args, _child_env(tmp_path)))
        return started[-1]

    yield start
    for watched in started:
        watched.cleanup()


def _cmdline(proc: psutil.Process) -> str:
    """A live process's command line ("" once it is gone or a zombie)."""
    with contextlib.suppress(psutil.Error):
        return " ".join(proc.cmdline())
    return ""


def _stop_and_check(demo: Watched, signum: signal.Signals) -> None:
    """Send ``signum``; the demo must exit 128 + signum within STOP_BOUND, leave nothing, and say so in one line."""
    home = Path(demo.wait_for(r"airflow db migrate\) in (\S+)", 5).group(1))
    ports = [int(m) for m in re.findall(r"(?:http|redis)://127\.0\.0\.1:(\d+)", demo.output())]
    demo.snapshot()
    tracked = len(demo.seen)
    sent = time.monotonic()
    demo.proc.send_signal(signum)
    try:
        code = demo.proc.wait(timeout=STOP_BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_BOUND}s after {signum.name}:\n{demo.output()}")
    took = time.monotonic() - sent
    time.sleep(0.3)  # the reader thread drains the last lines

    assert code == 128 + signum, demo.output()
    assert demo.alive() == [], f"left running after {signum.name}: {demo.alive()}\n{demo.output()}"
    assert ports, demo.output()
    assert [p for p in ports if not port_is_free(p)] == [], demo.output()
    assert not home.exists(), f"{home} left behind"
    assert list(home.parent.glob("liangxin-*")) == [], list(home.parent.iterdir())
    summary = [line for line in demo.lines if "stopped: " in line]
    assert len(summary) == 1, demo.output()
    assert "STILL" not in summary[0], summary[0]
    assert f"{home} removed" in summary[0], summary[0]
    assert "Traceback" not in demo.output(), demo.output()
    print(f"\n{signum.name}: {tracked} processes tracked, exit after {took:.1f}s; {summary[0]}")


@pytest.mark.e2e
def test_sigterm_to_run_demo_once_the_api_server_answers_leaves_nothing(watch):
    """The CI-timeout case: ``./run demo`` execs Python, so SIGTERM reaches the harness (22 processes were left)."""
    if not (Path(sys.prefix) / ".liangxin-installed").exists():
        pytest.skip("not running from a virtualenv made by ./run: ./run demo would install one first")
    demo = watch([str(REPO_ROOT / "run"), "demo"])
    demo.wait_for(r"api-server answering on")
    # The executor's workers exist (the scheduler's LocalExecutor workers, or the Celery workers' pools): a real
    # process tree.
    worker = "celery worker" if os.environ.get(EXECUTOR_ENV) == "celery" else "LocalExecutor"
    deadline = time.monotonic() + 60
    while not any(worker in _cmdline(p) for p in list(demo.seen.values())):
        assert time.monotonic() < deadline, demo.output()
        time.sleep(0.2)
    _stop_and_check(demo, signal.SIGTERM)


@pytest.mark.e2e
def test_sigint_while_airflow_starts_exits_quickly_without_traceback(watch):
    demo = watch([sys.executable, "-m", "tests.e2e.airflow_env", "demo"])
    demo.wait_for(r"waiting for the api-server on")
    time.sleep(2)  # the four components are forking their own children
    _stop_and_check(demo, signal.SIGINT)


@pytest.mark.e2e
def test_sighup_during_db_migrate_stops_the_migration_and_the_simulator(watch):
    """A closed terminal: SIGHUP arrives while ``airflow db migrate`` runs in its own session."""
    demo = watch([sys.executable, "-m", "tests.e2e.airflow_env", "demo"])
    demo.wait_for(r"airflow db migrate\) in")
    deadline = time.monotonic() + 30
    while not any("migrate" in " ".join(p.cmdline()) for p in demo.seen.values() if p.is_running()):
        assert time.monotonic() < deadline, demo.output()
        time.sleep(0.05)
    _stop_and_check(demo, signal.SIGHUP)


# ------------------------------------------------------------------------------------------ the test session

INNER_TEST = """
import os, time
from tests.e2e.airflow_env import Simulator

def test_home():
    print("AIRFLOW_HOME=" + os.environ["AIRFLOW_HOME"], flush=True)
    assert os.path.isdir(os.environ["AIRFLOW_HOME"])

def test_hangs_with_a_simulator():
    sim = Simulator().start()
    try:
        print(f"SIM pid={sim.process.pid} port={sim.port} log={sim.log_path}", flush=True)
        time.sleep(120)
    finally:
        sim.stop()
"""


def _inner_pytest(watch, tmp_path: Path, test: str) -> Watched:
    """pytest on a throw-away test file, with this repository's conftest loaded as a plugin."""
    (tmp_path / "inner").mkdir()
    path = tmp_path / "inner" / "test_inner.py"
    path.write_text(INNER_TEST)
    return watch(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-s", "-q", "-p", "no:cacheprovider",
         f"--rootdir={tmp_path / 'inner'}", f"{path}::{test}"]
    )  # fmt: skip


def test_a_pytest_run_removes_its_airflow_home(watch, tmp_path):
    inner = _inner_pytest(watch, tmp_path, "test_home")
    assert inner.proc.wait(timeout=120) == 0, inner.output()
    time.sleep(0.3)
    home = Path(inner.wait_for(r"AIRFLOW_HOME=(\S+)", 5).group(1))
    assert home.parent == tmp_path / "tmp", home  # made under the private TMPDIR, so the check below means it
    assert not home.exists()
    assert list((tmp_path / "tmp").glob("liangxin-tests-airflow-*")) == []


def test_sigterm_to_pytest_tears_down_fixtures_and_cleans_up(watch, tmp_path):
    """Python dies on SIGTERM without running ``finally``; conftest turns it into Ctrl-C's orderly teardown."""
    inner = _inner_pytest(watch, tmp_path, "test_hangs_with_a_simulator")
    match = inner.wait_for(r"SIM pid=(\d+) port=(\d+) log=(\S+)", 60)
    sim = psutil.Process(int(match.group(1)))
    inner.proc.send_signal(signal.SIGTERM)
    assert inner.proc.wait(timeout=STOP_BOUND) != 0, inner.output()
    time.sleep(0.3)
    assert not (sim.is_running() and sim.status() != psutil.STATUS_ZOMBIE), inner.output()
    assert port_is_free(int(match.group(2)))
    assert not Path(match.group(3)).exists()
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [], inner.output()
    assert any(line.startswith("liangxin harness: stopped: 1 process ended") for line in inner.lines), inner.output()
