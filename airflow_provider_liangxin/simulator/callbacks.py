"""Callback delivery: one scheduler loop over a heap of due times, not one timer per task.

Task states are computed lazily, so nothing "happens" when a task finishes. Instead createTask pushes the
task's completion time onto a heap; a single background coroutine sleeps until the earliest entry is due, fires
the POST (in a short-lived delivery coroutine, so a slow receiver delays nobody else), and pushes a retry entry
with exponential backoff when the receiver answers non-2xx or cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from typing import Any

import aiohttp

from airflow_provider_liangxin.simulator.state import (
    CALLBACK_DELIVERED,
    CALLBACK_GAVE_UP,
    CALLBACK_PENDING,
    Task,
    TaskStore,
    dumps,
    now_ms,
)

logger = logging.getLogger("airflow_provider_liangxin.simulator.callbacks")

#: Deliveries in flight at once; the rest wait on the semaphore (their due time has passed, they go next).
MAX_CONCURRENT_DELIVERIES = 64
#: The delivery log is for tests and demos; cap it so a long load test cannot grow it without bound.
MAX_LOG_ENTRIES = 10_000


class CallbackDispatcher:
    def __init__(self, store: TaskStore, *, attempts: int = 3, backoff: float = 0.5, timeout: float = 5.0) -> None:
        self.store = store
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.log: list[dict[str, Any]] = []
        #: (due ms, sequence, generation, task id, attempt); the generation makes entries from before a
        #: reset harmless.
        self._heap: list[tuple[int, int, int, str, int]] = []
        self._seq = itertools.count()
        self._generation = 0
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"Content-Type": "application/json", "User-Agent": "liangxin-simulator"},
        )
        # Tasks restored from SQLite whose callback was never settled get it now (or when they finish).
        for task in self.store.tasks.values():
            if task.callback_state == CALLBACK_PENDING:
                self.schedule(task)
        self._loop_task = asyncio.create_task(self._run(), name="liangxin-simulator-callbacks")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reset(self) -> None:
        self._heap.clear()
        self._generation += 1
        self.log.clear()

    # ------------------------------------------------------------------------------------------ scheduling

    def schedule(self, task: Task, attempt: int = 1, due_ms: int | None = None) -> None:
        """Queue a delivery of ``task``'s terminal record; never-ending tasks are never delivered."""
        if due_ms is None:
            due_ms = task.complete_ms
            if due_ms is None:
                return
        heapq.heappush(self._heap, (due_ms, next(self._seq), self._generation, task.task_id, attempt))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            delay = (self._heap[0][0] - now_ms()) / 1000
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            _, _, generation, task_id, attempt = heapq.heappop(self._heap)
            if generation != self._generation:
                continue
            delivery = asyncio.create_task(self._deliver(task_id, attempt, generation))
            self._inflight.add(delivery)
            delivery.add_done_callback(self._inflight.discard)

    # ------------------------------------------------------------------------------------------- delivery

    async def _deliver(self, task_id: str, attempt: int, generation: int) -> None:
        task = self.store.get(task_id)
        complete_ms = task.complete_ms if task is not None else None
        if task is None or not task.callback_url or complete_ms is None or self._session is None:
            return
        body = dumps({"code": 200, "msg": "success", "data": self.store.record_data(task, complete_ms)})
        status: int | None = None
        error: str | None = None
        async with self._semaphore:
            try:
                async with self._session.post(task.callback_url, data=body) as response:
                    status = response.status
                    await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if generation != self._generation:
            return
        ok = status is not None and 200 <= status < 300
        final = ok or attempt >= self.attempts
        self._record(task, attempt, status, error, ok, final)
        if ok:
            self.store.set_callback_state(task, CALLBACK_DELIVERED)
        elif final:
            self.store.set_callback_state(task, CALLBACK_GAVE_UP)
        else:
            retry_in_ms = round(self.backoff * 1000 * 2 ** (attempt - 1))
            self.schedule(task, attempt + 1, now_ms() + retry_in_ms)

    def _record(self, task: Task, attempt: int, status: int | None, error: str | None, ok: bool, final: bool) -> None:
        entry = {
            "taskId": task.task_id,
            "url": task.callback_url,
            "attempt": attempt,
            "status": status,
            "error": error,
            "ok": ok,
            "final": final,
            "time": now_ms(),
        }
        if len(self.log) >= MAX_LOG_ENTRIES:
            del self.log[: MAX_LOG_ENTRIES // 10]
        self.log.append(entry)
        outcome = "delivered" if ok else ("gave up" if final else "will retry")
        logger.info("callback %s attempt %d -> %s (%s)", task.task_id, attempt, status if status else error, outcome)

    def summary(self) -> dict[str, int]:
        states = [t.callback_state for t in self.store.tasks.values()]
        return {
            "attempts": len(self.log),
            "pending": states.count(CALLBACK_PENDING),
            "delivered": states.count(CALLBACK_DELIVERED),
            "gave_up": states.count(CALLBACK_GAVE_UP),
            "queued": len(self._heap),
        }
