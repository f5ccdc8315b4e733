"""DAGs of benchmarks/bench_callbacks.py: one deferred LiangXin task each, finished by callback or by polling."""

from __future__ import annotations

from airflow.sdk import Param, dag

from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator

MODEL = "seedream-v4-5"


def _bench_dag(dag_id: str, *, poll_interval: float, callback: bool) -> None:
    @dag(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        tags=["bench"],
        params={"prompt": Param("bench", type="string")},
        max_active_runs=64,
    )
    def bench():
        LiangxinCreateTaskOperator(
            task_id="generate",
            model=MODEL,
            input={"prompt": "{{ params.prompt }}"},
            deferrable=True,
            poll_interval=poll_interval,
            callback_url="auto" if callback else None,
            callback_fallback_poll_interval=60 if callback else None,
        )

    bench()


# Callbacks with the default 60 s fallback poll; polling every 10 s (the operator's default) and every 60 s.
_bench_dag("bench_cb_callback", poll_interval=10, callback=True)
_bench_dag("bench_cb_forged", poll_interval=10, callback=True)
_bench_dag("bench_cb_poll10", poll_interval=10, callback=False)
_bench_dag("bench_cb_poll60", poll_interval=60, callback=False)
