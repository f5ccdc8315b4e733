"""The task store: tasks as immutable facts plus lazily derived, cached recordInfo bodies.

A task only records what was decided at createTask (times, phase lengths, outcome, callback URL). Its state
is computed from the clock on each read (see :mod:`lifecycle`), and the serialised answer is cached per
(state, progress) so the hot recordInfo path is usually one dict lookup and one cache hit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_liangxin.simulator.lifecycle import FAIL, SUCCESS, Phase, phase_at

if TYPE_CHECKING:
    from airflow_provider_liangxin.simulator.persistence import TaskDB

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

OUTCOME_SUCCESS = "success"
OUTCOME_FAIL = "fail"
OUTCOME_NEVER = "never"

CALLBACK_NONE = "none"
CALLBACK_PENDING = "pending"
CALLBACK_DELIVERED = "delivered"
CALLBACK_GAVE_UP = "gave_up"


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, the byte form of every body the simulator sends."""
    return _ENCODER.encode(obj).encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Task:
    """What createTask decided about one task; everything else is derived."""

    task_id: str
    model: str
    #: The original createTask body as a JSON string (the documented ``param`` field).
    param: str
    created_ms: int
    #: waiting, queuing, generating lengths in ms.
    lengths: tuple[int, int, int]
    outcome: str = OUTCOME_SUCCESS
    fail_code: str = ""
    fail_msg: str = ""
    callback_url: str | None = None
    slow: bool = False
    width: int = 512
    height: int = 512
    #: sha256 hex of prompt + seed: the identity of the result file.
    content_key: str = ""
    video: bool = False
    callback_state: str = CALLBACK_NONE
    #: ``[sim:echo-auth]``: recordInfo answers 401 echoing the caller's Authorization header.
    echo_auth: bool = False
    _cache_key: tuple[str, int | None] | None = field(default=None, repr=False)
    _cache_body: bytes = field(default=b"", repr=False)

    @property
    def complete_ms(self) -> int | None:
        """When the task becomes terminal, or None if it never will."""
        if self.outcome == OUTCOME_NEVER:
            return None
        return self.created_ms + sum(self.lengths)

    @property
    def result_name(self) -> str:
        return "0.mp4" if self.video else "0.png"

    def phase(self, at_ms: int) -> Phase:
        return phase_at(
            self.created_ms, self.lengths, self.outcome == OUTCOME_NEVER, self.outcome == OUTCOME_FAIL, at_ms
        )


class TaskStore:
    """All tasks of the run, optionally mirrored to SQLite so a restart keeps them."""

    def __init__(self, base_url: str | None = None, db: TaskDB | None = None) -> None:
        #: Base of result URLs; the server fills it in once it knows its own address.
        self.base_url = base_url
        self.db = db
        self.tasks: dict[str, Task] = {}
        self._last_ms: dict[str, int] = {}
        if db is not None:
            for task in db.load():
                self.tasks[task.task_id] = task

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def new_task_id(self, model: str, at_ms: int) -> str:
        """``task_<model>_<13-digit ms>``; two tasks in the same ms get the next free ms, never the same id."""
        ms = max(at_ms, self._last_ms.get(model, 0) + 1)
        while f"task_{model}_{ms}" in self.tasks:
            ms += 1
        self._last_ms[model] = ms
        return f"task_{model}_{ms}"

    def add(self, task: Task) -> None:
        self.tasks[task.task_id] = task
        if self.db is not None:
            self.db.insert(task)

    def set_callback_state(self, task: Task, state: str) -> None:
        task.callback_state = state
        if self.db is not None:
            self.db.set_callback_state(task.task_id, state)

    def clear(self) -> None:
        self.tasks.clear()
        self._last_ms.clear()
        if self.db is not None:
            self.db.clear()

    # ------------------------------------------------------------------------------------------- answers

    def result_url(self, task: Task, base_url: str | None = None) -> str:
        base = self.base_url or base_url or ""
        return f"{base}/files/{task.task_id}/{task.result_name}"

    def record_data(self, task: Task, at_ms: int, base_url: str | None = None) -> dict[str, Any]:
        """The ``data`` object of recordInfo (and of the callback) at one instant."""
        phase = task.phase(at_ms)
        return self._data(task, phase, base_url)

    def _data(self, task: Task, phase: Phase, base_url: str | None) -> dict[str, Any]:
        state = phase.state
        result_json = ""
        if state == SUCCESS:
            result_json = _ENCODER.encode({"resultUrls": [self.result_url(task, base_url)]})
        data: dict[str, Any] = {
            "taskId": task.task_id,
            "model": task.model,
            "state": state,
            "param": task.param,
            "resultJson": result_json,
            "failCode": task.fail_code if state == FAIL else "",
            "failMsg": task.fail_msg if state == FAIL else "",
            "createTime": task.created_ms,
            "updateTime": phase.update_ms,
            "completeTime": phase.complete_ms,
        }
        if phase.complete_ms is not None:
            data["costTime"] = phase.complete_ms - task.created_ms
        if phase.progress is not None:
            data["progress"] = phase.progress
        return data

    def record_body(self, task: Task, at_ms: int, base_url: str | None = None) -> bytes:
        """The full recordInfo answer in bytes, cached until the task's state or progress moves."""
        phase = task.phase(at_ms)
        key = (phase.state, phase.progress)
        if task._cache_key == key and (self.base_url or not base_url):
            return task._cache_body
        body = dumps({"code": 200, "msg": "success", "data": self._data(task, phase, base_url)})
        if self.base_url or not base_url:
            task._cache_key, task._cache_body = key, body
        return body
