"""Callback-driven completion on a real Airflow 3 (api-server with the receiver plugin, scheduler, triggerer) with
the simulator calling back over loopback. One stack for every callback test; runs are triggered up front.

- a callback finishes a task long before its fallback poll (120 s), with three recordInfo calls in all;
- a callback arriving right after deferral is held by the settle rule (202) and does not fail the task;
- a lost callback still finishes the task by the fallback poll;
- with the triggerer stopped, the callback alone finishes the task;
- forged/oversized/malformed callbacks get 404/413/400 and resume nothing; tokens never reach a log or XCom.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import httpx
import pytest

from tests.e2e.airflow_env import E2E_DAGS, AirflowEnv, Simulator, liangxin_airflow

pytestmark = pytest.mark.e2e

DAG = "e2e_liangxin_callback"
LOST_DAG = "e2e_liangxin_callback_lost"
SLOW_MODEL = "seedream-v5-lite"  # 20 s generation: the callback comes long after the settle time
QUICK_MODEL = "imagen4-fast"  # 1.5 s generation: the callback comes right around the deferral
RUN_TIMEOUT = 120
SETTLE = 15.0  # the default [liangxin] callback_settle_seconds


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-callbacks")
    output = tmp_path_factory.mktemp("liangxin-output")
    with liangxin_airflow(
        output_dir=output,
        home=home,
        dag_folders={"e2e-dags": E2E_DAGS},
        sim_durations="0.5,0.5,3",
        sim_faults={"models": {SLOW_MODEL: {"durations": [0.5, 0.5, 19]}, QUICK_MODEL: {"durations": [0.3, 0.3, 0.9]}}},
        callbacks=True,
    ) as (env, sim):
        env.wait_ready([DAG, LOST_DAG], timeout=180)
        failed_before = request.session.testsfailed
        yield env, sim
        if request.session.testsfailed > failed_before:
            print(f"\n===== Airflow component logs (tails)\n{env.component_tails(lines=60)}")


@pytest.fixture(scope="module")
def runs(stack) -> dict[str, tuple[str, str]]:
    env, _sim = stack
    return {
        "fast": (DAG, env.trigger(DAG, {"model": SLOW_MODEL, "prompt": "e2e callback: fast"})),
        "early": (DAG, env.trigger(DAG, {"model": QUICK_MODEL, "prompt": "e2e callback: right after deferral"})),
        "lost": (LOST_DAG, env.trigger(LOST_DAG, {"model": "seedream-v4-5", "prompt": "e2e lost [sim:no-callback]"})),
    }


def the_ti(env: AirflowEnv, run: tuple[str, str]) -> dict[str, Any]:
    (ti,) = env.task_instances(*run)
    return ti


def succeeded(env: AirflowEnv, run: tuple[str, str]) -> dict[str, Any]:
    state = env.wait_for_run(*run, timeout=RUN_TIMEOUT)
    assert state == "success", f"{run} ended {state}\n{env.failure_report(*run)}"
    ti = the_ti(env, run)
    assert ti["try_number"] == 1, ti
    return ti


def liangxin_task(env: AirflowEnv, run: tuple[str, str]) -> str:
    return env.xcom(*run, "generate", key="task_id")


def deliveries(sim: Simulator, task_id: str) -> list[dict[str, Any]]:
    return [d for d in sim.callbacks() if d["taskId"] == task_id]


def seconds_after_completion(sim: Simulator, task_id: str, ti: dict[str, Any]) -> float:
    """From LiangXin completing the task to the Airflow task instance ending."""
    completed = sim.record(task_id)["completeTime"] / 1000
    ended = datetime.datetime.fromisoformat(ti["end_date"].replace("Z", "+00:00")).timestamp()
    return ended - completed


def wait_deferred(env: AirflowEnv, run: tuple[str, str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = the_ti(env, run)
        if ti["state"] == "deferred":
            return ti
        assert ti["state"] not in ("success", "failed"), ti
        time.sleep(0.3)
    raise AssertionError(f"{run} never deferred\n{env.failure_report(*run)}")


def callback_url(env: AirflowEnv, ti_id: str, token: str) -> str:
    return f"{env.base_url}/liangxin/v1/callback/{ti_id}/{token}"


# ------------------------------------------------------------------------------------------------------ tests


def test_receiver_is_mounted_with_a_health_route(stack):
    env, _sim = stack
    response = httpx.get(f"{env.base_url}/liangxin/v1/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_callback_finishes_the_task_long_before_its_fallback_poll(stack, runs):
    env, sim = stack
    run = runs["fast"]
    ti = wait_deferred(env, run)
    task_id = liangxin_task(env, run)
    # Forged and malformed callbacks while the task waits: uniform answers, nothing resumed.
    body = json.dumps({"code": 200, "msg": "success", "data": {"taskId": task_id, "state": "success"}})
    forged = httpx.post(callback_url(env, ti["id"], "not-the-token"), content=body, timeout=10)
    unknown = httpx.post(callback_url(env, "0190c1a4-0000-7000-8000-000000000000", "x"), content=body, timeout=10)
    assert forged.status_code == unknown.status_code == 404
    assert forged.content == unknown.content
    assert httpx.post(callback_url(env, ti["id"], "x"), content=b"{}", timeout=10).status_code == 400
    big = b'{"data": {"taskId": "' + b"x" * (70 * 1024) + b'"}}'
    assert httpx.post(callback_url(env, ti["id"], "x"), content=big, timeout=10).status_code == 413
    assert the_ti(env, run)["state"] == "deferred"

    ti = succeeded(env, run)
    # One poll right after createTask, the trigger's immediate first poll, the worker's confirmation: no more.
    assert sim.stats()["recordinfo_per_task"][task_id] <= 3
    took = seconds_after_completion(sim, task_id, ti)
    assert took < 10, f"{took:.1f} s from LiangXin completing to success: not the callback"
    (delivery,) = deliveries(sim, task_id)
    assert delivery["status"] == 204, delivery
    trigger_log = "\n".join(p.read_text() for p in env.trigger_log_files(*run, "generate"))
    assert "callback expected; fallback poll every 120 s" in trigger_log, trigger_log[-2000:]
    assert "LiangXin called back and task" in env.task_log(*run, "generate", triggers=False)


def test_callback_right_after_deferral_does_not_fail_the_task(stack, runs):
    """Airflow 3.3 fails a task resumed within seconds of deferring (apache/airflow#72716); the receiver holds such
    a callback (202) until the settle time is over, and the task succeeds in its first try."""
    env, sim = stack
    run = runs["early"]
    ti = succeeded(env, run)
    task_id = liangxin_task(env, run)
    statuses = [d["status"] for d in deliveries(sim, task_id)]
    assert 202 in statuses, statuses  # arrived within the settle time of the deferral
    took = seconds_after_completion(sim, task_id, ti)
    assert took < SETTLE + 15, f"{took:.1f} s: finished by the fallback poll (120 s), not the held callback"
    mismatch = "finished with state success, but the task instance's state"
    assert mismatch not in (env.component_logs / "scheduler.log").read_text(errors="replace")


def test_lost_callback_still_finishes_by_polling(stack, runs):
    env, sim = stack
    run = runs["lost"]
    succeeded(env, run)
    task_id = liangxin_task(env, run)
    assert deliveries(sim, task_id) == []
    assert sim.stats()["recordinfo_per_task"][task_id] >= 2
    trigger_log = "\n".join(p.read_text() for p in env.trigger_log_files(*run, "generate"))
    assert "fallback poll every 5 s" in trigger_log
    assert "-> success" in trigger_log, trigger_log[-2000:]


def test_tokens_never_reach_logs_or_xcom(stack, runs):
    env, sim = stack
    for run in runs.values():
        env.wait_for_run(*run, timeout=RUN_TIMEOUT)
    tokens = {d["url"].rsplit("/", 1)[1] for d in sim.callbacks()}
    assert tokens
    files = [p for p in [*env.log_folder.rglob("*"), *env.component_logs.rglob("*")] if p.is_file()]
    leaks = [str(p) for p in files for token in tokens if token in p.read_text(errors="replace")]
    assert leaks == []
    result = env.xcom(*runs["fast"], "generate")
    assert result["param"]["callBackUrl"].endswith("/***")
    assert "/liangxin/v1/callback/" in (env.component_logs / "api-server.log").read_text(errors="replace")


def test_callback_finishes_the_task_with_the_triggerer_stopped(stack, runs):
    """Last: stops the triggerer. The deferred task's trigger never runs; the callback alone resumes it."""
    env, sim = stack
    for run in runs.values():
        env.wait_for_run(*run, timeout=RUN_TIMEOUT)
    env.stop_component("triggerer")
    run = (DAG, env.trigger(DAG, {"model": SLOW_MODEL, "prompt": "e2e callback: no triggerer"}))
    succeeded(env, run)
    task_id = liangxin_task(env, run)
    assert [d["status"] for d in deliveries(sim, task_id)][-1] in (202, 204)
    assert env.trigger_log_files(*run, "generate") == [], "a trigger ran: the triggerer was not stopped"
