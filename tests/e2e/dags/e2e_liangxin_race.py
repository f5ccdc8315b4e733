"""E2E-only DAG: mapped deferrable tasks whose LiangXin task is done by the trigger's first poll, ``retries=0``.

The worst case for Airflow 3.3's deferral race (apache/airflow#72716): without the trigger's settle hold the event
would land within a second or two of deferral, before the scheduler processed the worker's defer-exit report,
and the task would be failed as "state changed externally". With ``retries=0`` nothing hides such a failure.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator

OUTPUT_DIR = os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output")
#: The e2e simulator finishes this model's tasks 0.5 s after createTask: after the worker's own first check
#: (so the task defers), before the trigger's first poll.
QUICK_MODEL = "imagen4-ultra"


@task
def prompts(params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"prompt": f"race {params['tag']} {i}"} for i in range(int(params["n"]))]


@dag(
    dag_id="e2e_liangxin_mapped_race",
    schedule=None,
    catchup=False,
    tags=["e2e"],
    params={"n": Param(24, type="integer", minimum=1), "tag": Param("e2e", type="string")},
)
def e2e_liangxin_mapped_race():
    LiangxinCreateTaskOperator.partial(
        task_id="generate",
        model=QUICK_MODEL,
        deferrable=True,
        poll_interval=1,
        retries=0,
        output_path=OUTPUT_DIR,
    ).expand(input=prompts())


e2e_liangxin_mapped_race()
