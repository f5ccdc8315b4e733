"""Shared fixtures. AIRFLOW_HOME is pointed at a throw-away folder before anything imports Airflow."""

from __future__ import annotations

import json
import os
import tempfile

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="liangxin-tests-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# dag.test() in Airflow 3 runs only DAGs found in a configured bundle: the tests' own DAG folder.
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(os.path.dirname(__file__), "dags"))

import pytest  # noqa: E402

from tests.support.scripted_server import ScriptedServer  # noqa: E402

TEST_API_KEY = "sk-test-0123456789-very-secret"


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
