"""DAGs of the fault suite (tests/e2e/fault_suite.py: ``./run faults`` and tests/e2e/test_faults.py).

Each run's ``conf`` sets ``tag`` (makes every prompt of the run unique, so the suite can match each Airflow task
instance, or batch item, with the one LiangXin task the simulator made for it) and the run's size. Every task is
deferrable and has ``retries=0``: a task that ends in the wrong state shows as such, nothing is retried away.

* ``e2e_faults_single``: ``SINGLE_TASKS`` plain ``LiangxinCreateTaskOperator`` tasks side by side.
* ``e2e_faults_mapped``: ``LiangxinCreateTaskOperator.partial(...).expand(input=...)``, ``n`` task instances.
* ``e2e_faults_batch``: one ``LiangxinBatchCreateTaskOperator`` of ``n`` items that tolerates ``MAX_FAILED``
  failed items (more fail the task: the state LiangXin's outcomes then dictate).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from airflow_provider_liangxin.operators.liangxin import LiangxinBatchCreateTaskOperator, LiangxinCreateTaskOperator

MODEL = "seedream-v4-5"
SINGLE_TASKS = 5
#: Polls every second; a transient error streak (5xx, 429, a dropped connection, the simulator restarting) may
#: last this long before a try fails: far above what the suite injects, so a failure here is a finding.
#: ``retry``: createTask meets refused connections while the simulator restarts (slow under load); a connection
#: that never opened is safe to try again (nothing was sent), so the hook keeps trying for up to about a minute.
WAITING = {
    "deferrable": True,
    "poll_interval": 1,
    "max_error_duration": 300,
    "retry": {"max_attempts": 12, "backoff_max": 10, "max_wait_total": 120},
    "retries": 0,
}
PARAMS: dict[str, Any] = {"tag": "faults", "n": 10}
#: Failed items a batch tolerates: with 10 % of tasks failing at LiangXin, a batch of 10 ends either way.
MAX_FAILED = 1


def prompt(tag: str, kind: str, index: int) -> str:
    return f"faults {tag} {kind} {index}"


@dag(dag_id="e2e_faults_single", schedule=None, catchup=False, params=PARAMS, tags=["e2e", "faults"])
def e2e_faults_single():
    for i in range(SINGLE_TASKS):
        LiangxinCreateTaskOperator(
            task_id=f"single_{i}",
            model=MODEL,
            input={"prompt": prompt("{{ params.tag }}", "single", i)},
            timeout=900,
            **WAITING,
        )


@task
def plan(params: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [{"prompt": prompt(params["tag"], kind, i)} for i in range(int(params["n"]))]


@dag(dag_id="e2e_faults_mapped", schedule=None, catchup=False, params=PARAMS, tags=["e2e", "faults"])
def e2e_faults_mapped():
    LiangxinCreateTaskOperator.partial(task_id="generate", model=MODEL, timeout=900, **WAITING).expand(
        input=plan(kind="mapped")
    )


@dag(dag_id="e2e_faults_batch", schedule=None, catchup=False, params=PARAMS, tags=["e2e", "faults"])
def e2e_faults_batch():
    LiangxinBatchCreateTaskOperator(
        task_id="generate",
        model=MODEL,
        inputs=plan(kind="batch"),
        max_in_flight=50,
        max_failed=MAX_FAILED,
        timeout=900,
        **WAITING,
    )


e2e_faults_single()
e2e_faults_mapped()
e2e_faults_batch()
