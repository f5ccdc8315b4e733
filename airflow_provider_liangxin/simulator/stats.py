"""Request and task counters for ``GET /_sim/stats``: cheap enough to update on every request."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from airflow_provider_liangxin._api import CREATE_TASK_PATH, RECORD_INFO_PATH

FILES_ROUTE = "/files/{taskId}/{file}"
_KNOWN_PATHS = frozenset({CREATE_TASK_PATH, RECORD_INFO_PATH})


def route_key(method: str, path: str) -> str:
    """Group requests by route, not by URL, so per-task file URLs do not grow the table without bound."""
    if path in _KNOWN_PATHS or path.startswith("/_sim/"):
        return f"{method} {path}"
    if path.startswith("/files/"):
        return f"{method} {FILES_ROUTE}"
    return f"{method} <other>"


class Stats:
    def __init__(self) -> None:
        self.requests: dict[str, Counter[str]] = {}
        self.created_per_model: Counter[str] = Counter()
        #: Successful recordInfo answers per taskId (how many polls each task cost).
        self.recordinfo_per_task: Counter[str] = Counter()

    def count_record_info(self, task_id: str) -> None:
        self.recordinfo_per_task[task_id] += 1

    def count(self, route: str, status: int | str) -> None:
        counter = self.requests.get(route)
        if counter is None:
            counter = self.requests[route] = Counter()
        counter[str(status)] += 1

    def reset(self) -> None:
        self.requests.clear()
        self.created_per_model.clear()
        self.recordinfo_per_task.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": {route: dict(counter) for route, counter in self.requests.items()},
            "created_per_model": dict(self.created_per_model),
            "recordinfo_per_task": dict(self.recordinfo_per_task),
        }

    def add(self, saved: Mapping[str, Any]) -> None:
        """Add a saved :meth:`snapshot` (an earlier run's, kept in the ``--db`` file) to these counters, so a
        restarted simulator reports one set of numbers for the whole load test."""
        for route, statuses in (saved.get("requests") or {}).items():
            counter = self.requests.setdefault(route, Counter())
            counter.update({str(status): int(n) for status, n in statuses.items()})
        self.created_per_model.update(saved.get("created_per_model") or {})
        self.recordinfo_per_task.update(saved.get("recordinfo_per_task") or {})
