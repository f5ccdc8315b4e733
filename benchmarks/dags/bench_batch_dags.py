"""DAGs of benchmarks/bench_batch.py: the same N images as one batch task or as N mapped task instances.

Each run's ``conf`` sets ``n`` (images) and ``tag`` (makes every prompt of the run unique, so the benchmark can
count the run's tasks at the simulator). Results are stored like the content-batch example does.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_liangxin.operators.liangxin import LiangxinBatchCreateTaskOperator, LiangxinCreateTaskOperator

OUTPUT_DIR = os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output")
MODEL = "seedream-v4-5"
PARAMS = {"n": 200, "tag": "bench"}
#: Under load, Airflow 3.3 may fail a resumed deferred task as "state changed externally" (apache/airflow#72716,
#: see tests/e2e/airflow_env.py); a retry resumes the LiangXin task(s) already created, so both variants get one.
RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=1)}


@task
def plan(params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"prompt": f"bench {params['tag']} image {i}", "aspect_ratio": "1:1"} for i in range(int(params["n"]))]


def _batch_dag(dag_id: str, max_in_flight: int, max_failed: int = 0) -> None:
    @dag(dag_id=dag_id, schedule=None, catchup=False, params=PARAMS, tags=["bench"])
    def batch_dag():
        LiangxinBatchCreateTaskOperator(
            task_id="generate",
            model=MODEL,
            inputs=plan(),
            max_in_flight=max_in_flight,
            max_failed=max_failed,
            deferrable=True,
            poll_interval=1,
            output_path=OUTPUT_DIR,
            **RETRIES,
        )

    batch_dag()


_batch_dag("bench_batch", max_in_flight=1000)
_batch_dag("bench_batch_waves", max_in_flight=100)
_batch_dag("bench_batch_faults", max_in_flight=1000, max_failed=10**9)


@dag(dag_id="bench_mapped", schedule=None, catchup=False, params=PARAMS, tags=["bench"])
def bench_mapped():
    LiangxinCreateTaskOperator.partial(
        task_id="generate",
        model=MODEL,
        deferrable=True,
        poll_interval=1,
        timeout=3600,
        output_path=OUTPUT_DIR,
        **RETRIES,
    ).expand(input=plan())


bench_mapped()
