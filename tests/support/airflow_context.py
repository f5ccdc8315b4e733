"""A minimal task context for calling operator methods directly (what the task runner would hand in).

Only the parts the provider touches: ``ti.xcom_push`` (recorded in order) and ``task_state_store``
(a dict behind the Airflow 3.3 accessor's get/set API), so a retry can be simulated by calling ``execute`` again
with the same store.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class FakeStateStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.data[key] = value


@dataclass
class FakeTI:
    pushed: list[tuple[str, Any]] = field(default_factory=list)
    start_date: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: A task instance's id: a new UUID each try (the callback URL names it).
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))

    def pushed_value(self, key: str) -> Any:
        values = [v for k, v in self.pushed if k == key]
        return values[-1] if values else None


def make_context(store: FakeStateStore | None = None, ti: FakeTI | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"ti": ti or FakeTI()}
    if store is not None:
        context["task_state_store"] = store
    return context


def execution_api_timeout() -> Exception:
    """What the task SDK raises in the task when its supervisor's Execution API call timed out (after its own
    retries): an AirflowRuntimeError naming the transport error."""
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    detail = {"status_code": None, "message": "Server returned error", "exception_type": "ReadTimeout"}
    return AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail=detail))


class FlakyStateStore(FakeStateStore):
    """A task_state_store whose writes time out, as an overloaded Execution API's do: the first ``failures``
    writes, or every write of a key in ``failing_keys``."""

    def __init__(self, failures: int = 0, failing_keys: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.failures = failures
        self.failing_keys = failing_keys

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if key in self.failing_keys:
            raise execution_api_timeout()
        if self.failures > 0:
            self.failures -= 1
            raise execution_api_timeout()
        super().set(key, value, retention=retention)
