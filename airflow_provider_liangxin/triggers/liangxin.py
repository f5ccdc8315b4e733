"""LiangxinTaskTrigger: wait for a LiangXin task in the triggerer (the event contract is in ``events``).

The trigger runs on the triggerer's single event loop beside every other deferred task of the deployment, so it
only awaits: the connection is resolved with the async API, HTTP goes through the hook's shared aiohttp session,
and it sleeps with ``asyncio.sleep``. It yields exactly one event and returns; it never raises (a raising trigger
resumes the task with ``TaskDeferralError`` and skips ``execute_complete``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_liangxin._api import LiangxinError, LiangxinTaskNotFoundError
from airflow_provider_liangxin.callbacks import (
    DEFAULT_DEFERRAL_SETTLE_SECONDS,
    MAX_DEFERRAL_SETTLE_SECONDS,
    is_token_hash,
)
from airflow_provider_liangxin.events import (
    DEFAULT_MAX_ERROR_DURATION,
    NO_CANCEL_NOTE,
    TRANSIENT_ERRORS,
    Deadlines,
    ErrorBudget,
    check_number,
    event_for_record,
    make_event,
    normalize_retry,
    without_secret,
)
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook


class LiangxinTaskTrigger(BaseTrigger):
    """Poll a LiangXin task's recordInfo until it succeeds, fails, or a deadline passes.

    :param liangxin_task_id: The LiangXin taskId to watch.
    :param liangxin_conn_id: The Airflow connection (the key never enters the trigger's kwargs).
    :param poll_interval: Seconds between polls.
    :param deadline: Epoch seconds after which the wait ends with a ``timeout`` event (absolute, so a
        triggerer restart does not reset it).
    :param execution_deadline: Epoch seconds from the task's ``execution_timeout``, which Airflow does not
        enforce while a task is deferred.
    :param request_timeout: Whole-request HTTP timeout in seconds; the connection's extra applies when None.
    :param retry: The hook's JSON-native retry settings.
    :param max_error_duration: Seconds of transient poll failures in a row (each poll already retried by the
        hook) after which the wait ends with an ``error`` event.
    :param max_consecutive_errors: Optional cap on transient poll failures in a row, on top of
        ``max_error_duration``. Kept so triggers serialized by earlier versions (which always set it) still load.
    :param callback_token_sha256: Set when LiangXin was given a callback URL for this task try: the sha256 of its
        token, which the api-server's callback receiver checks (the token itself is stored nowhere). The trigger
        then only polls as a slow fallback (``poll_interval`` is the fallback interval; the first poll is
        immediate); a callback resumes the task without it.
    :param callback_wakeups: Callbacks that already woke this task try (the operator caps them).
    :param settle_seconds: The event lands no sooner than this many seconds after the trigger started (see
        :func:`~airflow_provider_liangxin.callbacks.deferral_settle_seconds`: Airflow 3.3 fails a task resumed
        before its deferral has settled). 0 turns the hold off.
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
        max_error_duration: float = DEFAULT_MAX_ERROR_DURATION,
        max_consecutive_errors: int | None = None,
        callback_token_sha256: str | None = None,
        callback_wakeups: int = 0,
        settle_seconds: float = DEFAULT_DEFERRAL_SETTLE_SECONDS,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.liangxin_task_id = liangxin_task_id
        self.liangxin_conn_id = liangxin_conn_id
        self.poll_interval = check_number("poll_interval", poll_interval, owner=owner)
        self.deadline = check_number("deadline", deadline, owner=owner, optional=True)
        self.execution_deadline = check_number("execution_deadline", execution_deadline, owner=owner, optional=True)
        self.request_timeout = check_number("request_timeout", request_timeout, owner=owner, optional=True)
        self.retry = normalize_retry(retry, owner=owner)
        self.max_error_duration = check_number("max_error_duration", max_error_duration, owner=owner, zero=True)
        self.max_consecutive_errors = (
            max(1, int(max_consecutive_errors)) if max_consecutive_errors is not None else None
        )
        if callback_token_sha256 is not None and not is_token_hash(callback_token_sha256):
            raise ValueError(f"{owner}: callback_token_sha256 must be a hex sha256 (the token is never stored)")
        self.callback_token_sha256 = callback_token_sha256
        if isinstance(callback_wakeups, bool) or not isinstance(callback_wakeups, int) or callback_wakeups < 0:
            raise ValueError(f"{owner}: callback_wakeups must be an integer >= 0, got {callback_wakeups!r}")
        self.callback_wakeups = callback_wakeups
        self.settle_seconds = _check_settle(settle_seconds, owner)

    @classmethod
    def for_wait(
        cls,
        liangxin_task_id: str,
        deadlines: Deadlines,
        *,
        liangxin_conn_id: str,
        poll_interval: float,
        request_timeout: float | None,
        retry: Mapping[str, Any] | None,
        max_error_duration: float,
        callback_token_sha256: str | None = None,
        callback_wakeups: int = 0,
        settle_seconds: float = DEFAULT_DEFERRAL_SETTLE_SECONDS,
    ) -> LiangxinTaskTrigger:
        """The trigger for a task's wait: what the operator and the sensor defer to."""
        return cls(
            liangxin_task_id=liangxin_task_id,
            liangxin_conn_id=liangxin_conn_id,
            poll_interval=poll_interval,
            deadline=deadlines.wait,
            execution_deadline=deadlines.execution,
            request_timeout=request_timeout,
            retry=retry,
            max_error_duration=max_error_duration,
            callback_token_sha256=callback_token_sha256,
            callback_wakeups=callback_wakeups,
            settle_seconds=settle_seconds,
        )

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
                "max_error_duration": self.max_error_duration,
                "max_consecutive_errors": self.max_consecutive_errors,
                "callback_token_sha256": self.callback_token_sha256,
                "callback_wakeups": self.callback_wakeups,
                "settle_seconds": self.settle_seconds,
            },
        )

    def _hook(self) -> LiangxinHook:
        return LiangxinHook(self.liangxin_conn_id, timeout=self.request_timeout, retry=self.retry)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        task_id = self.liangxin_task_id
        hook = self._hook()
        event: dict[str, Any]
        try:
            event = await self._wait(hook)
        except Exception as exc:
            event = make_event("error", task_id, f"{type(exc).__name__}: {exc}")
        # A hostile server may echo the Authorization header into an error text: the event is stored in the
        # metadata DB and read by the worker, so the key is taken out here, not only masked in this process's log.
        event = _without_key(event, hook)
        await _hold_until_settled(self, started, f"LiangXin task {task_id} {event['status']}")
        self.log.info("LiangxinTaskTrigger: LiangXin task %s -> %s (%s)", task_id, event["status"], event["message"])
        yield TriggerEvent(event)

    async def _wait(self, hook: LiangxinHook) -> dict[str, Any]:
        task_id = self.liangxin_task_id
        budget = ErrorBudget(self.max_error_duration)
        last_state = None
        deadlines = Deadlines(self.deadline, self.execution_deadline)
        async with hook:
            if self.callback_token_sha256:
                self.log.info(
                    "LiangxinTaskTrigger: waiting for LiangXin task %s (callback expected; fallback poll every %g s)",
                    task_id,
                    self.poll_interval,
                )
            else:
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
                    now = time.time()
                    spent = budget.failed(now)
                    if spent or (
                        self.max_consecutive_errors is not None and budget.failures >= self.max_consecutive_errors
                    ):
                        return make_event("error", task_id, f"{budget.describe(now)}; last error: {exc}")
                    self.log.warning("LiangXin task %s: poll failed (%s): %s", task_id, budget.describe(now), exc)
                except LiangxinError as exc:
                    return make_event("error", task_id, str(exc))
                else:
                    budget.succeeded()
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


