"""The LiangXin callback receiver: the small FastAPI app the plugin mounts in the api-server at ``/liangxin``.

``POST /liangxin/v1/callback/{ti_id}/{token}`` wakes the deferred task instance ``ti_id`` when ``token`` matches the
hash its LiangxinTaskTrigger holds: in one transaction, under the task instance's row lock, it calls
``Trigger.submit_event`` (what the triggerer does when a trigger fires), so it works with several api-server replicas
and with every triggerer down. The task then resumes on a worker, checks LiangXin once (recordInfo, with the key)
and finishes, or defers again. The body is only a hint: nothing in it is trusted beyond its ``taskId``.

Answers are uniform, so the route is no oracle: 204 resumed; 202 accepted, resumed once the deferral has settled
(see below); 404 for an unknown task instance, a wrong token, a task no longer waiting or a taskId that does not
match, alike; 400 a body without a taskId; 413 a body over 64 KiB (read capped, Content-Length not trusted); 429
over the rate limits; 503 the database is unreachable. Nothing outbound is called while handling a request.

The settle rule. On Airflow 3.3 a task resumed within seconds of deferring can be failed by the scheduler: the
worker's stale "exited" report for the deferring try is processed after the resumed try was queued (apache/airflow
#72716). That report leaves no trace in the database, so the receiver cannot wait for it; it waits a margin instead:
a callback for a task that deferred less than ``[liangxin] callback_settle_seconds`` (15 s) ago is answered 202 and
applied by an in-process timer when the margin is over (rechecked from scratch then). The report is normally in
within ~1-6 s (the worker's supervisor notices the exit at its next heartbeat, ``[workers] min_heartbeat_interval``,
5 s by default, then one scheduler loop); 15 s is about three times the worst delay measured under load (5.3 s). If
the api-server restarts while a timer waits, the trigger's fallback poll still finishes the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from airflow_provider_liangxin._airflow_compat import AirflowInternals, WaitingTask
from airflow_provider_liangxin.callbacks import (
    CALLBACK_ROUTE,
    HEALTH_ROUTE,
    TRIGGER_CLASSPATH,
    CallbackSettings,
    redact_capability,
    token_matches,
)

log = logging.getLogger(__name__)

#: Bodies above this are refused (413) without reading further; LiangXin's record is a few KiB.
MAX_BODY_BYTES = 64 * 1024
#: Per client address, requests per second (bursts of twice that); the global cap is a setting.
PER_CLIENT_RATE = 20.0
#: Delayed callbacks waiting for their settle time in this process; beyond it the fallback poll takes over.
MAX_PENDING = 10_000
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
NOT_FOUND = {"detail": "Not Found"}


# ----------------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """What one callback does: resume now, resume after ``delay`` seconds, or nothing (unknown)."""

    kind: str  # "resume" | "delay" | "unknown"
    delay: float = 0.0


RESUME = Decision("resume")
UNKNOWN = Decision("unknown")


def decide(
    waiting: WaitingTask, token: str, body_task_id: str, *, now: datetime.datetime, settle_seconds: float
) -> tuple[Decision, dict[str, Any] | None]:
    """The whole rule, pure: which callbacks resume which task, and the event they resume it with.

    Every reason to refuse gives the same ``UNKNOWN``, so a caller without the token learns nothing.
    """
    kwargs = waiting.kwargs
    if waiting.state != "deferred" or waiting.classpath != TRIGGER_CLASSPATH or not isinstance(kwargs, Mapping):
        return UNKNOWN, None
    if not token_matches(token, kwargs.get("callback_token_sha256")):
        return UNKNOWN, None
    if body_task_id != kwargs.get("liangxin_task_id"):
        return UNKNOWN, None
    if waiting.deferred_at is not None and settle_seconds > 0:
        age = (now - waiting.deferred_at).total_seconds()
        if age < settle_seconds:
            return Decision("delay", settle_seconds - max(age, 0.0)), None
    return RESUME, callback_event(kwargs)


def callback_event(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The event the task resumes with: "check LiangXin now", plus what the worker needs to defer again (the
    token's hash, never the token; the wait's absolute deadlines; the wake-ups so far)."""
    task_id = str(kwargs.get("liangxin_task_id"))
    wakeups = kwargs.get("callback_wakeups")
    return {
        "status": "callback",
        "task_id": task_id,
        "message": f"LiangXin called back for task {task_id}",
        "record": None,
        "callback": {
            "token_sha256": kwargs.get("callback_token_sha256"),
            "wakeups": (wakeups if isinstance(wakeups, int) and not isinstance(wakeups, bool) else 0) + 1,
            "deadline": kwargs.get("deadline"),
            "execution_deadline": kwargs.get("execution_deadline"),
        },
    }


