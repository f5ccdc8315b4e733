"""End to end with ``dag.test()`` against the simulator: a DAG creates a seedream-v4-5 image and a downstream
task reads the result URL from XCom, in sync and in deferrable mode (dag.test() runs the trigger inline)."""

from __future__ import annotations

import httpx
import pytest

DAG_FOLDER = __file__.rsplit("/", 1)[0] + "/dags"


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from tests.support.airflow_versions import DagBag

    bag = DagBag(DAG_FOLDER)
    assert bag.import_errors == {}
    return bag


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_dag_creates_an_image_and_downstream_reads_it(dagbag, sim_conn, mode):
    created_before = sim_conn.stats()["created_per_model"].get("seedream-v4-5", 0)
    run = dagbag.get_dag(f"liangxin_dag_test_{mode}").test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states == {"hero": "success", "read_result": "success"}

    hero = next(ti for ti in run.get_task_instances() if ti.task_id == "hero")
    reader = next(ti for ti in run.get_task_instances() if ti.task_id == "read_result")
    task_id = hero.xcom_pull(task_ids="hero", key="task_id")
    result = hero.xcom_pull(task_ids="hero")
    url = reader.xcom_pull(task_ids="read_result")
    assert task_id.startswith("task_seedream-v4-5_")
    assert result["task_id"] == task_id
    assert result["state"] == "success"
    assert url == result["result_urls"][0]
    png = httpx.get(url).content
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert sim_conn.stats()["created_per_model"]["seedream-v4-5"] == created_before + 1
