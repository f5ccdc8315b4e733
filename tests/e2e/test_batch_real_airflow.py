"""LiangxinBatchCreateTaskOperator on a real Airflow 3 (scheduler, triggerer, LocalExecutor) against the simulator.

One stack for every batch e2e test, all runs triggered up front: a deferred batch with a failing item, and the
worker killed with SIGKILL mid-creation and mid-wait, counting createTask calls at the simulator.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.e2e.airflow_env import E2E_DAGS, AirflowEnv, Simulator, liangxin_airflow, local_path

pytestmark = pytest.mark.e2e

DEFERRED, KILL_CREATE, KILL_WAIT = "e2e_batch_deferred", "e2e_batch_kill_create", "e2e_batch_kill_wait"
TRIGGERER_RESTART = "e2e_batch_triggerer_restart"
CREATE_MODEL, THROTTLED_MODEL, WAIT_MODEL = "seedream-v4-5", "z-image", "flux-2-pro"
TRIGGER_MODEL = "nano-banana-pro"
#: z-image's createTask answers 429 (Retry-After 2 s) until the kill-create test lifts it; flux-2-pro runs 20 s,
#: nano-banana-pro 15 s (time to restart the triggerer while the batch is deferred).
LONG_WAIT = {WAIT_MODEL: {"durations": [0.5, 0.5, 20]}, TRIGGER_MODEL: {"durations": [0.5, 0.5, 15]}}
FAULTS = {"models": {THROTTLED_MODEL: {"rate_limit_rate": 1.0, "retry_after": 2}, **LONG_WAIT}}
RUN_TIMEOUT = 150


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-batch")
    output = tmp_path_factory.mktemp("liangxin-batch-output")
    with liangxin_airflow(
        output_dir=output,
        home=home,
        dag_folders={"e2e-dags": E2E_DAGS},
        sim_durations="0.5,0.5,3",
        sim_faults=FAULTS,
        # A killed triggerer's triggers go to a live one once its heartbeat is this old (default 30 s).
        extra_env={"AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5"},
    ) as (env, sim):
        env.wait_ready([DEFERRED, KILL_CREATE, KILL_WAIT, TRIGGERER_RESTART], timeout=180)
        failed_before = request.session.testsfailed
        yield env, sim, output
        if request.session.testsfailed > failed_before:
            print(f"\n===== Airflow component logs (tails)\n{env.component_tails(lines=40)}")


@pytest.fixture(scope="module")
def runs(stack) -> dict[str, str]:
    env, _sim, _output = stack
    return {dag_id: env.trigger(dag_id) for dag_id in (DEFERRED, KILL_CREATE, KILL_WAIT, TRIGGERER_RESTART)}


def finished(env: AirflowEnv, dag_id: str, run_id: str, expected: str = "success") -> None:
    state = env.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    assert state == expected, f"{dag_id} ended {state}\n{env.failure_report(dag_id, run_id)}"


def tasks_by_prompt(sim: Simulator, prefix: str) -> Counter[str]:
    """LiangXin tasks the simulator created, per prompt, for prompts starting with ``prefix``."""
    seen: Counter[str] = Counter()
    for task_id in sim.stats()["task_ids"]:
        prompt = sim.record(task_id)["param"]["input"]["prompt"]
        if prompt.startswith(prefix):
            seen[prompt] += 1
    return seen


def _running_worker(env: AirflowEnv, dag_id: str, run_id: str) -> list[Any]:
    """The processes of try 1 of the run's only task, while it runs."""
    ti = env.task_instances(dag_id, run_id)[0]
    if ti["state"] == "running" and ti["try_number"] == 1:
        return env.task_processes(ti["id"])
    return []


@pytest.fixture(scope="module")
def kills(stack, runs) -> dict[str, dict[str, Any]]:
    """Watch both kill runs at once (they run side by side) and SIGKILL each worker at its moment:

    * kill-create: this DAG's 6 seedream items are created and the worker pauses on the throttled model's 429s
      (Retry-After 2 s: no createTask on the wire for most of each pause); then LiangXin "recovers".
    * kill-wait: all 5 flux items are created and the worker polls them (20 s generations).
    * triggerer restart: the batch is deferred (its trigger has logged) and its 4 tasks run: the triggerer's
      process group is killed with SIGKILL and a new triggerer started.
    """
    env, sim, _output = stack
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 120
    while len(seen) < 3 and time.monotonic() < deadline:
        stats = sim.stats()
        if KILL_CREATE not in seen:
            throttled = stats["requests"].get("POST /api/v1/jobs/createTask", {}).get("429", 0)
            if throttled >= 2 and tasks_by_prompt(sim, "e2e kill-create").total() >= 6:
                procs = _running_worker(env, KILL_CREATE, runs[KILL_CREATE])
                if procs:
                    for proc in procs:
                        proc.send_signal(signal.SIGKILL)
                    seen[KILL_CREATE] = {"tasks": tasks_by_prompt(sim, "e2e kill-create")}
                    set_faults(sim, {"models": LONG_WAIT})  # LiangXin recovers: z-image accepted again
        if KILL_WAIT not in seen and stats["created_per_model"].get(WAIT_MODEL, 0) >= 5:
            procs = _running_worker(env, KILL_WAIT, runs[KILL_WAIT])
            if procs:
                ids = _ids_of(sim, "e2e kill-wait")
                for proc in procs:
                    proc.send_signal(signal.SIGKILL)
                seen[KILL_WAIT] = {"states": [sim.record(t)["state"] for t in ids]}
        if TRIGGERER_RESTART not in seen and stats["created_per_model"].get(TRIGGER_MODEL, 0) >= 4:
            ti = env.task_instances(TRIGGERER_RESTART, runs[TRIGGERER_RESTART])[0]
            if ti["state"] == "deferred" and env.trigger_log_files(
                TRIGGERER_RESTART, runs[TRIGGERER_RESTART], "generate"
            ):
                old = env.procs["triggerer"]
                os.killpg(old.pid, signal.SIGKILL)
                old.wait(timeout=10)
                env._spawn("triggerer", ["triggerer", "--skip-serve-logs"])
                seen[TRIGGERER_RESTART] = {"states": [sim.record(t)["state"] for t in _ids_of(sim, "e2e triggerer")]}
        for dag_id in (KILL_CREATE, KILL_WAIT, TRIGGERER_RESTART):
            if dag_id not in seen:
                assert env.run_state(dag_id, runs[dag_id]) not in ("success", "failed"), env.failure_report(
                    dag_id, runs[dag_id]
                )
        time.sleep(0.3)
    assert len(seen) == 3, f"not killed in time: {sorted(seen)}"
    return seen


