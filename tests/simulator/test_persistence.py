"""SQLite persistence: a restarted simulator keeps its tasks, their clocks and their pending callbacks."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from airflow_provider_liangxin._api import RECORD_INFO_PATH
from airflow_provider_liangxin.simulator import SimulatorConfig, run_simulator
from tests.simulator.conftest import CallbackReceiver, create, record, wait_for_state, wait_until


def _client(base_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"})


def test_tasks_survive_a_restart_and_keep_progressing(tmp_path: Path, receiver: CallbackReceiver) -> None:
    config = SimulatorConfig(durations=(0.2, 0.2, 0.4), db_path=str(tmp_path / "sim.db"), allow_insecure_callbacks=True)
    with run_simulator(config) as first, _client(first.base_url, first.api_key) as client:
        task_id = create(client, "kept across restarts", seed=5, aspect_ratio="16:9")
        failing = create(client, "[sim:fail:418:teapot]")
        with_callback = create(client, "called back later", callBackUrl=f"{receiver.base_url}/ok")
        before = record(client, task_id)
        assert before["state"] == "waiting"

    with run_simulator(config) as second, _client(second.base_url, second.api_key) as client:
        assert second.stats()["task_ids"] == [task_id, failing, with_callback]
        done = wait_for_state(client, task_id, "success")
        failed = wait_for_state(client, failing, "fail")
        image = httpx.get(json.loads(done["resultJson"])["resultUrls"][0])
        wait_until(lambda: receiver.bodies("/ok"))

    assert done["createTime"] == before["createTime"]
    assert done["param"] == before["param"]
    assert done["completeTime"] == before["createTime"] + 800
    assert (failed["failCode"], failed["failMsg"]) == ("418", "teapot")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert receiver.bodies("/ok")[0]["data"]["taskId"] == with_callback


def test_counters_survive_a_clean_restart(tmp_path: Path) -> None:
    """A load test that restarts the simulator mid-run reads the faults it injected over the whole run."""
    config = SimulatorConfig(durations=(0, 0, 0), db_path=str(tmp_path / "sim.db"), faults={"recordinfo_error_rate": 1})
    with run_simulator(config) as first, _client(first.base_url, first.api_key) as client:
        task_id = create(client)
        assert client.get(RECORD_INFO_PATH, params={"taskId": task_id}).status_code == 500
        assert client.get(RECORD_INFO_PATH, params={"taskId": task_id}).status_code == 500
    with run_simulator(config) as second, _client(second.base_url, second.api_key) as client:
        second.set_faults({})
        assert client.get(RECORD_INFO_PATH, params={"taskId": task_id}).status_code == 200
        stats = second.stats()
        second.reset()
        after_reset = second.stats()
    with run_simulator(config) as third:
        after_reset_and_restart = third.stats()

    assert stats["requests"]["GET /api/v1/jobs/recordInfo"] == {"500": 2, "200": 1}
    assert stats["requests"]["POST /api/v1/jobs/createTask"] == {"200": 1}
    assert stats["created_per_model"] == {"seedream-v4-5": 1}
    assert stats["recordinfo_per_task"] == {task_id: 1}
    assert "GET /api/v1/jobs/recordInfo" not in after_reset["requests"]
    assert "GET /api/v1/jobs/recordInfo" not in after_reset_and_restart["requests"]
    assert after_reset_and_restart["task_ids"] == []


def test_without_a_db_a_restart_forgets(tmp_path: Path) -> None:
    config = SimulatorConfig(durations=(0, 0, 0))
    with run_simulator(config) as first, _client(first.base_url, first.api_key) as client:
        create(client)
    with run_simulator(config) as second:
        assert second.stats()["task_ids"] == []
