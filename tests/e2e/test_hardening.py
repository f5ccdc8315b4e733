"""Hardening on a real Airflow 3 (api-server, scheduler, dag-processor, triggerer) against the simulator.

A hostile gateway echoes our ``Authorization`` header into its error text (the simulator's ``[sim:echo-auth]``
prompt marker: recordInfo answers 401 with the header inside the message). The triggerer masks its own log, but a
resumed worker used to raise from the event before resolving the connection, so the key was printed in clear in
the task log and the scheduler log. Here every way of waiting meets that gateway (deferred and sync operator,
deferred and poke sensor) and no log file of the deployment may contain the key, while each task did fail on it.
Two more tasks resume the provider's ``execute_complete`` with an event that does carry the key (as a trigger of
an older version would have sent it): the worker must mask it by itself.

The same run has a task that fails before it creates a LiangXin task: it must not log ``XCom not found`` for the
result link.

The same deployment runs the OpenLineage provider with the file transport: two more tasks (a stored image and a
LiangXin failure, both resumed from the triggerer on a fresh operator instance) show the operator's lineage
events, and no event of any task may hold the key either.

The DAG is written by the test into its own temporary DAG folder, so it never ships with the example DAGs.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.airflow_env import AirflowEnv, liangxin_airflow

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_hardening"
ECHO_TASKS = (
    "echo_sync",
    "echo_deferred",
    "echo_sensor_poke",
    "echo_sensor_deferred",
    "resume_operator",
    "resume_sensor",
)
#: Tasks whose hostile answer came through the triggerer.
DEFERRED = ("echo_deferred", "echo_sensor_deferred")
RUN_TIMEOUT = 150
#: Templated in the DAG, so the events show the rendered prompt (the listener runs after rendering).
LINEAGE_TEMPLATE = "{{ dag.dag_id }}: lineage of a paper crane on a windowsill"
LINEAGE_PROMPT = "e2e_hardening: lineage of a paper crane on a windowsill"
LINEAGE_FAIL_PROMPT = "e2e: lineage of a failure [sim:fail]"
LINEAGE_BATCH_PROMPTS = ["e2e: a batch item, an origami boat", "e2e: a batch item that fails [sim:fail]"]
FAIL_MSG = "simulated generation failure"

DAG_FILE = textwrap.dedent(
    '''
    """Written by tests/e2e/test_hardening.py: every waiting mode against a gateway that echoes the key."""

    import json
    import os
    from datetime import timedelta

    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
    from airflow.sdk import dag

    from airflow_provider_liangxin.events import Deadlines, make_event
    from airflow_provider_liangxin.operators.liangxin import LiangxinBatchCreateTaskOperator, LiangxinCreateTaskOperator
    from airflow_provider_liangxin.sensors.liangxin import LiangxinTaskSensor
    from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger

    HOSTILE = {"prompt": "e2e: a gateway that echoes credentials [sim:echo-auth]"}
    TASK_ID = "{{ ti.xcom_pull(task_ids='echo_submit', key='task_id') }}"


    class DeferAtOnce(LiangxinCreateTaskOperator):
        """Defers right after createTask, skipping the worker's first status check, so the hostile answer
        reaches the triggerer (the real operator would meet it on the worker already)."""

        def execute(self, context):
            task_id = self.hook.create_task(self.model, self.input)
            self._defer(context, task_id, Deadlines.start(context, self.timeout, self.execution_timeout))


    class SensorDeferAtOnce(LiangxinTaskSensor):
        def execute(self, context):
            trigger = LiangxinTaskTrigger.for_wait(
                self.liangxin_task_id, Deadlines.start(context, 120, None), liangxin_conn_id=self.liangxin_conn_id,
                poll_interval=1, request_timeout=None, retry=None, max_error_duration=300,
            )
            self.defer(trigger=trigger, method_name="execute_complete")


    def echoed_key_event():
        """An error event whose text holds the key, as a trigger without the triggerer-side scrub (an older
        provider version) hands it to the resumed worker. The key is read from the environment, not through the
        connection, so nothing in this process registered it with the masker."""
        key = json.loads(os.environ["AIRFLOW_CONN_LIANGXIN_DEFAULT"])["password"]
        return make_event("error", "task_x", f"invalid token (received Authorization: Bearer {key})")


    class ResumeWithEchoedKey(LiangxinCreateTaskOperator):
        def execute(self, context):
            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=0)), method_name="resume")

        def resume(self, context, event=None):
            return self.execute_complete(context, echoed_key_event())


    class SensorResumeWithEchoedKey(LiangxinTaskSensor):
        def execute(self, context):
            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=0)), method_name="resume")

        def resume(self, context, event=None):
            return self.execute_complete(context, echoed_key_event())


    @dag(dag_id="e2e_hardening", schedule=None, catchup=False, default_args={"retries": 0})
    def e2e_hardening():
        common = {"model": "z-image", "input": HOSTILE, "poll_interval": 1, "timeout": 120}
        LiangxinCreateTaskOperator(task_id="echo_sync", deferrable=False, **common)
        DeferAtOnce(task_id="echo_deferred", deferrable=True, **common)
        submit = LiangxinCreateTaskOperator(task_id="echo_submit", wait_for_completion=False, **common)
        sensor = {"liangxin_task_id": TASK_ID, "poke_interval": 1, "timeout": 120}
        submit >> LiangxinTaskSensor(task_id="echo_sensor_poke", deferrable=False, **sensor)
        submit >> SensorDeferAtOnce(task_id="echo_sensor_deferred", deferrable=True, **sensor)
        ResumeWithEchoedKey(task_id="resume_operator", **common)
        SensorResumeWithEchoedKey(task_id="resume_sensor", liangxin_task_id="task_x")
        # Renders an empty prompt: fails validation before any createTask.
        LiangxinCreateTaskOperator(task_id="invalid_input", model="z-image", input={"prompt": "{{ '' }}"})
        # OpenLineage: resumed from the triggerer on a fresh instance, one stores its image, one fails on LiangXin.
        lineage = {"model": "z-image", "poll_interval": 1, "timeout": 120, "deferrable": True}
        DeferAtOnce(
            task_id="lineage_image", input={"prompt": %(image)r, "seed": 5, "aspect_ratio": "1:1"},
            output_path=os.environ["LIANGXIN_OUTPUT_DIR"], **lineage,
        )
        DeferAtOnce(task_id="lineage_fail", input={"prompt": %(fail)r}, **lineage)
        LiangxinBatchCreateTaskOperator(
            task_id="lineage_batch", model="z-image", inputs=[{"prompt": p} for p in %(batch)r], max_failed=1,
            output_path=os.environ["LIANGXIN_OUTPUT_DIR"], deferrable=True, poll_interval=1, timeout=120,
        )


    e2e_hardening()
    '''
) % {"image": LINEAGE_TEMPLATE, "fail": LINEAGE_FAIL_PROMPT, "batch": LINEAGE_BATCH_PROMPTS}


def lineage_dir(home: Path) -> Path:
    return home / "openlineage"


def lineage_events(env: AirflowEnv) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(lineage_dir(env.home).glob("ol-*.json"))]


def task_events(env: AirflowEnv, task_id: str, event_type: str, timeout: float = 15) -> list[dict[str, Any]]:
    """The task's OpenLineage events of that type, once there is one (the listener may still be writing when the
    run ends)."""
    deadline = time.monotonic() + timeout
    while True:
        job = f"{DAG_ID}.{task_id}"
        found = [e for e in lineage_events(env) if e["job"]["name"] == job and e["eventType"] == event_type]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    dags = tmp_path_factory.mktemp("hardening-dags")
    (dags / "e2e_hardening.py").write_text(DAG_FILE)
    home = tmp_path_factory.mktemp("airflow")
    output = tmp_path_factory.mktemp("liangxin-output")
    started = time.monotonic()
    lineage_dir(home).mkdir()
    # OpenLineage's file transport: one JSON file per event.
    transport = {"type": "file", "log_file_path": str(lineage_dir(home) / "ol"), "append": False}
    # In a thread of the task process rather than a forked child per event: cheaper on CI's two cores.
    extra_env = {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }
    with liangxin_airflow(output_dir=output, home=home, dag_folders={"hardening-dags": dags}, extra_env=extra_env) as (
        env,
        sim,
    ):
        env.wait_ready([DAG_ID], timeout=180)
        print(f"\nAirflow ready in {time.monotonic() - started:.1f}s; home {env.home}")
        failed_before = request.session.testsfailed
        yield env, sim
        if request.session.testsfailed > failed_before:
            print(f"\n===== Airflow component logs (tails)\n{env.component_tails(lines=40)}")


@pytest.fixture(scope="module")
def run(stack) -> str:
    env, _sim = stack
    run_id = env.trigger(DAG_ID)
    state = env.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    assert state == "failed", f"run ended {state}\n{env.failure_report(DAG_ID, run_id)}"
    return run_id


def _log_files(env: AirflowEnv) -> list:
    """Every log the deployment wrote: task and trigger logs, and the components' (scheduler, triggerer, ...).
    The simulator's own log is not Airflow's (the hostile server knows the key anyway)."""
    files = [p for p in [*env.log_folder.rglob("*"), *env.component_logs.rglob("*")] if p.is_file()]
    return [p for p in files if "simulator" not in p.name]


def test_echoed_key_is_masked_in_every_log_while_each_task_failed_on_it(stack, run):
    env, sim = stack
    states = {ti["task_id"]: ti["state"] for ti in env.task_instances(DAG_ID, run)}
    assert states["echo_submit"] == "success", states
    for task_id in ECHO_TASKS:
        assert states[task_id] == "failed", f"{task_id}: {states}\n{env.failure_report(DAG_ID, run)}"
        log = env.task_log(DAG_ID, run, task_id)
        # The hostile answer did reach this task: its text is in the log, with the key masked.
        assert "received Authorization: Bearer ***" in log, f"{task_id}:\n{log[-3000:]}"

    for task_id in DEFERRED:
        trigger_logs = env.trigger_log_files(DAG_ID, run, task_id)
        assert trigger_logs, f"{task_id} never deferred\n{env.failure_report(DAG_ID, run)}"
        assert "received Authorization: Bearer ***" in "".join(p.read_text(errors="replace") for p in trigger_logs)

    files = _log_files(env)
    assert any(p.name == "scheduler.log" for p in files), [p.name for p in files]
    leaks = [str(p) for p in files if sim.api_key in p.read_text(errors="replace")]
    assert leaks == [], f"API key found in {leaks}"


def test_openlineage_events_of_a_stored_image_and_a_liangxin_failure(stack, run):
    """The OpenLineage provider's listener calls the operator's methods on the instance that resumed from the
    triggerer: the events carry the LiangXin taskId, the liangxin facet, the stored file as output dataset and,
    on failure, LiangXin's failMsg; never the API key, the prompt or a result URL (of any task's event)."""
    from tests.e2e.airflow_env import local_path
    from tests.support.openlineage_schema import validate_event

    env, sim = stack
    states = {ti["task_id"]: ti["state"] for ti in env.task_instances(DAG_ID, run)}
    assert (states["lineage_image"], states["lineage_fail"]) == ("success", "failed"), states
    for task_id in ("lineage_image", "lineage_fail"):
        assert env.trigger_log_files(DAG_ID, run, task_id), f"{task_id} never deferred"

    # START twice: when the task starts, and again when it resumes from the triggerer (the listener's doing).
    starts = task_events(env, "lineage_image", "START")
    assert len(starts) == 2, starts
    for start in starts:  # the rendered request, hashed
        validate_event(start)
        assert start["run"]["facets"]["liangxin"]["promptSha256"] == hashlib.sha256(LINEAGE_PROMPT.encode()).hexdigest()
    [complete] = task_events(env, "lineage_image", "COMPLETE")
    validate_event(complete)
    result = env.xcom(DAG_ID, run, "lineage_image")
    facets = complete["run"]["facets"]
    assert facets["externalQuery"]["externalQueryId"] == result["task_id"]
    assert facets["externalQuery"]["source"] == f"liangxin://{sim.base_url.split('://')[1].rstrip('/')}"
    liangxin = facets["liangxin"]
    assert liangxin["model"] == "z-image"
    assert liangxin["parameters"] == {"aspect_ratio": "1:1", "seed": 5}
    assert liangxin["promptLength"] == len(LINEAGE_PROMPT)
    assert sim.record(result["task_id"])["param"]["input"]["prompt"] == LINEAGE_PROMPT
    assert (liangxin["taskId"], liangxin["state"], liangxin["storedCount"]) == (result["task_id"], "success", 1)
    stored = [local_path(item["path"]) for item in result["stored"]]
    assert stored[0].is_file()
    assert [(o["namespace"], o["name"]) for o in complete["outputs"]] == [("file", str(p)) for p in stored]

    [failure] = task_events(env, "lineage_fail", "FAIL")
    validate_event(failure)
    liangxin = failure["run"]["facets"]["liangxin"]
    assert (liangxin["state"], liangxin["failMsg"]) == ("fail", FAIL_MSG)
    assert sim.record(liangxin["taskId"])["param"]["input"] == {"prompt": LINEAGE_FAIL_PROMPT}
    assert failure["run"]["facets"]["externalQuery"]["externalQueryId"] == liangxin["taskId"]
    # The listener sets errorMessage from the task's exception, which names LiangXin's failMsg too.
    assert FAIL_MSG in failure["run"]["facets"]["errorMessage"]["message"]
    assert failure["outputs"] == []

    # Every event of the run (the hostile tasks' FAIL events included): no key, no prompt, no result URL.
    text = "".join(p.read_text() for p in lineage_dir(env.home).glob("ol-*.json"))
    for secret in [sim.api_key, LINEAGE_PROMPT, *result["result_urls"], result["result_urls"][0].split("?")[0]]:
        assert secret not in text


def test_openlineage_events_of_a_deferred_batch(stack, run):
    """The batch operator's COMPLETE event, emitted by the instance that resumed from its batch trigger: every
    LiangXin taskId in input order, the per-item states, each stored file as an output dataset."""
    from tests.e2e.airflow_env import local_path
    from tests.support.openlineage_schema import validate_event

    env, sim = stack
    states = {ti["task_id"]: ti["state"] for ti in env.task_instances(DAG_ID, run)}
    assert states["lineage_batch"] == "success", states
    assert env.trigger_log_files(DAG_ID, run, "lineage_batch"), "lineage_batch never deferred"
    results = env.xcom(DAG_ID, run, "lineage_batch")
    assert [r["state"] for r in results] == ["success", "fail"]
    [complete] = task_events(env, "lineage_batch", "COMPLETE")
    validate_event(complete)
    liangxin = complete["run"]["facets"]["liangxin"]
    assert liangxin["taskIds"] == [r["task_id"] for r in results]
    assert (liangxin["itemCount"], liangxin["succeededCount"], liangxin["failedCount"]) == (2, 1, 1)
    for task_id, prompt in zip(liangxin["taskIds"], LINEAGE_BATCH_PROMPTS, strict=True):
        assert sim.record(task_id)["param"]["input"]["prompt"] == prompt
    stored = [local_path(item["path"]) for item in results[0]["stored"]]
    assert stored
    assert stored[0].is_file()
    assert [(o["namespace"], o["name"]) for o in complete["outputs"]] == [("file", str(p)) for p in stored]
    text = json.dumps(complete)
    for secret in [sim.api_key, *LINEAGE_BATCH_PROMPTS, *results[0]["result_urls"]]:
        assert secret not in text


def test_task_failing_before_create_has_no_link_and_logs_no_missing_xcom(stack, run):
    env, _sim = stack
    tis = {ti["task_id"]: ti for ti in env.task_instances(DAG_ID, run)}
    assert tis["invalid_input"]["state"] == "failed"
    log = env.task_log(DAG_ID, run, "invalid_input")
    assert "input.prompt" in log, log[-3000:]
    assert "XCom not found" not in log, log[-3000:]
    links = env.get(f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/invalid_input/links")
    assert not links["extra_links"].get("LiangXin result")
