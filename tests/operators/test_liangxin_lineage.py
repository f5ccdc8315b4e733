"""LiangxinCreateTaskOperator's OpenLineage methods against the running simulator: what the listener gets after a
sync run, a failure, and a deferral resumed on a fresh operator instance (as Airflow resumes it)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from openlineage.client.serde import Serde

from airflow_provider_liangxin.events import LiangxinTaskFailedException, LiangxinTaskWaitException
from airflow_provider_liangxin.lineage import FACET_KEY
from airflow_provider_liangxin.operators.liangxin import XCOM_TASK_ID, LiangxinCreateTaskOperator
from tests.support.airflow_context import FakeStateStore, FakeTI, make_context
from tests.support.openlineage_schema import validate_run_facets

PROMPT = "a red fox in fresh snow, lineage edition"


def operator(**kwargs) -> LiangxinCreateTaskOperator:
    defaults = {
        "task_id": "hero",
        "model": "seedream-v4-5",
        "input": {"prompt": PROMPT, "aspect_ratio": "16:9", "seed": 7},
        "poll_interval": 0.05,
        "deferrable": False,
    }
    return LiangxinCreateTaskOperator(**{**defaults, **kwargs})


class ListenerTI:
    """What the listener hands the methods: a task instance that can pull XCom (here from a dict)."""

    task_id = "hero"
    map_index = -1

    def __init__(self, xcom: dict | None = None) -> None:
        self.xcom = xcom
        self.pulls: list[dict] = []

    def xcom_pull(self, **kwargs):
        self.pulls.append(kwargs)
        return self.xcom


def facets(lineage) -> dict:
    as_json = {key: Serde.to_dict(facet) for key, facet in lineage.run_facets.items()}
    validate_run_facets(as_json)
    return as_json


def text_of(lineage) -> str:
    return json.dumps(facets(lineage)) + json.dumps([Serde.to_dict(o) for o in lineage.outputs])


def assert_no_secrets(lineage, sim, result_urls) -> None:
    text = text_of(lineage)
    assert sim.api_key not in text
    assert PROMPT not in text
    for url in result_urls:
        assert url not in text
        assert url.split("?")[0] not in text  # not even without its signature


@pytest.fixture
def instant(sim_conn):
    sim_conn.set_faults({"durations": [0, 0, 0]})
    return sim_conn


def test_start_reports_the_request(sim_conn):
    lineage = operator().get_openlineage_facets_on_start()
    facet = facets(lineage)[FACET_KEY]
    assert facet["model"] == "seedream-v4-5"
    assert facet["parameters"] == {"aspect_ratio": "16:9", "seed": 7}
    assert facet["promptLength"] == len(PROMPT)
    assert "taskId" not in facet


def test_sync_success_with_output_path(instant, tmp_path):
    op = operator(output_path=str(tmp_path / "out"))
    result = op.execute(make_context(FakeStateStore()))
    lineage = op.get_openlineage_facets_on_complete(ListenerTI())
    found = facets(lineage)
    assert found["externalQuery"]["externalQueryId"] == result["task_id"]
    host = instant.base_url.split("://", 1)[1].rstrip("/")
    assert found["externalQuery"]["source"] == f"liangxin://{host}"
    assert found[FACET_KEY]["state"] == "success"
    assert found[FACET_KEY]["storedCount"] == len(result["stored"]) == 1
    [output] = lineage.outputs
    stored = Path(result["stored"][0]["path"].removeprefix("file://"))
    assert stored.is_file()
    assert (output.namespace, output.name) == ("file", str(stored))
    assert_no_secrets(lineage, instant, result["result_urls"])


def test_sync_failure_reports_fail_code_and_message(instant):
    op = operator(input={"prompt": "a storm [sim:fail:422:upstream refused]"})
    ti = FakeTI()
    with pytest.raises(LiangxinTaskFailedException):
        op.execute(make_context(FakeStateStore(), ti))
    found = facets(op.get_openlineage_facets_on_failure(ListenerTI()))
    assert found[FACET_KEY]["taskId"] == ti.pushed_value(XCOM_TASK_ID)
    assert found[FACET_KEY]["state"] == "fail"
    assert found[FACET_KEY]["failCode"] == "422"
    assert found[FACET_KEY]["failMsg"] == "upstream refused"
    assert "upstream refused" in found["errorMessage"]["message"]
    assert found["externalQuery"]["externalQueryId"] == ti.pushed_value(XCOM_TASK_ID)


def _deferred_event(sim, **kwargs) -> tuple[str, dict]:
    """Run the operator until it defers, then the real trigger to its event (as the triggerer would)."""
    first = operator(deferrable=True, **kwargs)
    ti = FakeTI()
    with pytest.raises(TaskDeferred) as info:
        first.execute(make_context(FakeStateStore(), ti))

    async def run_trigger() -> dict:
        [payload] = [event.payload async for event in info.value.trigger.run()]  # exactly one event
        return payload

    return ti.pushed_value(XCOM_TASK_ID), asyncio.run(run_trigger())


def test_deferred_success_on_a_fresh_instance(sim_conn, tmp_path):
    """Airflow resumes a deferred task on a new operator instance: what it has (the event) is enough."""
    task_id, event = _deferred_event(sim_conn, output_path=str(tmp_path))
    resumed = operator(deferrable=True, output_path=str(tmp_path))
    result = resumed.execute_complete(make_context(), event)
    ti = ListenerTI()
    lineage = resumed.get_openlineage_facets_on_complete(ti)
    assert ti.pulls == []  # from the instance, no XCom round trip
    found = facets(lineage)
    assert found["externalQuery"]["externalQueryId"] == task_id == result["task_id"]
    assert found[FACET_KEY]["state"] == "success"
    assert [o.name for o in lineage.outputs] == [p["path"].removeprefix("file://") for p in result["stored"]]
    assert_no_secrets(lineage, sim_conn, result["result_urls"])


def test_deferred_failure_on_a_fresh_instance(sim_conn):
    task_id, event = _deferred_event(sim_conn, input={"prompt": "x [sim:fail]"})
    resumed = operator(deferrable=True, input={"prompt": "x [sim:fail]"})
    with pytest.raises(LiangxinTaskFailedException):
        resumed.execute_complete(make_context(), event)
    found = facets(resumed.get_openlineage_facets_on_failure(ListenerTI()))
    assert found[FACET_KEY]["taskId"] == task_id
    assert found[FACET_KEY]["failMsg"] == "simulated generation failure"
    assert task_id in found["errorMessage"]["message"]


def test_a_wait_error_names_the_task_without_a_liangxin_outcome(sim_conn):
    resumed = operator(deferrable=True)
    with pytest.raises(LiangxinTaskWaitException):
        resumed.execute_complete(make_context(), {"status": "error", "task_id": "t-42", "message": "HTTP 401"})
    found = facets(resumed.get_openlineage_facets_on_failure(ListenerTI()))
    assert found["externalQuery"]["externalQueryId"] == "t-42"
    assert "state" not in found[FACET_KEY]
    assert "errorMessage" not in found  # the listener adds it from the exception


def test_an_instance_that_did_not_run_reads_the_result_from_xcom(instant):
    result = operator().execute(make_context())
    ti = ListenerTI(xcom=result)
    found = facets(operator().get_openlineage_facets_on_complete(ti))
    assert ti.pulls == [{"task_ids": "hero", "map_indexes": -1}]
    assert found["externalQuery"]["externalQueryId"] == result["task_id"]


def test_no_wait_reports_the_created_task(instant):
    op = operator(wait_for_completion=False)
    task_id = op.execute(make_context())
    ti = ListenerTI()
    found = facets(op.get_openlineage_facets_on_complete(ti))
    assert ti.pulls == []
    assert found[FACET_KEY]["taskId"] == task_id
    assert "state" not in found[FACET_KEY]


def test_prompt_opt_in(sim_conn):
    found = facets(operator(openlineage_include_prompt=True).get_openlineage_facets_on_start())
    assert found[FACET_KEY]["prompt"] == PROMPT


# ---------------------------------------------------------------------------------------------- the batch


BATCH_PROMPTS = ["lineage batch: a lighthouse at dawn", "lineage batch: a failing one [sim:fail:422:nsfw content]"]


def batch_operator(tmp_path: Path, **kwargs):
    from airflow_provider_liangxin.operators.liangxin import LiangxinBatchCreateTaskOperator

    defaults = {
        "task_id": "batch",
        "model": "z-image",
        "inputs": [{"prompt": p, "aspect_ratio": "1:1"} for p in BATCH_PROMPTS],
        "poll_interval": 0.05,
        "deferrable": True,
        "output_path": str(tmp_path),
        "max_failed": 1,
    }
    return LiangxinBatchCreateTaskOperator(**{**defaults, **kwargs})


def test_a_deferred_batch_reports_every_task_and_its_stored_files(instant, tmp_path):
    from tests.operators.test_batch import run_deferred

    op = batch_operator(tmp_path)
    results = run_deferred(op, make_context(FakeStateStore(), FakeTI()))
    assert [r["state"] for r in results] == ["success", "fail"]

    lineage = op.get_openlineage_facets_on_complete(ListenerTI())
    facet = facets(lineage)[FACET_KEY]
    assert facet["taskIds"] == [r["task_id"] for r in results]
    assert (facet["itemCount"], facet["succeededCount"], facet["failedCount"]) == (2, 1, 1)
    assert [e["state"] for e in facet["items"]] == ["success", "fail"]
    stored = [s["path"] if isinstance(s, dict) else s for s in results[0]["stored"]]
    assert len(lineage.outputs) == len(stored) >= 1
    assert all(out.namespace == "file" for out in lineage.outputs)
    assert "nsfw content" in facets(lineage)["errorMessage"]["message"]
    text = text_of(lineage)
    assert instant.api_key not in text
    for prompt in BATCH_PROMPTS:
        assert prompt not in text
    for url in results[0]["result_urls"]:
        assert url.split("?")[0] not in text

    # A fresh instance (the listener's copy of the task) reads the same items from XCom.
    fresh = batch_operator(tmp_path).get_openlineage_facets_on_complete(ListenerTI(xcom=results))
    assert facets(fresh)[FACET_KEY]["taskIds"] == facet["taskIds"]
    assert len(fresh.outputs) == len(lineage.outputs)


def test_a_batch_failing_on_max_failed_reports_the_items_it_knows(instant, tmp_path):
    from airflow.providers.common.compat.sdk import AirflowException

    from tests.operators.test_batch import run_deferred

    op = batch_operator(tmp_path, max_failed=0)
    with pytest.raises(AirflowException, match="1 of 2 items failed"):
        run_deferred(op, make_context(FakeStateStore(), FakeTI()))
    lineage = op.get_openlineage_facets_on_failure(ListenerTI())
    facet = facets(lineage)[FACET_KEY]
    assert len(facet["taskIds"]) == 2
    assert facet["failedCount"] == 1
    assert "nsfw content" in facets(lineage)["errorMessage"]["message"]
