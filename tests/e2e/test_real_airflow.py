"""The example DAGs on a real Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite)
against the LiangXin simulator, all on loopback.

``dag.test()`` runs triggers inline and hides what users hit in production (sync calls in the triggerer, trigger
kwargs that do not serialize, XCom cleared between attempts), so these tests use the real components.
All runs are triggered up front (``runs`` fixture) and checked one by one: the module takes about as long as its
slowest run, not the sum of them.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from typing import Any
from urllib.parse import quote_plus

import pytest

from tests.e2e.airflow_env import E2E_DAGS, EXAMPLE_DAGS, AirflowEnv, liangxin_airflow, local_path

pytestmark = pytest.mark.e2e

SINGLE = "liangxin_seedream_single"
BATCH = "liangxin_content_batch"
RETRY = "e2e_liangxin_retry"
SMOKE = "e2e_smoke"
RACE = "e2e_liangxin_mapped_race"
RACE_N = 24
QUICK_MODEL = "imagen4-ultra"  # see tests/e2e/dags/e2e_liangxin_race.py
#: The scheduler's words when it fails a task resumed before its deferral settled (apache/airflow#72716).
RACE_SYMPTOM = "but the task instance's state attribute is"
FAIL_MSG = "simulated generation failure"
SLOW_MODEL = "nano-banana-pro"  # see tests/e2e/dags/e2e_liangxin_retry.py
#: The content-batch sensor variant's model here: its tasks take 15 s, so every sensor is still waiting when it
#: starts (with 3 s, a worker started late under load found the task done and, rightly, never deferred).
SENSOR_MODEL = "imagen4-fast"
SINGLE_PROMPT = "e2e: a red fox asleep in fresh snow, morning light"
FAIL_PROMPT = "e2e: this one breaks [sim:fail]"
RUN_TIMEOUT = 150


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    """Simulator + Airflow, started once for the module and torn down (whole process groups) even on failure."""
    home = tmp_path_factory.mktemp("airflow")
    output = tmp_path_factory.mktemp("liangxin-output")
    started = time.monotonic()
    with liangxin_airflow(
        output_dir=output,
        home=home,
        dag_folders={"dags-folder": EXAMPLE_DAGS, "e2e-dags": E2E_DAGS},
        # Short, deterministic lifecycles (4 s) so tasks really defer; a long one for the worker-kill test.
        sim_durations="0.5,0.5,3",
        sim_faults={
            "models": {
                SLOW_MODEL: {"durations": [0.5, 0.5, 20]},
                SENSOR_MODEL: {"durations": [0.5, 0.5, 15]},
                QUICK_MODEL: {"durations": [0, 0, 0.5]},
            }
        },
        extra_env={"LIANGXIN_POLL_INTERVAL": "1"},
    ) as (env, sim):
        env.wait_ready([SINGLE, BATCH, RETRY, SMOKE, RACE], timeout=180)
        print(f"\nAirflow ready in {time.monotonic() - started:.1f}s ({env.timings}); home {env.home}")
        failed_before = request.session.testsfailed
        yield env, sim, output
        if request.session.testsfailed > failed_before:
            print(f"\n===== Airflow component logs (tails)\n{env.component_tails(lines=40)}")


#: The runs the ``smoke`` tests wait for (``./run compat`` runs ``-m smoke`` on every Airflow 3 minor).
SMOKE_RUNS = ("smoke", "single", "fail")


@pytest.fixture(scope="module")
def runs(stack, request) -> dict[str, tuple[str, str]]:
    """Every run of the module, triggered at once: name -> (dag_id, run_id). When only ``smoke`` tests of the
    module are selected, only their runs are triggered (the others would only load the machine)."""
    env, _sim, _output = stack
    selected = [item for item in request.session.items if item.module is request.module]
    only_smoke = all(item.get_closest_marker("smoke") for item in selected)
    planned: dict[str, tuple[str, dict[str, Any] | None]] = {
        "smoke": (SMOKE, None),
        "retry": (RETRY, None),
        "single": (SINGLE, {"prompt": SINGLE_PROMPT, "aspect_ratio": "1:1"}),
        "fail": (SINGLE, {"prompt": FAIL_PROMPT}),
        # the DAG's default params: 3 prompts x 2 models, mapped and as one batch, + 3 via sensor
        "batch": (BATCH, {"sensor_model": SENSOR_MODEL}),
        "race": (RACE, {"n": RACE_N, "tag": "e2e"}),
    }
    return {
        name: (dag_id, env.trigger(dag_id, conf))
        for name, (dag_id, conf) in planned.items()
        if name in SMOKE_RUNS or not only_smoke
    }


def finished(env: AirflowEnv, run: tuple[str, str], expected: str = "success") -> str:
    dag_id, run_id = run
    state = env.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    assert state == expected, f"{dag_id} run ended {state}, expected {expected}\n{env.failure_report(dag_id, run_id)}"
    return run_id


def tis_by_task(env: AirflowEnv, dag_id: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for ti in sorted(env.task_instances(dag_id, run_id), key=lambda t: (t["task_id"], t["map_index"])):
        grouped.setdefault(ti["task_id"], []).append(ti)
    return grouped


def assert_png(path) -> None:
    from PIL import Image

    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG", path
        image.verify()


def assert_deferred_in_triggerer(env: AirflowEnv, dag_id: str, run_id: str, task_id: str, map_index: int = -1):
    """The trigger ran in the triggerer: its log lands next to the task log as attempt=1.log.trigger.N.log."""
    files = env.trigger_log_files(dag_id, run_id, task_id, 1, map_index)
    assert files, f"{task_id}[{map_index}] never deferred (no trigger log)\n{env.failure_report(dag_id, run_id)}"
    text = "\n".join(f.read_text(errors="replace") for f in files)
    assert "LiangxinTaskTrigger" in text, text[-3000:]
    return text


# ------------------------------------------------------------------------------------------------------ tests


@pytest.mark.smoke
def test_harness_defers_a_core_trigger(stack, runs):
    """Sanity check of the harness itself (scheduler, executor, triggerer) with a trigger from Airflow core."""
    env, _sim, _output = stack
    run_id = finished(env, runs["smoke"])
    assert env.trigger_log_files(SMOKE, run_id, "wait"), "the core DateTimeTrigger never reached the triggerer"


def test_retry_after_worker_kill_resumes_the_same_liangxin_task(stack, runs):
    # Early in the module: attempt 1 must still be generating (20 s) when this test looks for its worker, while
    # the other runs, triggered at the same moment, are waited for by the tests after it.
    env, sim, _output = stack
    dag_id, run_id = runs["retry"]

    # Wait until attempt 1 created its LiangXin task and is polling for it on the worker.
    liangxin_task_id, procs, ti = env.wait_first_try_polling(dag_id, run_id, timeout=90)
    assert sim.record(liangxin_task_id)["state"] not in ("success", "fail"), "generation ended before the kill"

    for proc in procs:
        proc.send_signal(signal.SIGKILL)

    finished(env, (dag_id, run_id))
    ti = env.task_instances(dag_id, run_id)[0]
    assert ti["try_number"] == 2, ti
    first, second = (env.task_log(dag_id, run_id, "generate", attempt) for attempt in (1, 2))
    assert f"LiangXin task {liangxin_task_id} created" in first, first[-3000:]
    assert "Resuming LiangXin task" in second, second[-3000:]
    assert liangxin_task_id in second
    assert env.xcom(dag_id, run_id, "generate")["task_id"] == liangxin_task_id
    # One paid generation, not two.
    assert sim.stats()["created_per_model"].get(SLOW_MODEL) == 1


@pytest.mark.smoke
def test_seedream_single_defers_and_stores_a_png(stack, runs):
    env, sim, output = stack
    run_id = finished(env, runs["single"])

    result = env.xcom(SINGLE, run_id, "generate_image")
    liangxin_task_id = env.xcom(SINGLE, run_id, "generate_image", key="task_id")
    assert result["task_id"] == liangxin_task_id
    assert result["state"] == "success"
    assert liangxin_task_id in sim.stats()["task_ids"]
    # The templated prompt reached LiangXin as rendered from the run's conf.
    assert sim.record(liangxin_task_id)["param"]["input"] == {"prompt": SINGLE_PROMPT, "aspect_ratio": "1:1"}

    trigger_log = assert_deferred_in_triggerer(env, SINGLE, run_id, "generate_image")
    assert liangxin_task_id in trigger_log

    image = local_path(env.xcom(SINGLE, run_id, "report_image"))
    assert image == local_path(result["stored"][0]["path"])
    assert image.parent == output
    assert_png(image)
    assert json.loads(local_path(result["stored"][0]["sidecar"]).read_text())
    assert str(image) in env.task_log(SINGLE, run_id, "report_image")

    # The "LiangXin result" extra link, as the UI gets it, opens the result view of this task instance (same
    # origin); the XCom keeps the stored image's path.
    links = env.get(f"/dags/{SINGLE}/dagRuns/{run_id}/taskInstances/generate_image/links")
    assert links["extra_links"]["LiangXin result"] == (
        f"/liangxin/v1/results?dag_id={SINGLE}&run_id={quote_plus(run_id)}&task_id=generate_image&map_index=-1"
    )
    assert env.xcom(SINGLE, run_id, "generate_image", key="liangxin_result_url") == result["stored"][0]["path"]


def test_content_batch_one_create_per_mapped_task(stack, runs):
    env, sim, output = stack
    run_id = finished(env, runs["batch"])
    tis = tis_by_task(env, BATCH, run_id)
    assert {ti["state"] for group in tis.values() for ti in group} == {"success"}
    plan = env.xcom(BATCH, run_id, "plan_generations")
    submissions = env.xcom(BATCH, run_id, "plan_submissions")
    assert len(tis["generate"]) == len(plan) == 6
    assert len(tis["submit"]) == len(tis["wait"]) == len(tis["save"]) == len(submissions) == 3

    # XComs hold the taskIds; the sensors waited for exactly the tasks that submit created.
    expected: Counter[tuple[str, str]] = Counter()
    created: list[str] = []
    for ti, kwargs in zip(tis["generate"], plan, strict=True):
        task_id = env.xcom(BATCH, run_id, "generate", key="task_id", map_index=ti["map_index"])
        result = env.xcom(BATCH, run_id, "generate", map_index=ti["map_index"])
        assert result["task_id"] == task_id
        assert result["model"] == kwargs["model"]
        assert_deferred_in_triggerer(env, BATCH, run_id, "generate", ti["map_index"])
        expected[kwargs["model"], kwargs["input"]["prompt"]] += 1
        created.append(task_id)
    sensor_model = SENSOR_MODEL
    for ti, submission in zip(tis["submit"], submissions, strict=True):
        task_id = env.xcom(BATCH, run_id, "submit", map_index=ti["map_index"])
        assert env.xcom(BATCH, run_id, "submit", key="task_id", map_index=ti["map_index"]) == task_id
        assert env.xcom(BATCH, run_id, "wait", map_index=ti["map_index"])["task_id"] == task_id
        assert_deferred_in_triggerer(env, BATCH, run_id, "wait", ti["map_index"])
        expected[sensor_model, submission["prompt"]] += 1
        created.append(task_id)
    # The batch variant: the same 6 requests in one task instance, results in input order, one trigger.
    batch = env.xcom(BATCH, run_id, "generate_batch")
    assert [r["index"] for r in batch] == list(range(len(plan)))
    for result, kwargs in zip(batch, plan, strict=True):
        assert result["state"] == "success"
        assert result["model"] == kwargs["model"]
        assert result["creations"] == 1
        assert sim.record(result["task_id"])["param"]["input"] == kwargs["input"]
        assert_png(local_path(result["stored"][0]["path"]))
        expected[kwargs["model"], kwargs["input"]["prompt"]] += 1
        created.append(result["task_id"])
    batch_trigger_log = "\n".join(
        f.read_text(errors="replace") for f in env.trigger_log_files(BATCH, run_id, "generate_batch")
    )
    assert "LiangxinBatchTrigger" in batch_trigger_log
    assert len(set(created)) == len(created) == 15

    # The simulator saw exactly one createTask per mapped task instance: count its tasks by (model, prompt).
    batch_prompts = {prompt for _model, prompt in expected}
    seen: Counter[tuple[str, str]] = Counter()
    for task_id in sim.stats()["task_ids"]:
        param = sim.record(task_id)["param"]
        if param["input"]["prompt"] in batch_prompts:
            seen[param["model"], param["input"]["prompt"]] += 1
    assert seen == expected

    manifest_path = local_path(env.xcom(BATCH, run_id, "write_manifest"))
    assert manifest_path.parent == output / "manifests"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["run_id"] == run_id
    assert sorted(img["liangxin_task_id"] for img in manifest["images"]) == sorted(created)
    assert Counter(img["variant"] for img in manifest["images"]) == {"operator": 6, "batch": 6, "sensor": 3}
    assert {img["prompt"] for img in manifest["images"] if img["variant"] == "batch"} == batch_prompts
    for img in manifest["images"]:
        assert_png(local_path(img["path"]))


@pytest.mark.smoke
def test_failed_generation_still_links_its_liangxin_task(stack, runs):
    """A failed task has the link to the result view too, and LiangXin's reasons in XCom for it; the XCom
    ``liangxin_result_url`` names the LiangXin task (its recordInfo URL), pushed right after createTask."""
    env, sim, _output = stack
    dag_id, run_id = runs["fail"]
    env.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    liangxin_task_id = env.xcom(dag_id, run_id, "generate_image", key="task_id")
    links = env.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/generate_image/links")
    assert links["extra_links"]["LiangXin result"].startswith(f"/liangxin/v1/results?dag_id={dag_id}&")
    assert env.xcom(dag_id, run_id, "generate_image", key="liangxin_result_url") == (
        f"{sim.base_url}/api/v1/jobs/recordInfo?taskId={liangxin_task_id}"
    )
    failure = env.xcom(dag_id, run_id, "generate_image", key="liangxin_failure")
    assert failure["task_id"] == liangxin_task_id
    assert failure["fail_msg"]


@pytest.mark.smoke
def test_failed_generation_fails_the_task_with_the_fail_message(stack, runs):
    env, sim, _output = stack
    run_id = finished(env, runs["fail"], expected="failed")
    tis = {ti["task_id"]: ti for ti in env.task_instances(SINGLE, run_id)}
    assert tis["generate_image"]["state"] == "failed"
    assert tis["report_image"]["state"] == "upstream_failed"
    liangxin_task_id = env.xcom(SINGLE, run_id, "generate_image", key="task_id")
    assert sim.record(liangxin_task_id)["state"] == "fail"
    assert_deferred_in_triggerer(env, SINGLE, run_id, "generate_image")
    # The worker (not only the trigger) reports LiangXin's failMsg when the task fails.
    worker_log = env.task_log(SINGLE, run_id, "generate_image", triggers=False)
    assert FAIL_MSG in worker_log, worker_log[-4000:]


def test_mapped_tasks_done_by_the_first_poll_succeed_on_their_only_try(stack, runs):
    """apache/airflow#72716: a trigger event within seconds of deferral fails the task ("state changed
    externally"). Each of these tasks is done before its trigger's first poll and has ``retries=0``; the trigger
    holds the event for ``[liangxin] deferral_settle_seconds`` (default 15 s, kept by this stack), so none fails."""
    env, _sim, _output = stack
    run_id = finished(env, runs["race"])
    tis = tis_by_task(env, RACE, run_id)["generate"]
    assert len(tis) == RACE_N
    assert {(ti["state"], ti["try_number"]) for ti in tis} == {("success", 1)}
    deferred = 0
    for ti in tis:
        files = env.trigger_log_files(RACE, run_id, "generate", 1, ti["map_index"])
        if not files:  # a worker that started late found its task done and, rightly, never deferred
            continue
        deferred += 1
        text = "\n".join(f.read_text(errors="replace") for f in files)
        assert "until the deferral has settled" in text, text[-2000:]
    assert deferred, "no task deferred: the race was not exercised"
    scheduler_log = (env.component_logs / "scheduler.log").read_text(errors="replace")
    assert not [line for line in scheduler_log.splitlines() if RACE_SYMPTOM in line and RACE in line]


def test_simulator_saw_no_failed_creates(stack, runs):
    """Last: every createTask of the module was accepted, and each became exactly one simulator task."""
    env, sim, _output = stack
    for run in runs.values():
        env.wait_for_run(*run, timeout=RUN_TIMEOUT)
    stats = sim.stats()
    creates = stats["requests"]["POST /api/v1/jobs/createTask"]
    assert set(creates) == {"200"}, creates
    assert creates["200"] == stats["task_count"] == sum(stats["created_per_model"].values())
    # single (1) + fail (1) + content batch (6 mapped + 6 in one batch task + 3) + retry (1, despite two attempts)
    # + the mapped race run (RACE_N)
    assert stats["task_count"] == 18 + RACE_N


@pytest.mark.smoke
def test_api_key_never_reaches_airflow_logs_or_xcom(stack, runs):
    """Every task log, trigger log and component log of the module, and the result XComs, are free of the key."""
    env, sim, _output = stack
    for run in runs.values():
        env.wait_for_run(*run, timeout=RUN_TIMEOUT)
    files = [p for p in [*env.log_folder.rglob("*"), *env.component_logs.rglob("*")] if p.is_file()]
    assert any(p.name.endswith(".trigger.1.log") or ".log.trigger." in p.name for p in files), "no trigger log read"
    leaks = [str(p) for p in files if sim.api_key in p.read_text(errors="replace")]
    assert leaks == [], f"API key found in {leaks}"
    single = runs["single"]
    assert sim.api_key not in json.dumps(env.xcom(*single, "generate_image"))
