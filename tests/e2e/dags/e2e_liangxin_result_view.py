"""E2E-only DAG for the result view (tests/e2e/test_batch_real_airflow.py, ``./run browser``): one LiangXin task
whose prompt (``[sim:fail]`` makes the simulator fail it) and ``output_path`` (empty: nothing stored, the view
sends the browser to LiangXin's result URL) come from the run's conf."""

from __future__ import annotations

import os

from airflow.sdk import Param, dag

from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator

OUTPUT_DIR = os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output")


@dag(
    dag_id="e2e_result_view",
    schedule=None,
    catchup=False,
    tags=["e2e"],
    max_active_runs=8,
    params={
        "prompt": Param("e2e result view: a lighthouse at dusk", type="string"),
        "output_path": Param(OUTPUT_DIR, type="string"),
    },
)
def e2e_result_view():
    LiangxinCreateTaskOperator(
        task_id="generate",
        model="seedream-v4-5",
        input={"prompt": "{{ params.prompt }}", "aspect_ratio": "16:9"},
        output_path="{{ params.output_path }}",
        deferrable=False,  # waits on the worker: no trigger hold, so the e2e test waits less
        poll_interval=1,
    )


e2e_result_view()
