"""Harness smoke DAG: one deferrable sensor, so a run proves scheduler, executor and triggerer all work."""

from __future__ import annotations

from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import dag


@dag(dag_id="e2e_smoke", schedule=None, catchup=False, tags=["e2e"])
def e2e_smoke():
    DateTimeSensorAsync(
        task_id="wait",
        target_time="{{ (macros.datetime.utcnow() + macros.timedelta(seconds=3)).isoformat() }}",
    )


e2e_smoke()