def _check_settle(value: Any, owner: str) -> float:
    settle = check_number("settle_seconds", value, owner=owner, zero=True)
    if settle > MAX_DEFERRAL_SETTLE_SECONDS:
        raise ValueError(f"{owner}: settle_seconds must be <= {MAX_DEFERRAL_SETTLE_SECONDS:g}, got {value!r}")
    return float(settle)


async def _hold_until_settled(trigger: LiangxinTaskTrigger | LiangxinBatchTrigger, started: float, what: str) -> None:
    """Sleep out the rest of ``settle_seconds`` since the trigger started, so the event cannot resume the task
    before Airflow has processed the worker's report that its deferring process exited (apache/airflow#72716).

    The trigger's own start is the reference, not the deferral time in the worker: it is never earlier than the
    deferral was recorded, and needs no clock shared between machines. A triggerer restart holds the event again.
    """
    hold = trigger.settle_seconds - (time.monotonic() - started)
    if hold > 0:
        trigger.log.info("%s: event held %.1f s until the deferral has settled (deferral_settle_seconds)", what, hold)
        await asyncio.sleep(hold)


def _without_key(value: Any, hook: LiangxinHook) -> Any:
    """``value`` with the connection's API key replaced (no-op before the connection was resolved)."""
    try:
        key = hook.settings_or_raise().api_key
    except LiangxinError:
        return value
    return without_secret(value, key)


