"""E2E-only DAGs for LiangxinBatchCreateTaskOperator on a real Airflow (see tests/e2e/test_batch_real_airflow.py).

* ``e2e_batch_deferred``: a deferred batch with one failing item (within ``max_failed``), results stored.
* ``e2e_batch_kill_create``: the worker is killed with SIGKILL while it creates a wave (stalled on 429s for one
  model); the retry must resume the tasks already created and create only the others.
* ``e2e_batch_kill_wait``: the worker is killed while it polls (``deferrable=False``); the retry must create
  nothing.
* ``e2e_batch_triggerer_restart``: the triggerer is killed (SIGKILL) and started again while the batch is
  deferred; the new triggerer must take the trigger over from its kwargs, and nothing is created again.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import dag

from airflow_provider_liangxin.operators.liangxin import LiangxinBatchCreateTaskOperator

OUTPUT_DIR = os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output")

#: Models the e2e simulator configures: createTask of THROTTLED_MODEL answers 429 until the test clears it,
#: WAIT_MODEL generates for long enough to kill the worker mid-wait.
CREATE_MODEL = "seedream-v4-5"
THROTTLED_MODEL = "z-image"
WAIT_MODEL = "flux-2-pro"
TRIGGER_MODEL = "nano-banana-pro"


@dag(dag_id="e2e_batch_deferred", schedule=None, catchup=False, tags=["e2e"])
def e2e_batch_deferred():
    LiangxinBatchCreateTaskOperator(
        task_id="generate",
        model=CREATE_MODEL,
        inputs=[{"prompt": f"e2e deferred batch {i}"} for i in range(7)] + [{"prompt": "e2e batch [sim:fail]"}],
        max_in_flight=3,
        max_failed=1,
        deferrable=True,
        poll_interval=1,
        output_path=OUTPUT_DIR,
    )


@dag(dag_id="e2e_batch_kill_create", schedule=None, catchup=False, tags=["e2e"])
def e2e_batch_kill_create():
    LiangxinBatchCreateTaskOperator(
        task_id="generate",
        inputs=[{"model": CREATE_MODEL, "input": {"prompt": f"e2e kill-create {i}"}} for i in range(6)]
        + [{"model": THROTTLED_MODEL, "input": {"prompt": f"e2e kill-create throttled {i}"}} for i in range(4)],
        max_in_flight=10,
        deferrable=True,
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


@dag(dag_id="e2e_batch_kill_wait", schedule=None, catchup=False, tags=["e2e"])
def e2e_batch_kill_wait():
    LiangxinBatchCreateTaskOperator(
        task_id="generate",
        model=WAIT_MODEL,
        inputs=[{"prompt": f"e2e kill-wait {i}"} for i in range(5)],
        max_in_flight=5,
        deferrable=False,  # poll on the worker, so there is a worker to kill while waiting
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


@dag(dag_id="e2e_batch_triggerer_restart", schedule=None, catchup=False, tags=["e2e"])
def e2e_batch_triggerer_restart():
    LiangxinBatchCreateTaskOperator(
        task_id="generate",
        model=TRIGGER_MODEL,
        inputs=[{"prompt": f"e2e triggerer restart {i}"} for i in range(4)],
        max_in_flight=4,
        deferrable=True,
        poll_interval=1,
    )


e2e_batch_deferred()
e2e_batch_triggerer_restart()
e2e_batch_kill_create()
e2e_batch_kill_wait()
