"""E2E-only DAG: a LiangXin task polled on the worker, with a retry, for the worker-kill test.

The e2e test kills this task's worker process while it polls; the retry must resume the LiangXin task the first
attempt created (kept in Airflow's task_state_store) instead of creating and paying for a second one.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import Param, dag

from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator

OUTPUT_DIR = os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output")

#: The e2e simulator gives this model a long generation, so there is time to kill the worker mid-poll.
SLOW_MODEL = "nano-banana-pro"


@dag(
    dag_id="e2e_liangxin_retry",
    schedule=None,
    catchup=False,
    tags=["e2e"],
    params={"prompt": Param("e2e retry after a worker kill", type="string")},
)
def e2e_liangxin_retry():
    LiangxinCreateTaskOperator(
        task_id="generate",
        model=SLOW_MODEL,
        input={"prompt": "{{ params.prompt }}"},
        deferrable=False,  # poll on the worker, so there is a worker to kill
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(seconds=1),
        output_path=OUTPUT_DIR,
    )


e2e_liangxin_retry()
