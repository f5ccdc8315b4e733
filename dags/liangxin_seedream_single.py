"""One image from one prompt: the smallest complete LiangXin pipeline.

What it shows
-------------
* ``LiangxinCreateTaskOperator`` creates a ``seedream-v4-5`` task from a prompt given as a DAG param (trigger the
  DAG "with config" to change it), then **defers**: while LiangXin generates the image, the wait runs in the
  triggerer and no worker slot is held.
* ``output_path`` downloads the finished image (plus a JSON sidecar describing it) to a local folder.
* A downstream task reads the operator's result from XCom and logs where the image is.

Before you run it
-----------------
* A connection ``liangxin_default`` of type ``liangxin``: host = the API base URL, password = your API key, e.g.
  ``AIRFLOW_CONN_LIANGXIN_DEFAULT='{"conn_type": "liangxin", "host": "https://api.liangxin.example",
  "password": "sk-..."}'``. The bundled simulator (``python -m airflow_provider_liangxin.simulator``) serves
  ``http://127.0.0.1:8765`` with the key ``sk-liangxin-simulator-dev``.
* A running triggerer (``airflow triggerer``; ``airflow standalone`` starts one).
* Optional environment variables, read when the DAG file is parsed:
  ``LIANGXIN_OUTPUT_DIR`` (default ``/tmp/liangxin-output``) and ``LIANGXIN_POLL_INTERVAL`` (seconds between
  status checks, default 10).

Results
-------
XCom ``task_id`` of ``generate_image`` holds the LiangXin taskId as soon as the task exists; its
``return_value`` holds the result (``task_id``, ``model``, ``state``, ``result_urls``, timings and
``stored``: one ``{"path", "sidecar", ...}`` per downloaded file). ``report_image`` returns the image path.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_liangxin.operators.liangxin import LiangxinCreateTaskOperator

# Parse-time settings come from the environment only: parsing a DAG file must never touch the network,
# the metadata database or a connection.
OUTPUT_DIR = os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output")
POLL_INTERVAL = float(os.environ.get("LIANGXIN_POLL_INTERVAL", "10"))

log = logging.getLogger(__name__)


@dag(
    dag_id="liangxin_seedream_single",
    schedule=None,
    catchup=False,
    tags=["liangxin", "example"],
    doc_md=__doc__,
    params={
        "prompt": Param(
            "A lighthouse on a basalt cliff at dawn, warm light through sea mist, watercolor",
            type="string",
            minLength=1,
            description="What to draw.",
        ),
        "aspect_ratio": Param(
            "16:9",
            type="string",
            enum=["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9"],
            description="Shape of the image.",
        ),
    },
)
def liangxin_seedream_single():
    generate_image = LiangxinCreateTaskOperator(
        task_id="generate_image",
        model="seedream-v4-5",
        # Nested values are templated: the prompt is rendered from the run's params.
        input={"prompt": "{{ params.prompt }}", "aspect_ratio": "{{ params.aspect_ratio }}"},
        liangxin_conn_id="liangxin_default",
        deferrable=True,  # wait in the triggerer, not on a worker
        poll_interval=POLL_INTERVAL,
        timeout=15 * 60,  # give up (and fail the task) if the image is not ready within 15 minutes
        output_path=OUTPUT_DIR,  # download the result here: <taskId>_0.png + <taskId>_0.json
    )

    @task
    def report_image(result: dict[str, Any]) -> str:
        """Read the operator's result (its XCom ``return_value``) and log where the image was saved."""
        stored = result["stored"][0]
        log.info("LiangXin task %s (%s) is %s", result["task_id"], result["model"], result["state"])
        log.info("Image saved to %s (metadata in %s)", stored["path"], stored["sidecar"])
        return stored["path"]

    report_image(generate_image.output)


liangxin_seedream_single()
