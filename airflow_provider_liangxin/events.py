"""The contract between the LiangXin trigger and the tasks that wait on it, and the one way a wait ends.

The trigger reports a wait's end as an event; the worker's own polls (the operator's sync loop, the sensor's pokes,
the status check right after createTask) reach the same ends without one. Both go through :func:`settle`, so every
mode raises the same exception for the same outcome. Kept free of HTTP clients (no hook import): the operator, the
sensor and the trigger all import it while a DAG file is parsed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
)

from airflow_provider_liangxin._api import (
    LiangxinRateLimitError,
    LiangxinServerError,
    LiangxinTransportError,
    RetryPolicy,
    TaskRecord,
    without_secret,
)

EventStatus = Literal["success", "fail", "timeout", "error"]
EVENT_STATUSES: frozenset[str] = frozenset({"success", "fail", "timeout", "error"})
#: Not an end: the api-server's callback receiver resumed the task because LiangXin called back. The operator
#: checks LiangXin once and finishes or defers again; anything else treats it as an unknown status (never success).
CALLBACK_STATUS = "callback"

#: Poll failures that may clear up by themselves (each already retried by the hook); anything else (401, 403,
#: 404, a malformed answer) ends the wait at once. A request cut short by a deadline is a transport error too.
TRANSIENT_ERRORS = (LiangxinServerError, LiangxinRateLimitError, LiangxinTransportError)

#: Default ``max_error_duration``: transient poll errors tolerated in a row for this many seconds.
DEFAULT_MAX_ERROR_DURATION = 300.0

NO_CANCEL_NOTE = "The LiangXin API has no cancel endpoint: task {task_id} may still finish (and be billed) on LiangXin."


class LiangxinTaskFailedException(AirflowException):
    """The LiangXin task ended in ``fail``; ``fail_code`` and ``fail_msg`` are LiangXin's reasons.

    An ``AirflowException``, so the operator's Airflow retries apply: a retry creates a new LiangXin task.
    """

    def __init__(self, task_id: str, fail_code: Any, fail_msg: Any) -> None:
        self.task_id = task_id
        self.fail_code = fail_code
        self.fail_msg = fail_msg
        super().__init__(f"LiangXin task {task_id} failed: failCode={fail_code!r} failMsg={fail_msg!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.fail_code, self.fail_msg))


class LiangxinSensorTaskFailedException(LiangxinTaskFailedException, AirflowFailException):
    """The sensor's form of a LiangXin ``fail``: poking again cannot change it, so it fails without retries
    (``AirflowFailException``), and ``soft_fail`` turns it into a skip in every mode."""


class LiangxinTaskWaitException(Exception):
    """The wait itself broke: an API error that no poll can fix (401, 403, 404, a malformed answer), transient
    errors for longer than ``max_error_duration``, or an exception in the trigger.

    Deliberately not an ``AirflowException``: like an API error raised by a poke, it fails the try (Airflow
    retries it) and a sensor's ``soft_fail`` does not skip it (``never_fail`` does), in every mode.
    """


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

    @property
    def earliest(self) -> float | None:
        """The nearest deadline (epoch seconds), the bound handed to every request of the wait."""
        ends = [d for d in (self.wait, self.execution) if d is not None]
        return min(ends) if ends else None

    def passed(self, now: float) -> str | None:
        """Why the wait is over, or None."""
        if self.execution is not None and now >= self.execution:
            return "the task's execution_timeout has passed"
        if self.wait is not None and now >= self.wait:
            return "the wait timeout has passed"
        return None

    def remaining(self, now: float) -> float | None:
        """Seconds to the nearest deadline (None: no deadline)."""
        earliest = self.earliest
        return max(0.0, earliest - now) if earliest is not None else None

    def sleep_for(self, now: float, poll_interval: float) -> float:
        """The next poll's delay, never sleeping past a deadline."""
        remaining = self.remaining(now)
        return poll_interval if remaining is None else min(poll_interval, remaining)

    def backstop(self, poll_interval: float) -> timedelta | None:
        """``defer(timeout=)``: late enough never to pre-empt the trigger's own, more useful, timeout event."""
        earliest = self.earliest
        return timedelta(seconds=earliest - time.time() + 2 * poll_interval + 60) if earliest is not None else None


class ErrorBudget:
    """How long transient poll errors may last in a row before the wait gives up (``max_error_duration``).

    A time, not a count: polls vary in length (each includes the hook's own retries), so a count of failed polls
    would tolerate outages of random length.
    """

    def __init__(self, max_error_duration: float) -> None:
        self.max_error_duration = max_error_duration
        self.first_failure: float | None = None
        self.failures = 0

    def failed(self, now: float) -> bool:
        """Record a transient failure; True when the budget is spent."""
        if self.first_failure is None:
            self.first_failure = now
        self.failures += 1
        return now - self.first_failure >= self.max_error_duration

    def succeeded(self) -> None:
        self.first_failure = None
        self.failures = 0

    def describe(self, now: float) -> str:
        since = now - (self.first_failure if self.first_failure is not None else now)
        return f"{self.failures} polls failed over {since:.0f} s (max_error_duration={self.max_error_duration:g} s)"


# ----------------------------------------------------------------------------------------------- arguments


