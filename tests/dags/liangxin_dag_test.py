"""DAGs for the ``dag.test()`` end-to-end tests (tests/test_dag_test.py): one per waiting mode.

They live in the tests' own DAG folder because ``dag.test()`` in Airflow 3 runs only DAGs it can find in a
configured DAG bundle.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator

for mode in ("sync", "deferrable"):
    with DAG(
        f"liangxin_dag_test_{mode}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"prompt": "a paper boat on a puddle"},
        tags=["liangxin-tests"],
    ):
        hero = LiangxinCreateTaskOperator(
            task_id="hero",
            model="seedream-v4-5",
            input={"prompt": "{{ params.prompt }}", "aspect_ratio": "16:9", "seed": 7},
            deferrable=mode == "deferrable",
            poll_interval=0.2,
            timeout=60,
        )

        @task
        def read_result(result: dict, liangxin_task_id: str) -> str:
            """A downstream consumer: the result URL and the taskId both come from XCom."""
            assert result["task_id"] == liangxin_task_id
            print(f"LiangXin task {liangxin_task_id} produced {result['result_urls'][0]}")
            return result["result_urls"][0]

        read_result(hero.output, "{{ ti.xcom_pull(task_ids='hero', key='task_id') }}")
