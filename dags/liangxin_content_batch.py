"""A daily content pipeline: many prompts, several models, one manifest.

What it shows
-------------
* **Dynamic task mapping.** ``plan_generations`` turns the ``prompts`` and ``models`` params into one request
  per (model, prompt) pair, and ``generate`` fans out over them with ``.expand_kwargs()``: one mapped task
  instance, and exactly one LiangXin task, per pair. Each instance is deferrable and downloads its image.
* **One batch task.** ``generate_batch`` sends the same (model, prompt) requests through
  ``LiangxinBatchCreateTaskOperator``: one task instance for all of them, at most ``max_in_flight`` LiangXin tasks
  at a time, one trigger watching the whole batch, and the worker resumed only to create the next wave or finish.
  Use it for hundreds of images per run: Airflow's per-task overhead, not LiangXin, limits the mapped variant.
* **Fire-and-forget plus a sensor.** ``submit`` creates tasks with ``wait_for_completion=False`` (it returns the
  taskId at once); ``wait`` is a deferrable ``LiangxinTaskSensor`` mapped over those taskIds, and ``save`` stores
  each finished image with ``store_results`` from ``airflow_provider_liangxin.results``. Use this shape when
  something else should happen between submitting and waiting, or when the task is created elsewhere.
* **Readable mapped tasks.** Each mapped instance is labelled (``map_index_template``) with its model and the
  start of its prompt, cut at a word boundary, or with its LiangXin taskId, instead of a bare index.
* ``write_manifest`` collects every result (of all three variants) into
  ``<output dir>/manifests/<dag_id>__<run_id>.json``.

Before you run it
-----------------
Same as ``liangxin_seedream_single``: a ``liangxin_default`` connection, a running triggerer, and optionally
``LIANGXIN_OUTPUT_DIR`` (default ``/tmp/liangxin-output``) and ``LIANGXIN_POLL_INTERVAL`` (default 10 s).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_liangxin.operators.liangxin import LiangxinBatchCreateTaskOperator, LiangxinCreateTaskOperator
from airflow_provider_liangxin.sensors.liangxin import LiangxinTaskSensor

OUTPUT_DIR = os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output")
POLL_INTERVAL = float(os.environ.get("LIANGXIN_POLL_INTERVAL", "10"))

#: Labels of mapped instances (instead of bare indexes): Jinja's ``truncate`` cuts at a word boundary and adds "…".
GENERATE_LABEL = "{{ task.model }}: {{ task.input.prompt | truncate(40, end='…') }}"
PROMPT_LABEL = "{{ task.input.prompt | truncate(40, end='…') }}"
TASK_ID_LABEL = "{{ task.liangxin_task_id }}"

DEFAULT_PROMPTS = [
    "A cozy reading nook by a rainy window, soft lamplight, film photograph",
    "Isometric illustration of a tiny floating island with a windmill and a waterfall",
    "A bowl of ramen on a wooden counter, steam rising, studio food photography",
]


@dag(
    dag_id="liangxin_content_batch",
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["liangxin", "example"],
    doc_md=__doc__,
    params={
        "prompts": Param(
            DEFAULT_PROMPTS,
            type="array",
            items={"type": "string"},
            minItems=1,
            description="One image per prompt and model (both variants use every prompt).",
        ),
        "models": Param(
            ["seedream-v4-5", "z-image"],
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Models of the operator variant: every prompt is generated once per model.",
        ),
        "aspect_ratio": Param("1:1", type="string", description="Shape of every image, e.g. 1:1, 16:9, 9:16."),
        "sensor_model": Param("seedream-v4-5", type="string", description="Model of the sensor-based variant."),
    },
)
def liangxin_content_batch():
    # ---- Variant 1: the operator creates, waits (deferred) and stores, once per (model, prompt).
    @task
    def plan_generations(params: dict[str, Any]) -> list[dict[str, Any]]:
        """One ``{"model", "input"}`` per (model, prompt): the keyword arguments of each mapped ``generate``."""
        return [
            {"model": model, "input": {"prompt": prompt, "aspect_ratio": params["aspect_ratio"]}}
            for model in params["models"]
            for prompt in params["prompts"]
        ]

    plan = plan_generations()
    generate = LiangxinCreateTaskOperator.partial(
        task_id="generate",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=30 * 60,
        output_path=OUTPUT_DIR,
        map_index_template=GENERATE_LABEL,
    ).expand_kwargs(plan)

    # ---- Variant 1b: the same requests in ONE task instance (items are {"model", "input"} dicts).
    generate_batch = LiangxinBatchCreateTaskOperator(
        task_id="generate_batch",
        inputs=plan,  # an upstream task's list; validated (all items) before anything is paid for
        max_in_flight=100,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=60 * 60,
        output_path=OUTPUT_DIR,
        max_failed=0,  # any failed item fails the task; a retry re-creates only the failed ones
    )

    # ---- Variant 2: create without waiting, then wait with a deferrable sensor mapped over the taskIds.
    @task
    def plan_submissions(params: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"prompt": prompt, "aspect_ratio": params["aspect_ratio"]} for prompt in params["prompts"]]

    submit = LiangxinCreateTaskOperator.partial(
        task_id="submit",
        model="{{ params.sensor_model }}",
        wait_for_completion=False,  # returns the LiangXin taskId right away
        map_index_template=PROMPT_LABEL,
    ).expand(input=plan_submissions())

    wait = LiangxinTaskSensor.partial(
        task_id="wait",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=30 * 60,
        map_index_template=TASK_ID_LABEL,
    ).expand(liangxin_task_id=submit.output)

    @task(map_index_template="{{ liangxin_task_id }}")
    def save(result: dict[str, Any]) -> dict[str, Any]:
        """Download one finished task's images (the operator does this itself when given ``output_path``).

        The operator passes the connection's download policy for you; here it is spelled out: results may come
        from the API's own host even when it is private (the simulator on 127.0.0.1), other private hosts only
        with the connection's ``allow_private_result_hosts`` extra.
        """
        from airflow.sdk import get_current_context

        from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
        from airflow_provider_liangxin.results import store_results

        get_current_context()["liangxin_task_id"] = result["task_id"]  # this instance's label
        settings = LiangxinHook().settings
        stored = store_results(
            result,
            OUTPUT_DIR,
            verify_ssl=settings.verify_ssl,
            allow_private_hosts=settings.allow_private_result_hosts,
            trusted_base_url=settings.base_url,
        )
        return {**result, "stored": stored}

    saved = save.expand(result=wait.output)

    # ---- Every variant ends in one manifest.
    @task
    def write_manifest(
        generated: list[dict[str, Any]],
        batched: list[dict[str, Any]],
        waited: list[dict[str, Any]],
        requests: list[dict[str, Any]],
        dag_run=None,
    ) -> str:
        # The batch's results are in input order and name their item's index: the prompt is the request's.
        batched = [{**r, "param": requests[r["index"]]} for r in batched]
        images = []
        for variant, results in (("operator", generated), ("batch", batched), ("sensor", waited)):
            for result in results:
                for stored in result.get("stored") or []:
                    images.append(
                        {
                            "variant": variant,
                            "liangxin_task_id": result["task_id"],
                            "model": result["model"],
                            "prompt": ((result.get("param") or {}).get("input") or {}).get("prompt"),
                            "path": stored["path"],
                            "sidecar": stored["sidecar"],
                            "source_url": stored.get("source_url"),
                            "sha256": stored.get("sha256"),
                        }
                    )
        safe_run_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", dag_run.run_id)
        manifest = Path(OUTPUT_DIR) / "manifests" / f"{dag_run.dag_id}__{safe_run_id}.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"run_id": dag_run.run_id, "images": images}, indent=2))
        print(f"Manifest of {len(images)} images written to {manifest}")
        return str(manifest)

    write_manifest(generate.output, generate_batch.output, saved, plan)


liangxin_content_batch()
