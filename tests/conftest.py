"""Shared fixtures. AIRFLOW_HOME is pointed at a throw-away folder before anything imports Airflow."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType


def _throwaway_airflow_home() -> str | None:
    """A temp AIRFLOW_HOME for this session (unless one is set), removed when the interpreter exits: also after
    Ctrl-C, and after SIGTERM/SIGHUP, which pytest_configure turns into Ctrl-C."""
    if "AIRFLOW_HOME" in os.environ:
        return None
    home = tempfile.mkdtemp(prefix="liangxin-tests-airflow-")
    os.environ["AIRFLOW_HOME"] = home
    atexit.register(shutil.rmtree, home, ignore_errors=True)  # registered first, so it runs after Airflow's own
    return home


_AIRFLOW_HOME = _throwaway_airflow_home()
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# dag.test() in Airflow 3 runs only DAGs found in a configured bundle: the tests' own DAG folder.
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(os.path.dirname(__file__), "dags"))
# In-process runs (dag.test(), triggers driven by the tests) have no scheduler to race with, so triggers here do not
# hold their events (deferral_settle_seconds). The hold is tested on its own; the real-Airflow stacks of tests/e2e
# build their own environment and keep the default.
os.environ.setdefault("AIRFLOW__LIANGXIN__DEFERRAL_SETTLE_SECONDS", "0")

import pytest  # noqa: E402

from tests.support.scripted_server import ScriptedServer  # noqa: E402

TEST_API_KEY = "sk-test-0123456789-very-secret"


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, ``timeout``) and SIGHUP (a closed terminal) would kill pytest on the spot, skipping
    every fixture's teardown and orphaning the processes fixtures started; as KeyboardInterrupt, pytest tears
    everything down as it does on Ctrl-C."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) in (signal.SIG_DFL, None):
            signal.signal(signum, _interrupt)
    # A background job of a non-interactive shell (``.ci/run``'s ``./run tests &``) starts with SIGINT ignored, and
    # an ignored signal stays ignored across fork and exec: every demo, simulator and script the tests start would
    # shrug off the Ctrl-C the lifecycle tests send. Caught signals reset to the default on exec, so catching SIGINT
    # here gives the children a terminal's Ctrl-C again.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line on what the session's harness processes left: nothing, or loudly what is still there."""
    harness = sys.modules.get("tests.e2e.airflow_env")
    if harness is None:
        return
    harness.stop_everything()  # anything a test forgot to stop
    if harness.STOP_REPORTS:
        report = harness.StopReport()
        for item in harness.STOP_REPORTS:
            report = report.merge(item)
        terminalreporter.write_line(f"liangxin harness: {report.line()}", red=not report.clean)


def liangxin_conn_json(base_url: str, api_key: str = TEST_API_KEY, **extra: object) -> str:
    return json.dumps({"conn_type": "liangxin", "host": base_url, "password": api_key, "extra": extra})


@pytest.fixture
def scripted_server():
    """A real HTTP server on loopback answering from a script of canned responses (sync and async tests)."""
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def scripted_conn(scripted_server, monkeypatch):
    """The default connection pointed at the scripted server."""
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(scripted_server.base_url, timeout=2))
    return scripted_server


@pytest.fixture(scope="session")
def simulator():
    """The embedded LiangXin simulator on a free loopback port, shared by the session (fast lifecycle)."""
    from airflow_provider_liangxin.simulator import SimulatorConfig, run_simulator

    with run_simulator(SimulatorConfig(durations=(0.05, 0.05, 0.3), allow_insecure_callbacks=True)) as sim:
        yield sim


@pytest.fixture
def sim_conn(simulator, monkeypatch):
    """The default connection pointed at the simulator; faults are cleared after each test."""
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(simulator.base_url, simulator.api_key))
    yield simulator
    simulator.set_faults({})


def api_calls(sim) -> int:
    """Requests the simulator saw on the LiangXin API routes (admin routes excluded)."""
    return sum(sum(by_status.values()) for route, by_status in sim.stats()["requests"].items() if " /api/" in route)


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh SQLite metadata DB in the throw-away AIRFLOW_HOME (dag.test() needs one)."""
    from airflow.utils.db import initdb

    initdb()
