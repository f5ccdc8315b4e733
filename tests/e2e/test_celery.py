"""The CeleryExecutor: ``kill -9`` a whole Celery worker while its LiangXin task is generating.

Only on the Celery stack: ``./run celery`` installs the ``celery`` extra and Debian's ``redis-server`` and sets
``LIANGXIN_E2E_EXECUTOR=celery``, so this module (and every other e2e module) runs on a Redis broker and separate
``airflow celery worker`` processes. ``./run tests`` (LocalExecutor) skips it, saying so.

A crashed Celery machine is not a crashed task process: the LocalExecutor kill test in test_real_airflow.py kills
the task runner and its supervisor reports the failure at once. Here the worker's main process, its pool and the
task runner all die together, so nobody reports anything: the task instance's heartbeats stop and the scheduler
fails it after ``[scheduler] task_instance_heartbeat_timeout`` (300 s by default, 20 s here), the retry lands on
the other worker, and the operator must resume the LiangXin task the first attempt created: one paid createTask.
"""

from __future__ import annotations

import contextlib
import json
import time

import httpx
import pytest

from tests.e2e.airflow_env import E2E_DAGS, e2e_executor, liangxin_airflow

RETRY = "e2e_liangxin_retry"
SLOW_MODEL = "nano-banana-pro"  # tests/e2e/dags/e2e_liangxin_retry.py: polls on the worker, retries=1
#: Long enough that attempt 1 is still generating when its worker dies, and attempt 2 finds it still running
#: or just finished: either way it must resume, not create.
GENERATION_SECONDS = 40
HEARTBEAT_TIMEOUT = 20
RUN_TIMEOUT = 300
CREATE = "POST /api/v1/jobs/createTask"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        e2e_executor() != "celery",
        reason="CeleryExecutor only: run by ./run celery (LIANGXIN_E2E_EXECUTOR=celery, Redis, Celery workers)",
    ),
]


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    output = tmp_path_factory.mktemp("liangxin-output")
    with liangxin_airflow(
        output_dir=output,
        home=home,
        dag_folders={"e2e-dags": E2E_DAGS},
        sim_faults={"models": {SLOW_MODEL: {"durations": [0.5, 0.5, GENERATION_SECONDS]}}},
        extra_env={
            "LIANGXIN_POLL_INTERVAL": "1",
            # Nobody reports a dead Celery machine: the scheduler finds its task instance by the missing heartbeats.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        },
        executor="celery",
        celery_workers=2,
    ) as (env, sim):
        env.wait_ready([RETRY], timeout=240)
        failed_before = request.session.testsfailed
        yield env, sim
        if request.session.testsfailed > failed_before:
            print(f"\n===== Airflow component logs (tails)\n{env.component_tails(lines=40)}")


def test_kill_9_celery_worker_retries_on_the_other_worker_and_resumes_the_same_liangxin_task(stack, record_property):
    env, sim = stack
    started = time.monotonic()
    run_id = env.trigger(RETRY)

    # Attempt 1 created its LiangXin task and polls it in a Celery worker's pool.
    liangxin_task_id, procs, ti = env.wait_first_try_polling(RETRY, run_id, timeout=180)
    worker = env.component_of(procs[0].pid)
    assert worker in env.celery_workers, f"task process {procs[0].pid} is in no Celery worker's session ({worker})"
    other = next(name for name in env.celery_workers if name != worker)
    assert sim.record(liangxin_task_id)["state"] not in ("success", "fail"), "generation ended before the kill"
    assert sim.stats()["created_per_model"].get(SLOW_MODEL) == 1

    # kill -9 the whole worker: Celery main process, pool processes (one supervises the task), the task runner.
    killed_at = time.monotonic()
    killed = env.kill_component(worker)
    assert {p.pid for p in procs} <= set(killed), (killed, [p.pid for p in procs])
    assert env.task_processes(ti["id"]) == []

    # The scheduler notices the silence (heartbeat timeout) and the retry starts on the surviving worker.
    retry_started = None
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        ti = env.task_instances(RETRY, run_id)[0]
        if retry_started is None and ti["try_number"] == 2 and ti["state"] in ("running", "success"):
            retry_started = time.monotonic()
        if env.run_state(RETRY, run_id) in ("success", "failed"):
            break
        time.sleep(1)
    state = env.wait_for_run(RETRY, run_id, timeout=10)
    finished_at = time.monotonic()
    stats = sim.stats()
    created = stats["created_per_model"].get(SLOW_MODEL, 0)
    result_task_id = None
    with contextlib.suppress(httpx.HTTPError):  # no result XCom when the run failed: reported, then asserted
        result_task_id = env.xcom(RETRY, run_id, "generate")["task_id"]
    record_property(
        "celery_kill",
        json.dumps(
            {
                "killed_worker": worker,
                "killed_processes": len(killed),
                "retry_worker": other,
                "create_task_calls": created,
                "same_task_id": result_task_id == liangxin_task_id,
                "final_state": state,
                "try_number": ti["try_number"],
                "kill_to_retry_s": round(retry_started - killed_at, 1) if retry_started else None,
                "total_s": round(finished_at - started, 1),
                "heartbeat_timeout_s": HEARTBEAT_TIMEOUT,
            }
        ),
    )

    assert state == "success", env.failure_report(RETRY, run_id)
    assert ti["try_number"] == 2, ti
    assert retry_started is not None
    # Found by its missing heartbeats, as Airflow's event log says, not by anyone reporting the death.
    events = env.get("/eventLogs", params={"dag_id": RETRY, "event": "heartbeat timeout", "limit": 100})
    assert events["total_entries"] == 1, events
    first, second = (env.task_log(RETRY, run_id, "generate", attempt) for attempt in (1, 2))
    assert f"LiangXin task {liangxin_task_id} created" in first, first[-3000:]
    assert "Resuming LiangXin task" in second, second[-3000:]
    assert liangxin_task_id in second
    assert result_task_id == liangxin_task_id
    # Attempt 2 ran on the surviving worker (the killed one is gone), as a separate Celery process.
    other_log = (env.component_logs / f"{other}.log").read_text(errors="replace")
    assert f"run_id='{run_id}', try_number=2" in other_log, other_log[-3000:]
    # One paid generation for two attempts.
    assert created == 1
    assert stats["requests"][CREATE] == {"200": 1}, stats["requests"][CREATE]