def body_task_id(body: bytes) -> str | None:
    """The ``taskId`` of a callback body (recordInfo-shaped: ``{"code", "msg", "data": {"taskId", ...}}``)."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(parsed, dict):
        return None
    data = parsed.get("data")
    task_id = data.get("taskId") if isinstance(data, dict) else parsed.get("taskId")
    return task_id if isinstance(task_id, str) and 0 < len(task_id) <= 256 else None


# ----------------------------------------------------------------------------------------------- rate limits


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimiter:
    """A global bucket and one per client address (behind an ingress that is the ingress: the global one
    still bounds the database work)."""

    MAX_CLIENTS = 10_000

    def __init__(
        self, global_rate: float, per_client: float = PER_CLIENT_RATE, clock: Callable[[], float] = time.monotonic
    ):
        self.clock = clock
        self.per_client = per_client
        self.global_bucket = TokenBucket(global_rate, 2 * global_rate, clock)
        self.clients: dict[str, TokenBucket] = {}

    def allow(self, client: str) -> bool:
        bucket = self.clients.get(client)
        if bucket is None:
            if len(self.clients) >= self.MAX_CLIENTS:
                self.clients.clear()
            bucket = self.clients[client] = TokenBucket(self.per_client, 2 * self.per_client, self.clock)
        return bucket.take() and self.global_bucket.take()


# ----------------------------------------------------------------------------------------------- receiver


class CallbackReceiver:
    """The route's logic, independent of FastAPI: answers ``(status, json body or None)``."""

    def __init__(
        self,
        internals: AirflowInternals,
        settings: CallbackSettings,
        *,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        limiter: RateLimiter | None = None,
    ) -> None:
        self.internals = internals
        self.settings = settings
        self.now = now
        self.limiter = limiter or RateLimiter(settings.max_requests_per_second)
        self.pending: dict[str, asyncio.Task[None]] = {}

    async def handle(self, ti_id: str, token: str, body: bytes | None, client: str) -> tuple[int, Any]:
        if not self.limiter.allow(client):
            return 429, {"detail": "Too Many Requests"}
        if body is None:
            return 413, {"detail": "Request body too large"}
        task_id = body_task_id(body)
        if task_id is None:
            return 400, {"detail": "The body must be LiangXin's JSON record with a taskId"}
        if not _UUID.fullmatch(ti_id):
            return 404, NOT_FOUND
        try:
            decision = await asyncio.to_thread(self._apply, ti_id, token, task_id)
        except Exception:
            log.exception("LiangXin callback for task instance %s: database error", ti_id)
            return 503, {"detail": "Service Unavailable"}
        if decision.kind == "resume":
            return 204, None
        if decision.kind == "delay":
            self._later(ti_id, token, task_id, decision.delay)
            return 202, {"detail": "Accepted", "resume_in_seconds": math.ceil(decision.delay)}
        return 404, NOT_FOUND

    def _apply(self, ti_id: str, token: str, task_id: str) -> Decision:
        settle = self.settings.settle_seconds

        def rule(waiting: WaitingTask) -> tuple[Decision, dict[str, Any] | None]:
            return decide(waiting, token, task_id, now=self.now(), settle_seconds=settle)

        decision = self.internals.in_locked_transaction(ti_id, rule)
        if decision.kind == "resume":
            log.info("LiangXin callback: task instance %s resumed to check LiangXin task %s", ti_id, task_id)
        elif decision.kind == "delay":
            log.info(
                "LiangXin callback: task instance %s deferred moments ago; resuming it in %.1f s (settle rule)",
                ti_id,
                decision.delay,
            )
        return decision

    def _later(self, ti_id: str, token: str, task_id: str, delay: float) -> None:
        """Apply the callback once the settle time is over; one timer per task instance, bounded in number."""
        if ti_id in self.pending or len(self.pending) >= MAX_PENDING:
            return

        async def run() -> None:
            try:
                wait = delay
                for _ in range(3):  # rechecked from scratch each time; a clock step may need another short wait
                    await asyncio.sleep(wait + 0.05)
                    decision = await asyncio.to_thread(self._apply, ti_id, token, task_id)
                    if decision.kind != "delay":
                        return
                    wait = decision.delay
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("LiangXin callback for task instance %s: delayed resume failed", ti_id)
            finally:
                self.pending.pop(ti_id, None)

        self.pending[ti_id] = asyncio.get_running_loop().create_task(run())

    async def close(self) -> None:
        tasks = list(self.pending.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def read_capped(receive: Callable[[], Any], limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request body, or None once it passes ``limit`` (stops reading; Content-Length is not trusted)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def create_app(receiver: CallbackReceiver | None, extra_routes: Callable[[FastAPI], None] | None = None) -> RedactPath:
    """The FastAPI app the plugin mounts (no docs or OpenAPI routes: it may face the internet): the callback and
    health routes when there is a ``receiver``, plus whatever ``extra_routes`` adds (the result view)."""
    app = FastAPI(
        title="LiangXin callback receiver", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False
    )

    def answer(status: int, body: Any) -> Response:
        return Response(status_code=status) if body is None else JSONResponse(body, status_code=status)

    if receiver is not None:
        _add_receiver_routes(app, receiver, answer)
    if extra_routes is not None:
        extra_routes(app)

    @app.exception_handler(404)
    async def not_found(_request: Request, _exc: Exception) -> Response:
        return answer(404, NOT_FOUND)

    @app.exception_handler(405)
    async def bad_method(_request: Request, _exc: Exception) -> Response:
        return answer(404, NOT_FOUND)

    install_access_log_redaction()
    return RedactPath(app)


def _add_receiver_routes(app: FastAPI, receiver: CallbackReceiver, answer: Callable[[int, Any], Response]) -> None:
    @app.post(CALLBACK_ROUTE)
    async def callback(ti_id: str, token: str, request: Request) -> Response:
        body = await read_capped(request.receive)
        client = request.client.host if request.client else "unknown"
        return answer(*await receiver.handle(ti_id, token, body, client))

    @app.get(HEALTH_ROUTE)
    async def health() -> Response:
        try:
            await asyncio.to_thread(receiver.internals.check_database)
        except Exception:
            log.exception("LiangXin callback receiver: health check failed")
            return answer(503, {"status": "unhealthy"})
        return answer(200, {"status": "ok"})


class RedactPath:
    """Hide the token from the api-server's access log, which logs the request path once the app has answered
    (Starlette's Mount updates the same scope dict, so rewriting it here is what the log middleware reads)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope.get("type") == "http":
                path = scope.get("path")
                if isinstance(path, str):
                    scope["path"] = redact_capability(path)
                raw = scope.get("raw_path")
                if isinstance(raw, bytes):
                    scope["raw_path"] = redact_capability(raw.decode("latin-1")).encode("latin-1")


class RedactAccessLog(logging.Filter):
    """Hide the token from uvicorn's own access log (``uvicorn.access``, Airflow 3.1's api-server request log).
    uvicorn writes that line when the response *starts*, before :class:`RedactPath` rewrites the scope, so the
    record's arguments are redacted here instead; the record is never dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "/liangxin/v1/callback/" in arg for arg in record.args
        ):
            record.args = tuple(redact_capability(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str) and "/liangxin/v1/callback/" in record.msg:
            record.msg = redact_capability(record.msg)
        return True


def install_access_log_redaction() -> None:
    """Add :class:`RedactAccessLog` to uvicorn's access logger once per process (idempotent)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactAccessLog) for existing in access.filters):
        access.addFilter(RedactAccessLog())


__all__ = [
    "MAX_BODY_BYTES",
    "CallbackReceiver",
    "Decision",
    "RateLimiter",
    "RedactAccessLog",
    "RedactPath",
    "body_task_id",
    "callback_event",
    "create_app",
    "decide",
    "read_capped",
]