#: Concurrent recordInfo requests of one batch trigger (the shared session's pool holds 100 connections in all).
BATCH_POLL_CONCURRENCY = 50
#: Seconds between progress lines of a batch trigger.
BATCH_LOG_EVERY = 15.0


class LiangxinBatchTrigger(BaseTrigger):
    """Watch many LiangXin tasks of one batch at once, and wake the worker only when it has work to do.

    One trigger per batch, not per item: every in-flight task is polled each ``poll_interval`` through the hook's
    shared aiohttp session (at most :data:`BATCH_POLL_CONCURRENCY` requests at a time). The event fires when
    ``resume_after`` tasks have ended (the worker can create the next wave), when all have ended, or when a
    deadline passes. It carries every finished task's compact record (no ``param`` echo: the worker has the
    input), so the worker makes no recordInfo call of its own.

    Event: ``{"status": "success" | "timeout" | "error", "message": str, "done": {index: record},
    "lost": {index: {"message", "final"}}}``; ``lost`` are tasks that cannot be followed (``final``: LiangXin
    answered 404; else a 401 or a malformed answer, and the task may still be running).

    :param task_ids: ``{str(index): taskId}`` of the tasks in flight (JSON-native; the key never enters kwargs).
    :param resume_after: How many finished tasks make it worth resuming the worker.
    :param settle_seconds: The event lands no sooner than this many seconds after the trigger started (as for
        :class:`LiangxinTaskTrigger`).
    """

    def __init__(
        self,
        task_ids: Mapping[str, str],
        liangxin_conn_id: str = LiangxinHook.default_conn_name,
        poll_interval: float = 10.0,
        resume_after: int | None = None,
        deadline: float | None = None,
        execution_deadline: float | None = None,
        request_timeout: float | None = None,
        retry: Mapping[str, Any] | None = None,
        max_error_duration: float = DEFAULT_MAX_ERROR_DURATION,
        settle_seconds: float = DEFAULT_DEFERRAL_SETTLE_SECONDS,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.task_ids = {str(k): str(v) for k, v in task_ids.items()}
        self.liangxin_conn_id = liangxin_conn_id
        self.poll_interval = check_number("poll_interval", poll_interval, owner=owner)
        wanted = len(self.task_ids) if resume_after is None else int(resume_after)
        self.resume_after = max(1, min(wanted, len(self.task_ids) or 1))
        self.deadline = check_number("deadline", deadline, owner=owner, optional=True)
        self.execution_deadline = check_number("execution_deadline", execution_deadline, owner=owner, optional=True)
        self.request_timeout = check_number("request_timeout", request_timeout, owner=owner, optional=True)
        self.retry = normalize_retry(retry, owner=owner)
        self.max_error_duration = check_number("max_error_duration", max_error_duration, owner=owner, zero=True)
        self.settle_seconds = _check_settle(settle_seconds, owner)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "task_ids": dict(self.task_ids),
                "liangxin_conn_id": self.liangxin_conn_id,
                "poll_interval": self.poll_interval,
                "resume_after": self.resume_after,
                "deadline": self.deadline,
                "execution_deadline": self.execution_deadline,
                "request_timeout": self.request_timeout,
                "retry": self.retry,
                "max_error_duration": self.max_error_duration,
                "settle_seconds": self.settle_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        hook = LiangxinHook(self.liangxin_conn_id, timeout=self.request_timeout, retry=self.retry)
        done: dict[str, dict[str, Any]] = {}
        lost: dict[str, dict[str, Any]] = {}
        try:
            status, message = await self._wait(hook, done, lost)
        except Exception as exc:
            status, message = "error", f"{type(exc).__name__}: {exc}"
        event = _without_key({"status": status, "message": message, "done": done, "lost": lost}, hook)
        await _hold_until_settled(self, started, f"LiangXin batch of {len(self.task_ids)} {status}")
        self.log.info(
            "LiangxinBatchTrigger: %d of %d tasks ended -> %s (%s)",
            len(done) + len(lost),
            len(self.task_ids),
            status,
            message,
        )
        yield TriggerEvent(event)

    async def _wait(
        self, hook: LiangxinHook, done: dict[str, dict[str, Any]], lost: dict[str, dict[str, Any]]
    ) -> tuple[str, str]:
        from airflow_provider_liangxin.batch import compact_record

        remaining = dict(self.task_ids)
        budget = ErrorBudget(self.max_error_duration)
        deadlines = Deadlines(self.deadline, self.execution_deadline)
        limit = asyncio.Semaphore(BATCH_POLL_CONCURRENCY)
        last_log = 0.0

        async def poll(index: str, task_id: str) -> tuple[str, Any]:
            async with limit:
                try:
                    async with asyncio.timeout(deadlines.remaining(time.time())):
                        return index, await hook.aget_task(task_id)
                except TimeoutError:
                    return index, None
                except Exception as exc:
                    return index, exc

        async with hook:
            self.log.info(
                "LiangxinBatchTrigger: watching %d LiangXin tasks (poll every %g s, wake the worker after %d end)",
                len(remaining),
                self.poll_interval,
                self.resume_after,
            )
            while True:
                answers = await asyncio.gather(*(poll(i, t) for i, t in remaining.items()))
                transient: Exception | None = None
                answered = 0
                for index, answer in answers:
                    if answer is None:
                        continue
                    if isinstance(answer, TRANSIENT_ERRORS):
                        transient = answer
                        continue
                    if isinstance(answer, Exception):
                        lost[index] = {
                            "message": str(answer) if isinstance(answer, LiangxinError) else repr(answer),
                            "final": isinstance(answer, LiangxinTaskNotFoundError),
                        }
                        remaining.pop(index, None)
                        continue
                    answered += 1
                    if answer.state.is_terminal:
                        done[index] = compact_record(answer.to_dict())
                        remaining.pop(index, None)
                now = time.time()
                if transient is not None and not answered:
                    # Every poll of the round failed: the API (or the way to it) is down. Give up after
                    # max_error_duration; the tasks keep running and the worker's next try resumes them.
                    if budget.failed(now):
                        return "error", f"{budget.describe(now)}; last error: {transient}"
                    self.log.warning("LiangXin batch polls failed (%s): %s", budget.describe(now), transient)
                else:
                    budget.succeeded()
                ended = len(done) + len(lost)
                if not remaining or ended >= self.resume_after:
                    return "success", f"{ended} of {len(self.task_ids)} tasks ended"
                reason = deadlines.passed(now)
                if reason:
                    return "timeout", reason
                if now - last_log >= BATCH_LOG_EVERY:
                    last_log = now
                    self.log.info(
                        "LiangXin batch: %d running, %d ended (%d succeeded)",
                        len(remaining),
                        ended,
                        sum(1 for r in done.values() if r["state"] == "success"),
                    )
                await asyncio.sleep(deadlines.sleep_for(now, self.poll_interval))

    async def on_kill(self) -> None:
        self.log.warning(
            "The LiangXin API has no cancel endpoint: the %d tasks of this batch may still finish (and be billed) "
            "on LiangXin.",
            len(self.task_ids),
        )


__all__ = ["LiangxinBatchTrigger", "LiangxinTaskTrigger"]
