"""LiangxinBatchCreateTaskOperator on a real Airflow 3 (scheduler, triggerer, LocalExecutor) against the simulator.

One stack for every batch e2e test, all runs triggered up front: a deferred batch with a failing item, and the
worker killed with SIGKILL mid-creation and mid-wait, counting createTask calls at the simulator.

The same stack serves the result view's tests (the plugin's ``/liangxin/v1/results``, docs/result-view.md): it
runs with real logins (SimpleAuthManager users, plus per-DAG read rules from ``tests.support.dag_scoped_auth``), so
the view is asked anonymously (401), by a user without access to the DAG (403) and by one with it, for a stored
single image, one not stored, a failed task and the batch above.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

from tests.e2e.airflow_env import E2E_DAGS, REPO_ROOT, AirflowEnv, Simulator, liangxin_airflow, local_path

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
VIEW = "e2e_result_view"
#: reader may read the result view's and the deferred batch's DAGs; outsider only a DAG of no interest here.
USERS = {"reader": "viewer", "outsider": "viewer"}
SCOPES = f"reader={VIEW}|{DEFERRED};outsider=e2e_smoke"


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
        extra_env={
            # A killed triggerer's triggers go to a live one once its heartbeat is this old (default 30 s).
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
            # The result view's tests: real logins, per-DAG read rules.
            "AIRFLOW__CORE__AUTH_MANAGER": "tests.support.dag_scoped_auth.DagScopedAuthManager",
            "LIANGXIN_TEST_DAG_SCOPES": SCOPES,
            "PYTHONPATH": str(REPO_ROOT),
        },
        users=USERS,
    ) as (env, sim):
        env.wait_ready([DEFERRED, KILL_CREATE, KILL_WAIT, TRIGGERER_RESTART, VIEW], timeout=180)
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


# ----------------------------------------------------------------------------------------------- the result view


@pytest.fixture(scope="module")
def view_runs(stack, kills) -> dict[str, str]:
    """Triggered once the kills are done, so they never add load to the kill tests' timing windows."""
    env, _sim, _output = stack
    return {
        "stored": env.trigger(VIEW, {"prompt": "e2e view: stored"}),
        "unstored": env.trigger(VIEW, {"prompt": "e2e view: not stored", "output_path": ""}, unpause=False),
        "failed": env.trigger(VIEW, {"prompt": "e2e view: failed [sim:fail]"}, unpause=False),
    }


def view(env: AirflowEnv, dag_id: str, run_id: str, *, token: str | None, **params: Any) -> httpx.Response:
    """The result view (or ``route`` below it) as the browser asks it: the UI's login cookie, or nothing."""
    route = params.pop("route", "")
    query = {"dag_id": dag_id, "run_id": run_id, "task_id": "generate", **params}
    cookies = {"_token": token} if token else None
    return httpx.get(
        f"{env.base_url}/liangxin/v1/results{route}", params=query, cookies=cookies, timeout=60, follow_redirects=False
    )


def test_result_view_auth_single_failed_and_unstored(stack, view_runs):
    env, sim, _output = stack
    runs = view_runs
    for key in ("stored", "unstored", "failed"):
        finished(env, VIEW, runs[key], "failed" if key == "failed" else "success")
    reader, outsider = env.token("reader"), env.token("outsider")
    stored_run = runs["stored"]

    # The extra link names the view, same origin, for a success and a failure alike.
    for key in ("stored", "failed"):
        links = env.get(f"/dags/{VIEW}/dagRuns/{runs[key]}/taskInstances/generate/links")
        assert links["extra_links"]["LiangXin result"] == (
            f"/liangxin/v1/results?dag_id={VIEW}&run_id={quote_plus(runs[key])}&task_id=generate&map_index=-1"
        )

    # Auth: no login, 401 (page and file); a login without access to this DAG, 403; with access, the page.
    for route, extra in (("", {}), ("/file", {"item": 0, "index": 0})):
        assert view(env, VIEW, stored_run, token=None, route=route, **extra).status_code == 401
        assert view(env, VIEW, stored_run, token=outsider, route=route, **extra).status_code == 403
    page = view(env, VIEW, stored_run, token=reader)
    assert page.status_code == 200, page.text
    result = env.xcom(VIEW, stored_run, "generate")
    stored = result["stored"][0]
    for shown in (result["task_id"], "seedream-v4-5", "e2e view: stored", stored["path"], '"aspect_ratio": "16:9"'):
        assert shown in page.text
    image = view(env, VIEW, stored_run, token=reader, route="/file", item=0, index=0)
    assert image.status_code == 200
    assert image.content == local_path(stored["path"]).read_bytes()
    assert image.headers["content-type"] == "image/png"
    thumb = view(env, VIEW, stored_run, token=reader, route="/file", item=0, index=0, thumb=1)
    assert thumb.headers["content-type"] == "image/jpeg"
    assert len(thumb.content) < len(image.content)
    # The Bearer header works as for /api/v2; the API key appears nowhere.
    by_header = httpx.get(
        f"{env.base_url}/liangxin/v1/results",
        params={"dag_id": VIEW, "run_id": stored_run, "task_id": "generate"},
        headers={"Authorization": f"Bearer {reader}"},
        timeout=60,
    )
    assert by_header.status_code == 200
    assert sim.api_key not in page.text + by_header.text

    # Not stored: the image is LiangXin's result URL, reached by a redirect.
    unstored = env.xcom(VIEW, runs["unstored"], "generate")
    assert "stored" not in unstored
    moved = view(env, VIEW, runs["unstored"], token=reader, route="/file", item=0, index=0)
    assert moved.status_code == 302
    assert moved.headers["location"] == unstored["result_urls"][0]
    assert httpx.get(moved.headers["location"], timeout=30).content.startswith(b"\x89PNG")

    # Failed: LiangXin's failCode and failMsg.
    failed = view(env, VIEW, runs["failed"], token=reader, format="json").json()
    (item,) = failed["items"]
    assert (item["state"], item["fail_msg"]) == ("fail", "simulated generation failure")
    assert item["fail_code"]
    page = view(env, VIEW, runs["failed"], token=reader).text
    assert "failCode" in page
    assert "simulated generation failure" in page


def test_result_view_batch_grid(stack, runs, kills):
    env, _sim, _output = stack
    run_id = runs[DEFERRED]
    finished(env, DEFERRED, run_id)
    reader, outsider = env.token("reader"), env.token("outsider")
    assert view(env, DEFERRED, run_id, token=outsider).status_code == 403
    data = view(env, DEFERRED, run_id, token=reader, format="json").json()
    assert data["kind"] == "batch"
    assert [i["state"] for i in data["items"]] == ["success"] * 7 + ["fail"]
    grid = view(env, DEFERRED, run_id, token=reader).text
    assert "8 items: 7 succeeded, 1 not" in grid
    assert grid.count('loading="lazy"') == 7
    thumbs = [view(env, DEFERRED, run_id, token=reader, route="/file", item=i, index=0, thumb=1) for i in range(7)]
    assert {t.headers["content-type"] for t in thumbs} == {"image/jpeg"}
    assert view(env, DEFERRED, run_id, token=reader, route="/file", item=7, index=0).status_code == 404
    links = env.get(f"/dags/{DEFERRED}/dagRuns/{run_id}/taskInstances/generate/links")
    assert links["extra_links"]["LiangXin result"].startswith(f"/liangxin/v1/results?dag_id={DEFERRED}&")
