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

The DAG is written by the test into its own temporary DAG folder, so it never ships with the example DAGs.
"""

from __future__ import annotations

import textwrap
import time

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

DAG_FILE = textwrap.dedent(
    '''
    """Written by tests/e2e/test_hardening.py: every waiting mode against a gateway that echoes the key."""

    import json
    import os
    from datetime import timedelta

    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
    from airflow.sdk import dag

    from airflow_provider_liangxin.events import Deadlines, make_event
    from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator
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


    e2e_hardening()
    '''
)


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    dags = tmp_path_factory.mktemp("hardening-dags")
    (dags / "e2e_hardening.py").write_text(DAG_FILE)
    home = tmp_path_factory.mktemp("airflow")
    output = tmp_path_factory.mktemp("liangxin-output")
    started = time.monotonic()
    with liangxin_airflow(output_dir=output, home=home, dag_folders={"hardening-dags": dags}) as (env, sim):
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


def test_task_failing_before_create_has_no_link_and_logs_no_missing_xcom(stack, run):
    env, _sim = stack
    tis = {ti["task_id"]: ti for ti in env.task_instances(DAG_ID, run)}
    assert tis["invalid_input"]["state"] == "failed"
    log = env.task_log(DAG_ID, run, "invalid_input")
    assert "input.prompt" in log, log[-3000:]
    assert "XCom not found" not in log, log[-3000:]
    links = env.get(f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/invalid_input/links")
    assert not links["extra_links"].get("LiangXin result")
