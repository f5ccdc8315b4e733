"""LiangxinTaskSensor against the simulator: poke, deferrable, failure and soft_fail."""

from __future__ import annotations

import time

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_liangxin._api import LiangxinError
from airflow_provider_liangxin.events import LiangxinTaskWaitException, make_event
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
from airflow_provider_liangxin.sensors.liangxin import LiangxinTaskSensor
from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger
from tests.conftest import liangxin_conn_json
from tests.support.airflow_context import make_context


def create(prompt: str = "a quiet harbour") -> str:
    hook = LiangxinHook()
    try:
        return hook.create_task("z-image", {"prompt": prompt})
    finally:
        hook.close()


def sensor(task_id: str, **kwargs) -> LiangxinTaskSensor:
    return LiangxinTaskSensor(task_id="wait", liangxin_task_id=task_id, poke_interval=0.05, timeout=20, **kwargs)


def test_templated_fields():
    assert "liangxin_task_id" in LiangxinTaskSensor.template_fields


def test_poke_is_false_while_running_then_returns_the_result(sim_conn):
    task_id = create()
    assert sensor(task_id).poke(make_context()) is False
    result = sensor(task_id).execute(make_context())
    assert result["task_id"] == task_id
    assert result["state"] == "success"
    assert result["result_urls"]


def test_failed_task_fails_the_sensor(sim_conn):
    task_id = create("x [sim:fail:500:generation crashed]")
    time.sleep(0.5)
    with pytest.raises(AirflowFailException, match="generation crashed"):
        sensor(task_id).execute(make_context())


def test_soft_fail_skips_on_failed_task(sim_conn):
    task_id = create("x [sim:fail]")
    time.sleep(0.5)
    with pytest.raises(AirflowSkipException):
        sensor(task_id, soft_fail=True).execute(make_context())


def test_empty_task_id_is_a_clear_error(sim_conn):
    with pytest.raises(AirflowFailException, match="rendered empty"):
        sensor("None").execute(make_context())


def test_deferrable_defers_to_the_shared_trigger(sim_conn):
    task_id = create("forever [sim:never]")
    with pytest.raises(TaskDeferred) as info:
        sensor(task_id, deferrable=True).execute(make_context())
    trigger = info.value.trigger
    assert isinstance(trigger, LiangxinTaskTrigger)
    kwargs = trigger.serialize()[1]
    assert kwargs["liangxin_task_id"] == task_id
    assert kwargs["poll_interval"] == 0.05
    assert kwargs["deadline"] == pytest.approx(time.time() + 20, abs=2)
    assert kwargs["settle_seconds"] == 0.0  # [liangxin] deferral_settle_seconds (tests/conftest.py sets 0)


def test_deferral_carries_the_configured_settle_time(sim_conn, monkeypatch):
    monkeypatch.setenv("AIRFLOW__LIANGXIN__DEFERRAL_SETTLE_SECONDS", "7")
    task_id = create("forever [sim:never]")
    with pytest.raises(TaskDeferred) as info:
        sensor(task_id, deferrable=True).execute(make_context())
    assert info.value.trigger.serialize()[1]["settle_seconds"] == 7.0


def test_deferrable_on_finished_task_returns_without_deferring(sim_conn):
    task_id = create()
    time.sleep(0.6)
    assert sensor(task_id, deferrable=True).execute(make_context())["state"] == "success"


def test_execute_complete_shares_the_operator_semantics(sim_conn):
    with pytest.raises(Exception, match="LiangXin task t1 failed"):
        sensor("t1", deferrable=True).execute_complete(make_context(), make_event("fail", "t1", "x"))
    with pytest.raises(Exception, match="unknown event status"):
        sensor("t1", deferrable=True).execute_complete(make_context(), {"status": "weird"})


def test_deferrable_precheck_respects_soft_fail(sim_conn):
    task_id = create("x [sim:fail]")
    time.sleep(0.5)
    with pytest.raises(AirflowSkipException):
        sensor(task_id, deferrable=True, soft_fail=True).execute(make_context())
    with pytest.raises(AirflowFailException):
        sensor(task_id, deferrable=True).execute(make_context())


@pytest.mark.parametrize(
    ("event", "exc"),
    [
        (make_event("fail", "t1", "x"), AirflowFailException),
        (make_event("timeout", "t1", "the wait timeout has passed"), AirflowSensorTimeout),
    ],
)
def test_deferred_outcomes_raise_the_same_types_as_poke_mode(sim_conn, event, exc):
    with pytest.raises(exc, match="t1"):
        sensor("t1", deferrable=True).execute_complete(make_context(), event)


