"""LiangxinTaskTrigger: wait for a LiangXin task in the triggerer, and the one event contract around it.

The trigger runs on the triggerer's single event loop beside every other deferred task of the deployment, so it
only awaits: the connection is resolved with the async API, HTTP goes through the hook's shared aiohttp session,
and it sleeps with ``asyncio.sleep``. It yields exactly one event and returns; it never raises (a raising trigger
resumes the task with ``TaskDeferralError`` and skips ``execute_complete``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from airflow.providers.common.compat.sdk import AirflowException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_liangxin._api import (
    LiangxinError,
    LiangxinRateLimitError,
    LiangxinServerError,
    LiangxinTransportError,
    RetryPolicy,
    TaskRecord,
)
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook

EventStatus = Literal["success", "fail", "timeout", "error"]
EVENT_STATUSES: frozenset[str] = frozenset({"success", "fail", "timeout", "error"})

#: Poll failures that may clear up by themselves; anything else (401/403/404, a malformed answer) ends the wait.
TRANSIENT_ERRORS = (LiangxinServerError, LiangxinRateLimitError, LiangxinTransportError)

NO_CANCEL_NOTE = "The LiangXin API has no cancel endpoint: task {task_id} may still finish (and be billed) on LiangXin."


class LiangxinTaskFailedException(AirflowException):
    """The LiangXin task ended in ``fail``; ``fail_code`` and ``fail_msg`` are LiangXin's reasons."""

    def __init__(self, task_id: str, fail_code: Any, fail_msg: Any) -> None:
        self.task_id = task_id
        self.fail_code = fail_code
        self.fail_msg = fail_msg
        super().__init__(f"LiangXin task {task_id} failed: failCode={fail_code!r} failMsg={fail_msg!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.fail_code, self.fail_msg))


@dataclass(frozen=True)
class Deadlines:
    """Absolute epoch deadlines of one wait, shared by the trigger, the operator's sync poll and the sensor.

    Epoch seconds (not monotonic clocks) so they survive the trip to the triggerer and a triggerer restart.
    """

    wait: float | None = None
    execution: float | None = None

    @classmethod
    def start(cls, context: Mapping[str, Any], timeout: float | None, execution_timeout: timedelta | None) -> Deadlines:
        """``timeout`` counts from now; ``execution_timeout`` from the try's start, as Airflow counts it."""
        now = time.time()
        execution = None
        if execution_timeout is not None:
            started = getattr(context.get("ti"), "start_date", None)
            execution = (started.timestamp() if started is not None else now) + execution_timeout.total_seconds()
        return cls(now + timeout if timeout is not None else None, execution)

    def passed(self, now: float) -> str | None:
        """Why the wait is over, or None."""
        if self.execution is not None and now >= self.execution:
            return "the task's execution_timeout has passed"
        if self.wait is not None and now >= self.wait:
            return "the wait timeout has passed"
        return None

    def remaining(self, now: float) -> float | None:
        """Seconds to the nearest deadline (None: no deadline)."""
        ends = [d - now for d in (self.wait, self.execution) if d is not None]
        return max(0.0, min(ends)) if ends else None

    def sleep_for(self, now: float, poll_interval: float) -> float:
        """The next poll's delay, never sleeping past a deadline."""
        ends = [d - now for d in (self.wait, self.execution) if d is not None]
        return max(0.0, min([poll_interval, *ends]))

    def backstop(self, poll_interval: float) -> timedelta | None:
        """``defer(timeout=)``: late enough never to pre-empt the trigger's own, more useful, timeout event."""
        ends = [d for d in (self.wait, self.execution) if d is not None]
        return timedelta(seconds=min(ends) - time.time() + 2 * poll_interval + 60) if ends else None


def make_event(status: EventStatus, task_id: str, message: str, record: TaskRecord | None = None) -> dict[str, Any]:
    """The event payload, JSON-native: ``{"status", "task_id", "message", "record"}``."""
    return {
        "status": status,
        "task_id": task_id,
        "message": message,
        "record": record.to_dict() if record is not None else None,
    }


def record_from_event(event: Any) -> TaskRecord:
    """Turn an event into the successful record, or raise a task-failing error that says what happened.

    Shared by the operator and the sensor so both resume identically. ``None``, a non-dict or an unknown status
    is a bug somewhere, and is never mistaken for success.
    """
    if not isinstance(event, Mapping):
        raise AirflowException(f"LiangXin trigger returned no usable event: {event!r}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise AirflowException(f"LiangXin trigger returned an unknown event status {status!r}: {dict(event)!r}")
    task_id = event.get("task_id") or "<unknown>"
    message = event.get("message") or ""
    if status == "success":
        record = TaskRecord.from_dict(event["record"])
        if not record.state.is_success:
            raise AirflowException(f"LiangXin task {task_id}: success event with state {record.state.value!r}")
        return record
    if status == "fail":
        record_data = event.get("record") or {}
        raise LiangxinTaskFailedException(task_id, record_data.get("fail_code"), record_data.get("fail_msg"))
    if status == "timeout":
        raise AirflowException(
            f"Gave up waiting for LiangXin task {task_id}: {message} {NO_CANCEL_NOTE.format(task_id=task_id)}"
        )
    raise AirflowException(f"Error while waiting for LiangXin task {task_id}: {message}")


def event_for_record(record: TaskRecord) -> dict[str, Any]:
    """The terminal event for a record (used by the trigger and by the worker's own status checks)."""
    if record.state.is_success:
        return make_event("success", record.task_id, f"LiangXin task {record.task_id} succeeded", record)
    return make_event("fail", record.task_id, f"LiangXin task {record.task_id} failed: {record.fail_msg}", record)


class LiangxinTaskTrigger(BaseTrigger):
    """Poll a LiangXin task's recordInfo until it succeeds, fails, or a deadline passes.

    :param liangxin_task_id: The LiangXin taskId to watch.
    :param liangxin_conn_id: The Airflow connection (the key never enters the trigger's kwargs).
    :param poll_interval: Seconds between polls.
    :param deadline: Epoch seconds after which the wait ends with a ``timeout`` event (absolute, so a
        triggerer restart does not reset it).
    :param execution_deadline: Epoch seconds from the task's ``execution_timeout``, which Airflow does not
        enforce while a task is deferred.
    :param request_timeout: Per-request HTTP timeout; the connection's extra applies when None.
    :param retry: The hook's JSON-native retry settings.
    :param max_consecutive_errors: Transient poll failures in a row (each already retried by the hook) that end
        the wait with an ``error`` event.
    """

    def __init__(
        self,
        liangxin_task_id: str,
        liangxin_conn_id: str = LiangxinHook.default_conn_name,
        poll_interval: float = 10.0,
        deadline: float | None = None,
        execution_deadline: float | None = None,
        request_timeout: float | None = None,
        retry: Mapping[str, Any] | None = None,
        max_consecutive_errors: int = 5,
    ) -> None:
        super().__init__()
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        self.liangxin_task_id = liangxin_task_id
        self.liangxin_conn_id = liangxin_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.execution_deadline = execution_deadline
        self.request_timeout = request_timeout
        self.retry = RetryPolicy.from_kwargs(retry).to_dict() if retry is not None else None
        self.max_consecutive_errors = max(1, int(max_consecutive_errors))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "liangxin_task_id": self.liangxin_task_id,
                "liangxin_conn_id": self.liangxin_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "execution_deadline": self.execution_deadline,
                "request_timeout": self.request_timeout,
                "retry": self.retry,
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    def _hook(self) -> LiangxinHook:
        return LiangxinHook(self.liangxin_conn_id, timeout=self.request_timeout, retry=self.retry)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        task_id = self.liangxin_task_id
        event: dict[str, Any] | None = None
        try:
            event = await self._wait()
        except Exception as exc:
            event = make_event("error", task_id, f"{type(exc).__name__}: {exc}")
        self.log.info("LiangxinTaskTrigger: LiangXin task %s -> %s (%s)", task_id, event["status"], event["message"])
        yield TriggerEvent(event)

    async def _wait(self) -> dict[str, Any]:
        task_id = self.liangxin_task_id
        failures = 0
        last_state = None
        deadlines = Deadlines(self.deadline, self.execution_deadline)
        async with self._hook() as hook:
            self.log.info(
                "LiangxinTaskTrigger: waiting for LiangXin task %s (poll every %g s)", task_id, self.poll_interval
            )
            while True:
                try:
                    # A poll (with the hook's retries) never runs past a deadline: the trigger, not Airflow's
                    # backstop deferral timeout, must be the one to report it.
                    async with asyncio.timeout(deadlines.remaining(time.time())):
                        record = await hook.aget_task(task_id)
                except TimeoutError:
                    return make_event("timeout", task_id, deadlines.passed(time.time()) or "a deadline passed")
                except TRANSIENT_ERRORS as exc:
                    failures += 1
                    if failures >= self.max_consecutive_errors:
                        return make_event("error", task_id, f"{failures} polls in a row failed; last error: {exc}")
                    self.log.warning("LiangXin task %s: poll failed (%d in a row): %s", task_id, failures, exc)
                except LiangxinError as exc:
                    return make_event("error", task_id, str(exc))
                else:
                    failures = 0
                    if record.state.is_terminal:
                        return event_for_record(record)
                    if record.state is not last_state:
                        self.log.info("LiangXin task %s is %s", task_id, record.state.value)
                        last_state = record.state
                now = time.time()
                reason = deadlines.passed(now)
                if reason:
                    return make_event("timeout", task_id, reason)
                await asyncio.sleep(deadlines.sleep_for(now, self.poll_interval))

    async def on_kill(self) -> None:
        """Airflow 3.3+ calls this when a user marks the deferred task failed/success or clears it."""
        self.log.warning(NO_CANCEL_NOTE.format(task_id=self.liangxin_task_id))
