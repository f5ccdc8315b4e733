"""LiangxinTaskTrigger against the running simulator (real HTTP on loopback), one event per outcome."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest
from airflow.providers.common.compat.module_loading import import_string
from airflow.providers.common.compat.sdk import AirflowException, BaseHook

from airflow_provider_liangxin.events import LiangxinTaskWaitException, make_event, record_from_event
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger
from tests.conftest import liangxin_conn_json
from tests.support.airflow_versions import SYNC_CONNECTION_IN_THREAD

FAST = {"max_attempts": 2, "backoff_initial": 0.0, "backoff_max": 0.0, "max_wait_total": 5}


async def events_of(trigger: LiangxinTaskTrigger) -> list[dict]:
    trigger.settle_seconds = 0  # no scheduler to race with here (the hold has tests of its own)
    return [event.payload async for event in trigger.run()]


def create(prompt: str = "a lighthouse at dusk", model: str = "seedream-v4-5", **extra) -> str:
    hook = LiangxinHook()
    try:
        return hook.create_task(model, {"prompt": prompt, **extra})
    finally:
        hook.close()


def test_serialize_round_trip_is_json_native_and_keyless(sim_conn):
    trigger = LiangxinTaskTrigger(
        "task_x_1", "liangxin_default", poll_interval=0.5, deadline=1.5e9, execution_deadline=None, retry=FAST
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_liangxin.triggers.liangxin.LiangxinTaskTrigger"
    assert kwargs == {
        "liangxin_task_id": "task_x_1",
        "liangxin_conn_id": "liangxin_default",
        "poll_interval": 0.5,
        "deadline": 1.5e9,
        "execution_deadline": None,
        "request_timeout": None,
        "retry": FAST,
        "max_error_duration": 300.0,
        "max_consecutive_errors": None,
        "callback_token_sha256": None,
        "callback_wakeups": 0,
        "settle_seconds": 15.0,
    }
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert sim_conn.api_key not in json.dumps(kwargs)
    again = import_string(classpath)(**kwargs)
    assert again.serialize() == (classpath, kwargs)


def test_kwargs_serialized_by_the_previous_version_still_load():
    """A triggerer upgraded while tasks are deferred re-creates triggers from the old kwargs."""
    old = {
        "liangxin_task_id": "task_x_1",
        "liangxin_conn_id": "liangxin_default",
        "poll_interval": 0.5,
        "deadline": None,
        "execution_deadline": None,
        "request_timeout": None,
        "retry": None,
        "max_consecutive_errors": 5,
    }
    trigger = LiangxinTaskTrigger(**old)
    assert trigger.max_consecutive_errors == 5
    assert trigger.max_error_duration == 300.0


def test_rejects_non_positive_poll_interval():
    with pytest.raises(ValueError, match="poll_interval"):
        LiangxinTaskTrigger("t", poll_interval=0)


async def test_success_yields_exactly_one_event_with_record(sim_conn, monkeypatch):
    task_id = create()

    def forbidden(*args, **kwargs):
        raise AssertionError("the trigger called the sync get_connection")

    if not SYNC_CONNECTION_IN_THREAD:  # before 3.3.2 common-compat runs the sync look-up in a thread
        monkeypatch.setattr(BaseHook, "get_connection", forbidden)
        monkeypatch.setattr(LiangxinHook, "get_connection", forbidden)
    events = await events_of(LiangxinTaskTrigger(task_id, poll_interval=0.05, deadline=time.time() + 30))
    assert len(events) == 1
    (event,) = events
    assert (event["status"], event["task_id"]) == ("success", task_id)
    record = event["record"]
    assert record["state"] == "success"
    assert record["result_urls"][0].startswith(sim_conn.base_url)
    assert record["param"]["input"]["prompt"] == "a lighthouse at dusk"
    assert json.loads(json.dumps(event)) == event
    assert record_from_event(event).result_urls == record["result_urls"]


async def test_fail_event_carries_fail_code_and_message(sim_conn):
    task_id = create("a storm [sim:fail:501:content policy violation]")
    (event,) = await events_of(LiangxinTaskTrigger(task_id, poll_interval=0.05, deadline=time.time() + 30))
    assert event["status"] == "fail"
    assert (event["record"]["fail_code"], event["record"]["fail_msg"]) == ("501", "content policy violation")
    with pytest.raises(AirflowException, match="failCode='501' failMsg='content policy violation'"):
        record_from_event(event)


async def test_deadline_gives_one_timeout_event(sim_conn):
    task_id = create("forever [sim:never]")
    started = time.monotonic()
    (event,) = await events_of(LiangxinTaskTrigger(task_id, poll_interval=0.05, deadline=time.time() + 0.4))
    assert event["status"] == "timeout"
    assert "timeout" in event["message"]
    assert 0.35 <= time.monotonic() - started < 3
    gave_up = rf"Gave up waiting for LiangXin task {task_id}: .*has passed\. The LiangXin API has no cancel endpoint"
    with pytest.raises(AirflowException, match=gave_up):
        record_from_event(event)


async def test_execution_deadline_is_honoured(sim_conn):
    task_id = create("forever [sim:never]")
    trigger = LiangxinTaskTrigger(
        task_id, poll_interval=5, deadline=time.time() + 60, execution_deadline=time.time() + 0.3
    )
    started = time.monotonic()
    (event,) = await events_of(trigger)
    assert event["status"] == "timeout"
    assert "execution_timeout" in event["message"]
    assert time.monotonic() - started < 2, "slept a whole poll interval past the deadline"


async def test_a_slow_poll_cannot_run_past_the_deadline(sim_conn):
    task_id = create()
    sim_conn.set_faults({"slow_rate": 1.0, "slow_seconds": 5})
    started = time.monotonic()
    trigger = LiangxinTaskTrigger(task_id, poll_interval=0.05, deadline=time.time() + 0.5, request_timeout=30)
    (event,) = await events_of(trigger)
    assert event["status"] == "timeout"
    assert time.monotonic() - started < 2.5


async def test_unknown_task_is_an_error_event_not_an_exception(sim_conn):
    (event,) = await events_of(LiangxinTaskTrigger("task_nope_1", poll_interval=0.05, retry=FAST))
    assert event["status"] == "error"
    assert "task not found" in event["message"]
    assert "HTTP 404" in event["message"]


async def test_transient_errors_are_retried_then_reported(sim_conn):
    task_id = create()
    sim_conn.set_faults({"recordinfo_error_rate": 1.0})
    before = sim_conn.stats()
    trigger = LiangxinTaskTrigger(task_id, poll_interval=0.01, retry=FAST, max_consecutive_errors=3)
    (event,) = await events_of(trigger)
    assert event["status"] == "error"
    assert "3 polls failed" in event["message"]
    assert "HTTP 500" in event["message"]
    after = sim_conn.stats()
    assert _record_info_calls(after) - _record_info_calls(before) == 6  # 3 polls x 2 attempts each


async def test_transient_errors_then_recovery_succeeds(sim_conn):
    task_id = create()
    sim_conn.set_faults({"recordinfo_error_rate": 0.5, "seed": 7})
    (event,) = await events_of(
        LiangxinTaskTrigger(
            task_id, poll_interval=0.02, retry=FAST, max_consecutive_errors=50, deadline=time.time() + 30
        )
    )
    assert event["status"] == "success"


async def test_bad_key_is_an_error_event(simulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(simulator.base_url, "sk-wrong"))
    (event,) = await events_of(LiangxinTaskTrigger("task_x_1", poll_interval=0.05))
    assert event["status"] == "error"
    assert "invalid token" in event["message"]
    assert "sk-wrong" not in json.dumps(event)


async def test_missing_connection_is_an_error_event(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", raising=False)
    (event,) = await events_of(LiangxinTaskTrigger("task_x_1", liangxin_conn_id="does_not_exist"))
    assert event["status"] == "error"
    assert "does_not_exist" in event["message"]


@pytest.mark.parametrize("event", [None, "success", {"status": "done"}, {"no": "status"}])
def test_invalid_events_are_rejected(event):
    with pytest.raises(AirflowException, match=r"no usable event|unknown event status"):
        record_from_event(event)


def test_error_event_raises_with_message():
    with pytest.raises(LiangxinTaskWaitException, match="Error while waiting for LiangXin task t1: boom"):
        record_from_event(make_event("error", "t1", "boom"))


def _record_info_calls(stats: dict) -> int:
    return sum(stats["requests"].get("GET /api/v1/jobs/recordInfo", {}).values())


class TestDeadlines:
    def test_execution_deadline_counts_from_the_try_start(self):
        from datetime import datetime, timedelta
        from types import SimpleNamespace

        from airflow_provider_liangxin.events import Deadlines

        started = datetime(2026, 1, 1, tzinfo=UTC)
        deadlines = Deadlines.start({"ti": SimpleNamespace(start_date=started)}, 60, timedelta(minutes=5))
        assert deadlines.execution == started.timestamp() + 300
        assert deadlines.wait == pytest.approx(time.time() + 60, abs=1)
        assert deadlines.passed(time.time()) == "the task's execution_timeout has passed"

    def test_sleep_never_overshoots_and_backstop_trails_the_deadline(self):
        from airflow_provider_liangxin.events import Deadlines

        now = time.time()
        deadlines = Deadlines(wait=now + 2)
        assert deadlines.sleep_for(now, 10) == pytest.approx(2)
        assert deadlines.sleep_for(now, 0.5) == 0.5
        assert deadlines.passed(now) is None
        assert deadlines.passed(now + 2) == "the wait timeout has passed"
        assert deadlines.backstop(5).total_seconds() == pytest.approx(2 + 10 + 60, abs=1)
        assert Deadlines().backstop(5) is None


# --------------------------------------------------------------------------------------------- hardening


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"poll_interval": float("inf")}, "poll_interval"),
        ({"poll_interval": True}, "poll_interval"),
        ({"deadline": float("inf")}, "deadline"),
        ({"execution_deadline": float("nan")}, "execution_deadline"),
        ({"request_timeout": float("inf")}, "request_timeout"),
        ({"max_error_duration": float("nan")}, "max_error_duration"),
        ({"retry": {"backoff_initial": float("inf")}}, "backoff_initial"),
        ({"retry": {"max_attempts": True}}, "max_attempts"),
    ],
)
def test_non_finite_numbers_are_rejected_when_built(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LiangxinTaskTrigger("t", **kwargs)


def _outage(count: int, delay: float) -> list:
    from tests.support.scripted_server import Reply

    return [Reply(500, {"code": 500, "msg": "upstream down", "data": None}, delay=delay) for _ in range(count)]


NO_RETRY = {"max_attempts": 1}


async def test_outage_shorter_than_max_error_duration_is_ridden_out(scripted_conn):
    """Many short failed polls (a count of 5 would have given up) inside a 5 s budget: the wait succeeds."""
    from tests.support.scripted_server import ok, record

    scripted_conn.script(*_outage(20, 0.0), ok(record("task_seedream-v4-5_1", "success")))
    trigger = LiangxinTaskTrigger(
        "task_seedream-v4-5_1", poll_interval=0.01, retry=NO_RETRY, max_error_duration=5, deadline=time.time() + 30
    )
    (event,) = await events_of(trigger)
    assert event["status"] == "success"


async def test_outage_longer_than_max_error_duration_is_an_error_event(scripted_conn):
    """Few slow failed polls (a count of 5 would have waited on) beyond a 0.5 s budget: an error event."""
    scripted_conn.script(*_outage(4, 0.3))
    trigger = LiangxinTaskTrigger(
        "task_seedream-v4-5_1", poll_interval=0.01, retry=NO_RETRY, max_error_duration=0.5, deadline=time.time() + 30
    )
    started = time.monotonic()
    (event,) = await events_of(trigger)
    assert event["status"] == "error"
    assert "max_error_duration=0.5 s" in event["message"]
    assert "upstream down" in event["message"]
    assert time.monotonic() - started < 2
    assert len(scripted_conn.requests) <= 3


async def test_an_echoed_key_never_reaches_the_event(scripted_conn):
    """A hostile server puts our Authorization header into its error text: the event (stored in the metadata DB,
    read by the worker) carries ``***`` instead."""
    from tests.conftest import TEST_API_KEY
    from tests.support.scripted_server import Reply

    scripted_conn.script(
        Reply(401, {"code": 401, "msg": f"invalid token: Authorization: Bearer {TEST_API_KEY}", "data": None})
    )
    (event,) = await events_of(LiangxinTaskTrigger("task_seedream-v4-5_1", poll_interval=0.01, retry=NO_RETRY))
    assert event["status"] == "error"
    assert TEST_API_KEY not in json.dumps(event)
    assert "Bearer ***" in event["message"]


def test_callback_kwargs_round_trip_and_are_checked():
    """Only a sha256 may be stored (a token passed by mistake fails in the worker, before deferring)."""
    digest = "ab" * 32
    trigger = LiangxinTaskTrigger("task_x_1", poll_interval=60, callback_token_sha256=digest, callback_wakeups=2)
    classpath, kwargs = trigger.serialize()
    assert (kwargs["callback_token_sha256"], kwargs["callback_wakeups"]) == (digest, 2)
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    with pytest.raises(ValueError, match="hex sha256"):
        LiangxinTaskTrigger("t", callback_token_sha256="a-raw-token-not-a-hash")
    with pytest.raises(ValueError, match="callback_wakeups"):
        LiangxinTaskTrigger("t", callback_wakeups=-1)


class TestDeferralSettle:
    """Airflow 3.3 fails a task resumed before its deferral settled (apache/airflow#72716): events are held."""

    async def test_an_event_for_a_task_already_done_lands_only_after_the_settle_time(self, sim_conn, capfd):
        sim_conn.set_faults({"durations": [0, 0, 0]})
        task_id = create()
        trigger = LiangxinTaskTrigger(task_id, poll_interval=0.05, deadline=time.time() + 30, settle_seconds=0.6)
        started = time.monotonic()
        (event,) = [event.payload async for event in trigger.run()]
        assert event["status"] == "success"
        assert time.monotonic() - started >= 0.6
        assert f"LiangXin task {task_id} success: event held" in capfd.readouterr().out

    async def test_a_slow_task_is_not_held_longer(self, sim_conn, capfd):
        """The hold counts from the trigger's start: a task that ends after the settle time is not delayed."""
        sim_conn.set_faults({"durations": [0, 0, 0.8]})
        # The task's 0.8 s count from createTask, so the clock starts before it (the simulator counts whole ms).
        started = time.monotonic()
        task_id = create()
        trigger = LiangxinTaskTrigger(task_id, poll_interval=0.05, deadline=time.time() + 30, settle_seconds=0.3)
        (event,) = [event.payload async for event in trigger.run()]
        assert event["status"] == "success"
        assert 0.8 - 0.001 <= time.monotonic() - started < 1.6
        assert "event held" not in capfd.readouterr().out

    def test_default_kwarg_round_trip_and_bounds(self):
        trigger = LiangxinTaskTrigger("task_x_1")
        assert trigger.settle_seconds == 15.0
        classpath, kwargs = LiangxinTaskTrigger("task_x_1", settle_seconds=4).serialize()
        assert kwargs["settle_seconds"] == 4.0
        assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
        for bad in (-1, 61, float("nan"), float("inf"), True, "5"):
            with pytest.raises(ValueError, match="settle_seconds"):
                LiangxinTaskTrigger("t", settle_seconds=bad)