def set_faults(sim: Simulator, faults: dict[str, Any]) -> None:
    httpx.post(f"{sim.base_url}/_sim/faults", json=faults, timeout=10).raise_for_status()


def test_deferred_batch_with_one_failure_within_max_failed(stack, runs, kills):
    """(``kills`` first: the kill runs start with this one and must be caught mid-flight.)"""
    env, sim, output = stack
    run_id = runs[DEFERRED]
    finished(env, DEFERRED, run_id)
    results = env.xcom(DEFERRED, run_id, "generate")
    assert [r["index"] for r in results] == list(range(8))
    assert [r["state"] for r in results] == ["success"] * 7 + ["fail"]
    assert results[7]["fail_msg"] == "simulated generation failure"
    for r in results[:7]:
        stored = local_path(r["stored"][0]["path"])
        assert stored.parent == output
        assert stored.read_bytes().startswith(b"\x89PNG")
    # Each item exactly once at LiangXin, and its task made for its own prompt.
    assert set(tasks_by_prompt(sim, "e2e deferred batch").values()) == {1}
    assert [sim.record(r["task_id"])["param"]["input"]["prompt"] for r in results[:7]] == [
        f"e2e deferred batch {i}" for i in range(7)
    ]
    # One trigger per wave (max_in_flight=3 for 8 items): the worker starts once and is resumed per wave, not once
    # per item (every task-process start opens a "Pre Execute" group in the attempt's log).
    text = "\n".join(p.read_text(errors="replace") for p in env.trigger_log_files(DEFERRED, run_id, "generate"))
    assert "LiangxinBatchTrigger" in text
    starts = env.task_log(DEFERRED, run_id, "generate", triggers=False).count("::group::Pre Execute")
    assert 2 <= starts <= 6, starts
    worker_log = env.task_log(DEFERRED, run_id, "generate", triggers=False)
    assert "LiangXin batch done: 7 of 8 items succeeded" in worker_log, worker_log[-3000:]
    assert sim.api_key not in text + worker_log


def test_worker_killed_mid_creation_resumes_without_paying_twice(stack, runs, kills):
    env, sim, _output = stack
    run_id = runs[KILL_CREATE]
    before_kill = kills[KILL_CREATE]["tasks"]
    assert sum(before_kill.values()) == 6, before_kill  # the throttled model's 4 were never created

    finished(env, KILL_CREATE, run_id)
    ti = env.task_instances(KILL_CREATE, run_id)[0]
    assert ti["try_number"] == 2, ti
    results = env.xcom(KILL_CREATE, run_id, "generate")
    assert [r["state"] for r in results] == ["success"] * 10
    assert all(r["creations"] == 1 for r in results)
    # Every item exactly once at LiangXin: the 6 created before the kill were resumed, not created again.
    after = tasks_by_prompt(sim, "e2e kill-create")
    assert len(after) == 10
    assert set(after.values()) == {1}, after
    second = env.task_log(KILL_CREATE, run_id, "generate", 2, triggers=False)
    assert "Resuming a batch of 10 items from earlier attempts" in second, second[-3000:]


def test_worker_killed_mid_wait_resumes_without_creating(stack, runs, kills):
    env, sim, _output = stack
    run_id = runs[KILL_WAIT]
    states = kills[KILL_WAIT]["states"]
    assert len(states) == 5
    assert not {"success", "fail"} & set(states), states  # killed while the tasks were still generating

    finished(env, KILL_WAIT, run_id)
    ti = env.task_instances(KILL_WAIT, run_id)[0]
    assert ti["try_number"] == 2, ti
    results = env.xcom(KILL_WAIT, run_id, "generate")
    assert [r["state"] for r in results] == ["success"] * 5
    assert sim.stats()["created_per_model"][WAIT_MODEL] == 5  # not one more
    assert set(tasks_by_prompt(sim, "e2e kill-wait").values()) == {1}
    assert sorted(r["task_id"] for r in results) == sorted(_ids_of(sim, "e2e kill-wait"))


def _ids_of(sim: Simulator, prefix: str) -> list[str]:
    return [t for t in sim.stats()["task_ids"] if sim.record(t)["param"]["input"]["prompt"].startswith(prefix)]


def test_triggerer_restart_while_deferred_resumes_without_creating(stack, runs, kills):
    env, sim, _output = stack
    run_id = runs[TRIGGERER_RESTART]
    states = kills[TRIGGERER_RESTART]["states"]
    assert len(states) == 4
    assert not {"success", "fail"} & set(states), states  # the triggerer died while the tasks ran
    finished(env, TRIGGERER_RESTART, run_id)
    results = env.xcom(TRIGGERER_RESTART, run_id, "generate")
    assert [r["state"] for r in results] == ["success"] * 4
    assert sim.stats()["created_per_model"][TRIGGER_MODEL] == 4
