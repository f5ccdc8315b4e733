"""LiangxinBatchTrigger against the running simulator (real HTTP on loopback): one event per wave."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
from airflow_provider_liangxin.triggers.liangxin import LiangxinBatchTrigger

pytestmark = pytest.mark.integration


async def _first_event(trigger: LiangxinBatchTrigger) -> dict[str, Any]:
    trigger.settle_seconds = 0  # no scheduler to race with here (the hold has tests of its own)
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def create(*prompts: str) -> list[str]:
    hook = LiangxinHook()
    try:
        return [hook.create_task("seedream-v4-5", {"prompt": p}) for p in prompts]
    finally:
        hook.close()


def test_serialize_round_trip_is_json_native_and_keyless(sim_conn):
    trigger = LiangxinBatchTrigger({"0": "task_a", "3": "task_b"}, poll_interval=1, resume_after=1, deadline=1.9e9)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_liangxin.triggers.liangxin.LiangxinBatchTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert sim_conn.api_key not in json.dumps(kwargs)
    assert LiangxinBatchTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_fires_once_enough_tasks_ended_and_reports_unknown_tasks(sim_conn):
    sim_conn.set_faults({"durations": [0, 0, 0]})
    done_id, never_id = create("done at once", "never [sim:never]")
    trigger = LiangxinBatchTrigger(
        {"0": done_id, "1": never_id, "2": "task_unknown_1"}, poll_interval=0.05, resume_after=2
    )
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == "success"
    assert set(event["done"]) == {"0"}
    assert event["done"]["0"]["state"] == "success"
    assert "param" not in event["done"]["0"]  # compact: the worker has the input
    assert set(event["lost"]) == {"2"}
    assert event["lost"]["2"]["final"] is True  # 404: LiangXin does not know the task


def test_waits_for_all_when_resume_after_is_all(sim_conn):
    sim_conn.set_faults({"durations": [0, 0, 0.3]})
    ids = create("a", "b", "c")
    event = asyncio.run(_first_event(LiangxinBatchTrigger(dict(enumerate(ids)), poll_interval=0.05)))
    assert event["status"] == "success"
    assert sorted(event["done"]) == ["0", "1", "2"]


def test_deadline_ends_the_wait_with_what_finished(sim_conn):
    (never_id,) = create("never [sim:never]")
    trigger = LiangxinBatchTrigger({"0": never_id}, poll_interval=0.05, deadline=time.time() + 0.3)
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == "timeout"
    assert event["done"] == {}


def test_an_outage_longer_than_max_error_duration_is_an_error_event(sim_conn):
    (never_id,) = create("never [sim:never]")
    sim_conn.set_faults({"recordinfo_error_rate": 1.0})
    trigger = LiangxinBatchTrigger(
        {"0": never_id},
        poll_interval=0.05,
        max_error_duration=0.2,
        retry={"max_attempts": 1, "backoff_initial": 0, "backoff_max": 0, "max_wait_total": 0},
    )
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == "error"
    assert "max_error_duration" in event["message"]


def test_a_batch_event_lands_only_after_the_settle_time(sim_conn):
    """Each wave re-defers: its event is held like the single trigger's (apache/airflow#72716)."""
    sim_conn.set_faults({"durations": [0, 0, 0]})
    ids = create("a", "b")
    trigger = LiangxinBatchTrigger(dict(enumerate(ids)), poll_interval=0.05, settle_seconds=0.6)
    assert trigger.serialize()[1]["settle_seconds"] == 0.6

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    started = time.monotonic()
    event = asyncio.run(first())
    assert sorted(event["done"]) == ["0", "1"]
    assert time.monotonic() - started >= 0.6
    with pytest.raises(ValueError, match="settle_seconds"):
        LiangxinBatchTrigger({"0": "t"}, settle_seconds=-0.5)
