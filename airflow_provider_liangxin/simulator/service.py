"""The simulated API's behaviour, free of HTTP plumbing: request in, :class:`Answer` out.

Kept synchronous and framework-free so the rules (validation order, fault precedence, task creation) read
top to bottom in one place; the FastAPI routes only move bytes and apply an answer's delay or drop.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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


#: Deeper JSON is refused with a 400 before anything walks it (Python's parser and encoder recurse).
MAX_JSON_DEPTH = 64


def reject_json_constant(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN and Infinity are Python extensions, not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Nesting depth over ``limit``, measured without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A createTask body that is well-formed enough to judge: an object with a model name and an input object."""

    model: str
    input: dict[str, Any]
    callback_url: Any
    #: The body re-serialised: what recordInfo echoes as ``param``.
    param: str

    @classmethod
    def parse(cls, raw: bytes) -> CreateRequest | Answer:
        """The request, or the 400 LiangXin answers for a body it cannot read."""
        decoded = _decode_json_object(raw)
        if isinstance(decoded, Answer):
            return decoded
        body, param = decoded
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
        callback_url = body.get("callBackUrl")
        return cls(model, inp, None if callback_url in (None, "") else callback_url, param)


def _decode_json_object(raw: bytes) -> tuple[dict[str, Any], str] | Answer:
    """The body as a dict plus its canonical re-serialisation, or a 400 for what strict JSON parsers reject:
    bad syntax, NaN/Infinity, nesting deep enough to exhaust a recursive parser, lone surrogate escapes."""
    try:
        body = json.loads(raw, parse_constant=reject_json_constant) if raw else None
    except RecursionError:
        return bad_request("request body must be valid JSON: nested too deeply")
    except ValueError:
        return bad_request("request body must be valid JSON")
    if not isinstance(body, dict):
        return bad_request("request body must be a JSON object")
    if _too_deep(body):
        return bad_request(f"request body must be valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return body, dumps(body).decode()
    except UnicodeEncodeError:
        return bad_request("request body must be valid UTF-8 JSON: a string holds a lone surrogate escape")


def _prompt_of(param: str) -> str | None:
    """``input.prompt`` of a stored request body (None when it has none, e.g. a video model's image-only input)."""
    prompt = json.loads(param).get("input", {}).get("prompt")
    return prompt if isinstance(prompt, str) else None


class Simulator:
    """One simulated LiangXin deployment: its tasks, faults, counters and callback dispatcher."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        db = TaskDB(self.config.db_path) if self.config.db_path else None
        self.store = TaskStore(self.config.public_base_url, db)
        self.stats = Stats()
        if db is not None:
            self.stats.add(db.load_stats())
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
            self.store.db.save_stats(self.stats.snapshot())
            self.store.db.close()

    def set_faults(self, faults: FaultConfig) -> None:
        self.dice = FaultDice(faults)

    def reset(self) -> None:
        """Forget tasks, counters and deliveries, and restore the faults the run started with."""
        self.store.clear()
        self.stats.reset()
        self.callbacks.reset()
        self.dice = FaultDice(self.config.faults)

    def task_list(self) -> list[dict[str, Any]]:
        """Every task with its prompt, current state and decided outcome, for ``GET /_sim/tasks``: what a load
        test compares its Airflow tasks with. No recordInfo call, so no fault dice and no counter is touched."""
        at = now_ms()
        return [
            {
                "taskId": task.task_id,
                "model": task.model,
                "prompt": _prompt_of(task.param),
                "state": task.phase(at).state,
                "outcome": task.outcome,
                "createTime": task.created_ms,
            }
            for task in self.store.tasks.values()
        ]

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.stats.snapshot(),
            "task_count": len(self.store),
            "task_ids": list(self.store.tasks),
            "callbacks": self.callbacks.summary(),
        }

    # ---------------------------------------------------------------------------------------- createTask

    def create_task(self, raw: bytes) -> Answer:
        """Gateway faults first (as new-api would), then validation, then upstream faults, then the task.

        The dice are rolled in this fixed order (and only when no marker decides first), so a seeded load test
        injects the same faults for the same request sequence.
        """
        request = CreateRequest.parse(raw)
        if isinstance(request, Answer):
            return request
        markers = parse_markers(request.input.get("prompt"))
        faults = self.dice.for_model(request.model)
        delay = faults.slow_seconds if markers.slow or self.dice.roll(faults.slow_rate) else 0.0
        refusal = (
            self._gateway_fault(markers, faults, delay)
            or self._rejection(request, faults, delay)
            or self._upstream_fault(markers, faults, delay)
        )
        if refusal is not None:
            return refusal
        task = self._new_task(request, markers, faults)
        body = dumps({"code": 200, "msg": "success", "data": {"taskId": task.task_id}})
        return Answer(200, body, None, task.task_id, delay)

    def _gateway_fault(self, markers: PromptMarkers, faults: FaultConfig, delay: float) -> Answer | None:
        """What new-api answers before the request reaches LiangXin: a drop, a quota error, a rate limit."""
        roll = self.dice.roll
        if markers.drop or roll(faults.drop_rate):
            return Answer(0, delay=delay, drop=True)
        if markers.status == 403 or roll(faults.quota_error_rate):
            return self._quota_error(delay)
        if markers.status == 429 or roll(faults.rate_limit_rate):
            return self._rate_limited(faults, delay)
        return None

    def _rejection(self, request: CreateRequest, faults: FaultConfig, delay: float) -> Answer | None:
        """LiangXin's own 400s: invalid input, an unpriced model, a callback URL it will not call."""
        try:
            validate_input(request.model, request.input, strict=True)
        except InputValidationError as exc:
            return Answer(400, business_error(400, "; ".join(exc.problems)), delay=delay)
        if request.model in faults.unpriced_models:
            return Answer(400, business_error(400, f"no price configured for model {request.model}"), delay=delay)
        if request.callback_url is not None and not self._callback_allowed(request.callback_url):
            return Answer(400, business_error(400, "callBackUrl must be a public https URL"), delay=delay)
        return None

    def _upstream_fault(self, markers: PromptMarkers, faults: FaultConfig, delay: float) -> Answer | None:
        roll = self.dice.roll
        if markers.status == 422 or roll(faults.upstream_error_rate):
            msg = "upstream validation failed: the provider rejected the request (simulated)"
            return Answer(422, business_error(422, msg), delay=delay)
        if markers.status == 500 or roll(faults.create_error_rate):
            return Answer(500, business_error(500, "simulated internal error"), delay=delay)
        return None

    def _new_task(self, request: CreateRequest, markers: PromptMarkers, faults: FaultConfig) -> Task:
        model, inp, callback_url = request.model, request.input, request.callback_url
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
            param=request.param,
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
            callback_state=(
                CALLBACK_PENDING
                if callback_url and outcome != OUTCOME_NEVER and not markers.no_callback
                else CALLBACK_NONE
            ),
            echo_auth=markers.echo_auth,
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

    def record_info(self, task_id: str | None, base_url: str | None = None, authorization: str | None = None) -> Answer:
        """The hot path: one dict lookup, a few no-op dice when no faults are set, a cached body."""
        if not task_id:
            return bad_request("taskId is required")
        task = self.store.get(task_id)
        if task is not None and task.echo_auth:
            # A hostile gateway: echoes the caller's credentials back (clients must mask them in what they log).
            message = f"invalid token (received Authorization: {authorization or '<none>'})"
            return Answer(401, gateway_error(message), task_id=task_id)
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
        self.stats.count_record_info(task_id)
        return Answer(200, self.store.record_body(task, now_ms(), base_url), None, task_id, delay)