def check_number(
    name: str, value: Any, *, owner: str = "", optional: bool = False, integer: bool = False, zero: bool = False
) -> Any:
    """A finite number > 0 (``>= 0`` with ``zero``; ``>= 1`` for integers), checked where the DAG is parsed.

    Rejects bools (``True`` is an int to Python, never a timeout to a user), NaN (a NaN poll interval busy-polls)
    and infinities (``timeout=inf`` would crash ``defer()`` after the paid createTask, on every retry).
    """
    prefix = f"{owner}: " if owner else ""
    if value is None and optional:
        return None
    kind = "an integer" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int if integer else (int, float))
        or not math.isfinite(value)
        or (value < 1 if integer else (value < 0 if zero else value <= 0))
    ):
        bound = ">= 1" if integer else (">= 0" if zero else "> 0")
        raise ValueError(
            f"{prefix}{name} must be {kind} {bound}{' or None' if optional else ''} (finite), got {value!r}"
        )
    return value if integer else float(value)


def normalize_retry(retry: Mapping[str, Any] | None, *, owner: str = "") -> dict[str, Any] | None:
    """The JSON-native retry settings the hook, the trigger and the downloads share, or None for the defaults.

    Unknown keys, bools and non-finite numbers fail here, when the DAG is parsed, not in the triggerer.
    """
    if retry is None:
        return None
    prefix = f"{owner}: " if owner else ""
    settings = RetryPolicy.from_kwargs(retry).to_dict()
    for key, value in settings.items():
        if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{prefix}retry.{key} must be a finite number, got {value!r}")
    return settings


# -------------------------------------------------------------------------------------------------- events


def make_event(status: EventStatus, task_id: str, message: str, record: TaskRecord | None = None) -> dict[str, Any]:
    """The event payload, JSON-native: ``{"status", "task_id", "message", "record"}``."""
    return {
        "status": status,
        "task_id": task_id,
        "message": message,
        "record": record.to_dict() if record is not None else None,
    }


def event_for_record(record: TaskRecord) -> dict[str, Any]:
    """The trigger's terminal event for a terminal record."""
    if record.state.is_success:
        return make_event("success", record.task_id, f"LiangXin task {record.task_id} succeeded", record)
    return make_event("fail", record.task_id, f"LiangXin task {record.task_id} failed: {record.fail_msg}", record)


def settle(
    status: str,
    task_id: str,
    message: str = "",
    record: TaskRecord | Mapping[str, Any] | None = None,
    *,
    sensor: bool = False,
) -> TaskRecord:
    """Return the successful record, or raise what the outcome means for the task. The one raise-or-return.

    ``fail`` raises :class:`LiangxinTaskFailedException` (the sensor's subclass also fails without retries);
    ``timeout`` an ``AirflowException`` naming the no-cancel caveat (the sensor: ``AirflowSensorTimeout``);
    ``error`` a :class:`LiangxinTaskWaitException`. A success without a successful record is a bug, never a success.
    """
    if status == "success":
        parsed = TaskRecord.from_dict(record) if isinstance(record, Mapping) else record
        if parsed is None or not parsed.state.is_success:
            state = parsed.state.value if parsed is not None else None
            raise AirflowException(f"LiangXin task {task_id}: success event with state {state!r}")
        return parsed
    if status == "fail":
        data = record.to_dict() if isinstance(record, TaskRecord) else (record or {})
        failed = LiangxinSensorTaskFailedException if sensor else LiangxinTaskFailedException
        raise failed(task_id, data.get("fail_code"), data.get("fail_msg"))
    if status == "timeout":
        note = NO_CANCEL_NOTE.format(task_id=task_id)
        text = f"Gave up waiting for LiangXin task {task_id}: {message.rstrip('.')}. {note}"
        raise AirflowSensorTimeout(text) if sensor else AirflowException(text)
    if status == "error":
        raise wait_error(task_id, message)
    raise AirflowException(f"LiangXin task {task_id}: unknown outcome {status!r}")


def wait_error(task_id: str, message: str) -> LiangxinTaskWaitException:
    """The ``error`` outcome, for the worker's own poll loop to raise ``from`` its cause."""
    return LiangxinTaskWaitException(f"Error while waiting for LiangXin task {task_id}: {message}")


def settle_record(record: TaskRecord, *, sensor: bool = False) -> TaskRecord:
    """A terminal record polled by the worker itself: return it on success, raise on fail."""
    return settle("success" if record.state.is_success else "fail", record.task_id, record=record, sensor=sensor)


def timed_out(task_id: str, reason: str, *, sensor: bool = False) -> NoReturn:
    """The worker's own poll loop passed a deadline."""
    settle("timeout", task_id, reason, sensor=sensor)
    raise AssertionError("unreachable: settle raises for a timeout")  # pragma: no cover


def record_from_event(event: Any, *, sensor: bool = False) -> TaskRecord:
    """Resume from a trigger event: return the successful record or raise (see :func:`settle`).

    ``None``, a non-dict or an unknown status is a bug somewhere, and is never mistaken for success.
    """
    if not isinstance(event, Mapping):
        raise AirflowException(f"LiangXin trigger returned no usable event: {event!r}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise AirflowException(f"LiangXin trigger returned an unknown event status {status!r}: {dict(event)!r}")
    return settle(
        status,
        event.get("task_id") or "<unknown>",
        event.get("message") or "",
        event.get("record"),
        sensor=sensor,
    )


__all__ = [
    "CALLBACK_STATUS",
    "DEFAULT_MAX_ERROR_DURATION",
    "EVENT_STATUSES",
    "NO_CANCEL_NOTE",
    "TRANSIENT_ERRORS",
    "Deadlines",
    "ErrorBudget",
    "EventStatus",
    "LiangxinSensorTaskFailedException",
    "LiangxinTaskFailedException",
    "LiangxinTaskWaitException",
    "check_number",
    "event_for_record",
    "make_event",
    "normalize_retry",
    "record_from_event",
    "settle",
    "settle_record",
    "timed_out",
    "wait_error",
    "without_secret",
]