def test_deferred_api_error_fails_like_poke_mode_even_with_soft_fail(sim_conn):
    s = sensor("t1", deferrable=True, soft_fail=True)
    with pytest.raises(LiangxinTaskWaitException, match="invalid token") as info:
        s.resume_execution("execute_complete", {"event": make_event("error", "t1", "invalid token")}, make_context())
    # An Airflow-side outcome, not a wire-protocol error
    assert not isinstance(info.value, LiangxinError)


def test_poke_api_error_is_not_skipped_by_soft_fail(simulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(simulator.base_url, "sk-wrong"))
    with pytest.raises(LiangxinError, match="invalid token"):
        sensor("task_x_1", soft_fail=True, retry={"max_attempts": 1}).execute(make_context())


@pytest.mark.parametrize("deferrable", [False, True])
def test_never_fail_skips_an_api_error_in_every_mode(simulator, monkeypatch, deferrable):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(simulator.base_url, "sk-wrong"))
    with pytest.raises(AirflowSkipException):
        sensor("task_x_1", never_fail=True, deferrable=deferrable, retry={"max_attempts": 1}).execute(make_context())


def test_never_fail_skips_a_deferred_wait_error(sim_conn):
    s = sensor("t1", deferrable=True, never_fail=True)
    with pytest.raises(AirflowSkipException):
        s.resume_execution("execute_complete", {"event": make_event("error", "t1", "boom")}, make_context())


def test_deferrable_passes_execution_deadline(sim_conn):
    from datetime import timedelta

    task_id = create("forever [sim:never]")
    with pytest.raises(TaskDeferred) as info:
        sensor(task_id, deferrable=True, execution_timeout=timedelta(seconds=90)).execute(make_context())
    assert info.value.trigger.serialize()[1]["execution_deadline"] == pytest.approx(time.time() + 90, abs=3)


def test_soft_fail_applies_to_deferred_resume(sim_conn):
    s = sensor("t1", deferrable=True, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        s.resume_execution("execute_complete", {"event": make_event("fail", "t1", "x")}, make_context())


# --------------------------------------------------------------------------------------------- hardening


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"poke_interval": float("inf")}, "poke_interval"),
        ({"timeout": float("inf")}, "timeout"),
        ({"request_timeout": float("nan")}, "request_timeout"),
        ({"request_timeout": True}, "request_timeout"),
        ({"max_error_duration": float("inf")}, "max_error_duration"),
        ({"retry": {"backoff_max": float("nan")}}, "backoff_max"),
    ],
)
def test_non_finite_numbers_fail_at_parse_time(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LiangxinTaskSensor(task_id="wait", liangxin_task_id="t1", **{"poke_interval": 1, "timeout": 60, **kwargs})


def test_poke_never_outlasts_the_sensor_timeout_inside_a_slow_request(sim_conn):
    task_id = create("slow answers [sim:never]")
    sim_conn.set_faults({"slow_rate": 1.0, "slow_seconds": 4})
    s = LiangxinTaskSensor(
        task_id="wait",
        liangxin_task_id=task_id,
        poke_interval=0.05,
        timeout=1,
        request_timeout=30,
        retry={"max_attempts": 1},
    )
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout):
        s.execute(make_context())
    assert time.monotonic() - started < 2.5  # not the 4 s the server takes to answer


def test_poke_mode_rides_out_an_outage_shorter_than_max_error_duration(scripted_conn):
    from tests.support.scripted_server import Reply, ok, record

    outage = [Reply(500, {"code": 500, "msg": "upstream down", "data": None}) for _ in range(10)]
    scripted_conn.script(*outage, ok(record("task_seedream-v4-5_1", "success")))
    s = sensor("task_seedream-v4-5_1", retry={"max_attempts": 1}, max_error_duration=5)
    assert s.execute(make_context())["state"] == "success"


def test_poke_mode_fails_an_outage_longer_than_max_error_duration(scripted_conn):
    from tests.support.scripted_server import Reply

    scripted_conn.script(*[Reply(500, {"code": 500, "msg": "upstream down", "data": None}, delay=0.2)] * 10)
    s = sensor("task_seedream-v4-5_1", retry={"max_attempts": 1}, max_error_duration=0.5, soft_fail=True)
    with pytest.raises(LiangxinTaskWaitException, match=r"max_error_duration=0\.5 s"):
        s.execute(make_context())
