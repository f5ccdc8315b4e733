"""The simulated API's behaviour, free of HTTP plumbing: request in, :class:`Answer` out.

Kept synchronous and framework-free so the rules (validation order, fault precedence, task creation) read
top to bottom in one place; the FastAPI routes only move bytes and apply an answer's delay or drop.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_liangxin.models import (
    InputValidationError,
    is_video_model,
    output_dimensions,
    validate_input,
)
from airflow_provider_liangxin.simulator.callbacks import CallbackDispatcher
from airflow_provider_liangxin.simulator.config import SimulatorConfig
from airflow_provider_liangxin.simulator.faults import FaultConfig, FaultDice, PromptMarkers, parse_markers
from airflow_provider_liangxin.simulator.images import content_key, scaled_size
from airflow_provider_liangxin.simulator.lifecycle import phase_lengths_ms
from airflow_provider_liangxin.simulator.persistence import TaskDB
from airflow_provider_liangxin.simulator.shapes import (
    TASK_NOT_FOUND,
    Answer,
    bad_request,
    business_error,
    gateway_error,
    request_id,
)
from airflow_provider_liangxin.simulator.state import (
    CALLBACK_NONE,
    CALLBACK_PENDING,
    OUTCOME_FAIL,
    OUTCOME_NEVER,
    OUTCOME_SUCCESS,
    Task,
    TaskStore,
    dumps,
    now_ms,
)
from airflow_provider_liangxin.simulator.stats import Stats

logger = logging.getLogger("airflow_provider_liangxin.simulator")

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Simulator:
    """One simulated LiangXin deployment: its tasks, faults, counters and callback dispatcher."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        db = TaskDB(self.config.db_path) if self.config.db_path else None
        self.store = TaskStore(self.config.public_base_url, db)
        self.stats = Stats()
        self.dice = FaultDice(self.config.faults)
        self.api_keys = frozenset(key.encode() for key in self.config.api_keys)
        self.callbacks = CallbackDispatcher(
            self.store,
            attempts=self.config.callback_attempts,
            backoff=self.config.callback_backoff,
            timeout=self.config.callback_timeout,
        )

    # ------------------------------------------------------------------------------------------- control

    async def start(self) -> None:
        await self.callbacks.start()

    async def stop(self) -> None:
        await self.callbacks.stop()
        if self.store.db is not None:
            self.store.db.close()

    def set_faults(self, faults: FaultConfig) -> None:
        self.dice = FaultDice(faults)

    def reset(self) -> None:
        """Forget tasks, counters and deliveries, and restore the faults the run started with."""
        self.store.clear()
        self.stats.reset()
        self.callbacks.reset()
        self.dice = FaultDice(self.config.faults)

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.stats.snapshot(),
            "task_count": len(self.store),
            "task_ids": list(self.store.tasks),
            "callbacks": self.callbacks.summary(),
        }

    # ---------------------------------------------------------------------------------------- createTask

    def create_task(self, raw: bytes) -> Answer:
        """Gateway faults first (as new-api would), then validation, then upstream faults, then the task."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return bad_request("request body must be valid JSON")
        if not isinstance(body, dict):
            return bad_request("request body must be a JSON object")
        model = body.get("model")
        if model is None or (isinstance(model, str) and not model.strip()):
            return bad_request("model is required")
        if not isinstance(model, str):
            return bad_request("model must be a string")
        inp = body.get("input")
        if inp is None:
            return bad_request("input is required")
        if not isinstance(inp, dict):
            return bad_request("input must be a JSON object")

        markers = parse_markers(inp.get("prompt"))
        faults = self.dice.for_model(model)
        roll = self.dice.roll
        delay = faults.slow_seconds if markers.slow or roll(faults.slow_rate) else 0.0
        if markers.drop or roll(faults.drop_rate):
            return Answer(0, delay=delay, drop=True)
        if markers.status == 403 or roll(faults.quota_error_rate):
            return self._quota_error(delay)
        if markers.status == 429 or roll(faults.rate_limit_rate):
            return self._rate_limited(faults, delay)

        try:
            validate_input(model, inp, strict=True)
        except InputValidationError as exc:
            return Answer(400, business_error(400, "; ".join(exc.problems)), delay=delay)
        if model in faults.unpriced_models:
            return Answer(400, business_error(400, f"no price configured for model {model}"), delay=delay)
        callback_url = body.get("callBackUrl")
        if callback_url not in (None, "") and not self._callback_allowed(callback_url):
            return Answer(400, business_error(400, "callBackUrl must be a public https URL"), delay=delay)

        if markers.status == 422 or roll(faults.upstream_error_rate):
            msg = "upstream validation failed: the provider rejected the request (simulated)"
            return Answer(422, business_error(422, msg), delay=delay)
        if markers.status == 500 or roll(faults.create_error_rate):
            return Answer(500, business_error(500, "simulated internal error"), delay=delay)

        task = self._new_task(model, inp, body, callback_url or None, markers, faults)
        return Answer(
            200, dumps({"code": 200, "msg": "success", "data": {"taskId": task.task_id}}), None, task.task_id, delay
        )

    def _new_task(
        self,
        model: str,
        inp: dict[str, Any],
        body: dict[str, Any],
        callback_url: str | None,
        markers: PromptMarkers,
        faults: FaultConfig,
    ) -> Task:
        created = now_ms()
        task_id = self.store.new_task_id(model, created)
        lengths = phase_lengths_ms(
            faults.durations or self.config.durations, self.config.jitter, self.config.seed, task_id
        )
        outcome, fail_code, fail_msg = OUTCOME_SUCCESS, "", ""
        if markers.never or self.dice.roll(faults.never_rate):
            outcome = OUTCOME_NEVER
        elif markers.fail or self.dice.roll(faults.task_fail_rate):
            outcome = OUTCOME_FAIL
            fail_code, fail_msg = markers.fail or (faults.fail_code, faults.fail_msg)
        width, height = self._dimensions(model, inp)
        seed = inp.get("seed")
        task = Task(
            task_id=task_id,
            model=model,
            param=dumps(body).decode(),
            created_ms=created,
            lengths=lengths,
            outcome=outcome,
            fail_code=fail_code,
            fail_msg=fail_msg,
            callback_url=callback_url,
            slow=markers.slow,
            width=width,
            height=height,
            # Without a seed a real model gives a new picture each time: the task id stands in for it.
            content_key=content_key(str(inp.get("prompt") or ""), seed if seed is not None else task_id).hex(),
            video=is_video_model(model),
            callback_state=CALLBACK_PENDING if callback_url and outcome != OUTCOME_NEVER else CALLBACK_NONE,
        )
        self.store.add(task)
        self.stats.created_per_model[model] += 1
        if task.callback_state == CALLBACK_PENDING:
            self.callbacks.schedule(task)
        return task

    def _dimensions(self, model: str, inp: dict[str, Any]) -> tuple[int, int]:
        try:
            width, height = output_dimensions(model, inp)
        except (KeyError, ValueError, TypeError) as exc:
            # The input passed validation, so this is a gap in the size tables, not the caller's fault.
            logger.warning("no output size for %s (%s); using 1024x1024", model, exc)
            width, height = 1024, 1024
        return scaled_size(width, height, self.config.max_image_side)

    def _callback_allowed(self, url: Any) -> bool:
        if not isinstance(url, str):
            return False
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            return False
        if not host:
            return False
        if parts.scheme == "https":
            return True
        return parts.scheme == "http" and self.config.allow_insecure_callbacks and host in _LOCAL_HOSTS

    @staticmethod
    def _quota_error(delay: float) -> Answer:
        body = gateway_error(f"user quota is not enough (request id: {request_id()})", "insufficient_user_quota")
        return Answer(403, body, delay=delay)

    @staticmethod
    def _rate_limited(faults: FaultConfig, delay: float) -> Answer:
        message = f"the current group's upstream load is saturated, please try again later (request id: {request_id()})"
        body = gateway_error(message, "rate_limit_exceeded")
        return Answer(429, body, {"Retry-After": str(faults.retry_after)}, delay=delay)

    # ---------------------------------------------------------------------------------------- recordInfo

    def record_info(self, task_id: str | None, base_url: str | None = None) -> Answer:
        """The hot path: one dict lookup, a few no-op dice when no faults are set, a cached body."""
        if not task_id:
            return bad_request("taskId is required")
        task = self.store.get(task_id)
        faults = self.dice.for_model(task.model if task is not None else None)
        roll = self.dice.roll
        delay = faults.slow_seconds if (task is not None and task.slow) or roll(faults.slow_rate) else 0.0
        if roll(faults.recordinfo_drop_rate):
            return Answer(0, task_id=task_id, delay=delay, drop=True)
        if roll(faults.recordinfo_rate_limit_rate):
            return self._rate_limited(faults, delay)
        if roll(faults.recordinfo_error_rate):
            return Answer(500, business_error(500, "simulated internal error"), task_id=task_id, delay=delay)
        if task is None:
            return Answer(404, TASK_NOT_FOUND, task_id=task_id, delay=delay)
        return Answer(200, self.store.record_body(task, now_ms(), base_url), None, task_id, delay)
