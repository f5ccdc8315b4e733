"""E2E-only DAGs: a deferred LiangXin task that LiangXin calls back (``callback_url="auto"``).

``e2e_liangxin_callback`` keeps a fallback poll far beyond the test's patience (120 s): a run that ends early ended
by callback. ``e2e_liangxin_callback_lost`` polls every 5 s as its fallback, for a callback that never comes.
The model (and so the simulated generation time) and the prompt come from the run's conf.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator

PARAMS = {
    "prompt": Param("e2e: a lighthouse at dusk", type="string"),
    "model": Param("seedream-v5-lite", type="string"),
}


def _callback_dag(dag_id: str, fallback: float) -> None:
    @dag(dag_id=dag_id, schedule=None, catchup=False, tags=["e2e"], params=PARAMS, max_active_runs=8)
    def callback_dag():
        LiangxinCreateTaskOperator(
            task_id="generate",
            model="{{ params.model }}",
            input={"prompt": "{{ params.prompt }}"},
            callback_url="auto",
            deferrable=True,
            poll_interval=1,
            callback_fallback_poll_interval=fallback,
        )

    callback_dag()


_callback_dag("e2e_liangxin_callback", 120)
_callback_dag("e2e_liangxin_callback_lost", 5)
