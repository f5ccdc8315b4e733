"""The one place that touches Airflow internals (not ``airflow.sdk`` / common-compat): the callback receiver's
database work in the api-server, and (:func:`has_fs`) the ObjectStoragePath filesystem registry that moved into
the SDK in Airflow 3.1.

Used: the ``TaskInstance`` and ``Trigger`` ORM models (``state``, ``trigger_id``, ``classpath``, ``kwargs``,
``created_date``), ``Trigger.submit_event`` (what the triggerer calls when a trigger fires, and what core's HITL
route uses), ``create_session`` and ``with_row_locks``. Where an Airflow version lacks one of them,
:func:`load_internals` returns None after one log line, the receiver stays off and tasks finish by polling.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class WaitingTask:
    """What the receiver may know about one task instance, read under its row lock."""

    state: str | None
    trigger_id: int | None = None
    classpath: str | None = None
    kwargs: Mapping[str, Any] | None = None
    #: When the trigger row was written: the moment the worker's deferral reached the database.
    deferred_at: datetime.datetime | None = None


class AirflowInternals:
    """Thin wrapper over the internals; every method runs in a worker thread, never on the event loop."""

    def __init__(self, *, task_instance: Any, trigger: Any, trigger_event: Any, create_session: Any, row_locks: Any):
        self._ti = task_instance
        self._trigger = trigger
        self._event = trigger_event
        self._create_session = create_session
        self._row_locks = row_locks

    def in_locked_transaction(
        self, ti_id: str, decide: Callable[[WaitingTask], tuple[T, Mapping[str, Any] | None]]
    ) -> T:
        """Lock the task instance row, let ``decide`` look at it, and submit the event it returns (if any) in the
        same transaction: two replicas (or the triggerer firing at the same moment) resume the task once."""
        from sqlalchemy import select

        with self._create_session() as session:
            query = select(self._ti).where(self._ti.id == self._ti_id(ti_id))
            ti = session.scalars(self._row_locks(query, session=session, of=self._ti)).one_or_none()
            waiting = WaitingTask(state=None)
            if ti is not None:
                trigger = session.get(self._trigger, ti.trigger_id) if ti.trigger_id is not None else None
                waiting = WaitingTask(
                    state=str(ti.state.value if hasattr(ti.state, "value") else ti.state) if ti.state else None,
                    trigger_id=ti.trigger_id,
                    classpath=trigger.classpath if trigger is not None else None,
                    kwargs=trigger.kwargs if trigger is not None else None,
                    deferred_at=trigger.created_date if trigger is not None else None,
                )
            outcome, payload = decide(waiting)
            if payload is not None and waiting.trigger_id is not None:
                self._trigger.submit_event(waiting.trigger_id, self._event(dict(payload)), session=session)
            return outcome

    def _ti_id(self, ti_id: str) -> Any:
        """The id as its column takes it: a UUID column from Airflow 3.2, a 36-character string column on 3.0 and 3.1
        (where SQLite cannot bind a ``uuid.UUID``)."""
        value = uuid.UUID(ti_id)
        column_type = self._ti.id.type
        try:  # 3.0 wraps the string type in a Variant (a UUID on PostgreSQL)
            python_type = getattr(column_type, "impl", column_type).python_type
        except (AttributeError, NotImplementedError):
            return value
        return str(value) if python_type is str else value

    def check_database(self) -> None:
        """One trivial query (the health route)."""
        from sqlalchemy import text

        with self._create_session() as session:
            session.execute(text("SELECT 1"))


_has_fs_warned = False


def has_fs(scheme: str) -> bool:
    """Whether Airflow's ``ObjectStoragePath`` has a filesystem for ``scheme`` (a provider registered one, or a
    built-in). ``airflow.sdk.io.fs`` from Airflow 3.1, ``airflow.io`` on 3.0; where neither exists (one log line),
    False: results.py then stores through universal-pathlib, which covers local paths and fsspec's own schemes."""
    global _has_fs_warned
    try:
        from airflow.sdk.io.fs import has_fs as registry_has_fs
    except ImportError:
        try:
            from airflow.io import has_fs as registry_has_fs  # type: ignore[no-redef,attr-defined]  # Airflow 3.0
        except ImportError as exc:
            if not _has_fs_warned:
                _has_fs_warned = True
                log.warning("Airflow ObjectStoragePath registry not found (%s); storing via universal-pathlib", exc)
            return False
    return bool(registry_has_fs(scheme))


def load_internals() -> AirflowInternals | None:
    """The internals, or None (with one log line) where this Airflow lacks them."""
    try:
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.trigger import Trigger
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session
        from airflow.utils.sqlalchemy import with_row_locks

        for name in ("submit_event",):
            if not callable(getattr(Trigger, name, None)):
                raise AttributeError(f"Trigger.{name}")
        for name in ("id", "trigger_id", "state"):
            if not hasattr(TaskInstance, name):
                raise AttributeError(f"TaskInstance.{name}")
        for name in ("classpath", "kwargs", "created_date"):
            if not hasattr(Trigger, name):
                raise AttributeError(f"Trigger.{name}")
    except (ImportError, AttributeError) as exc:
        log.warning(
            "LiangXin callback receiver disabled: this Airflow lacks %s; tasks finish by polling", exc, exc_info=False
        )
        return None
    return AirflowInternals(
        task_instance=TaskInstance,
        trigger=Trigger,
        trigger_event=TriggerEvent,
        create_session=create_session,
        row_locks=with_row_locks,
    )


# ------------------------------------------------------------------------------------------ the result view
# Read-only: a task instance's row, its XComs, and core_api's own authorization dependency (login and DAG read
# access exactly as the task instance and XCom routes of /api/v2 check them).


@dataclass(frozen=True)
class TaskInstanceFacts:
    """What the result view shows of a task instance (never its executor config or anything secret)."""

    state: str | None
    operator: str | None
    try_number: int | None
    start_date: datetime.datetime | None
    end_date: datetime.datetime | None
    duration: float | None


class ResultViewInternals:
    """The result view's reads; every method runs in a worker thread."""

    def __init__(self, *, task_instance: Any, xcom: Any, create_session: Any, requires_access_dag: Any, entity: Any):
        self._ti = task_instance
        self._xcom = xcom
        self._create_session = create_session
        self._requires_access_dag = requires_access_dag
        self._entity = entity

    def auth_dependencies(self) -> list[Callable[..., Any]]:
        """core_api's dependencies for reading a DAG's task instances and XComs (the ``dag_id`` path parameter):
        401 without a valid login (the UI's ``_token`` cookie or a Bearer token), 403 without DAG access."""
        return [
            self._requires_access_dag(method="GET", access_entity=self._entity.TASK_INSTANCE),
            self._requires_access_dag(method="GET", access_entity=self._entity.XCOM),
        ]

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskInstanceFacts | None:
        from sqlalchemy import select

        ti = self._ti
        with self._create_session() as session:
            row = session.scalars(
                select(ti).where(
                    ti.dag_id == dag_id, ti.run_id == run_id, ti.task_id == task_id, ti.map_index == map_index
                )
            ).one_or_none()
            if row is None:
                return None
            state = row.state
            return TaskInstanceFacts(
                state=str(state.value if hasattr(state, "value") else state) if state else None,
                operator=getattr(row, "custom_operator_name", None) or getattr(row, "operator", None),
                try_number=getattr(row, "try_number", None),
                start_date=row.start_date,
                end_date=row.end_date,
                duration=getattr(row, "duration", None),
            )

    def xcoms(self, dag_id: str, run_id: str, task_id: str, map_index: int, keys: list[str]) -> dict[str, Any]:
        """The task instance's XComs among ``keys``, deserialized as core's XCom route does (custom XCom backends
        that store references give the reference, which the view then cannot use)."""
        found: dict[str, Any] = {}
        with self._create_session() as session:
            for key in keys:
                query = self._xcom.get_many(
                    run_id=run_id, key=key, task_ids=task_id, dag_ids=dag_id, map_indexes=map_index, limit=1
                )
                row = session.scalars(query).first()
                if row is None:
                    continue
                row = row[0] if isinstance(row, tuple) else row
                try:
                    found[key] = self._xcom.deserialize_value(row)
                except Exception as exc:
                    log.warning("LiangXin result view: XCom %r of %s.%s unreadable: %s", key, dag_id, task_id, exc)
        return found


def load_result_view_internals() -> ResultViewInternals | None:
    """The result view's internals, or None (with one log line) where this Airflow lacks them."""
    try:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
        from airflow.api_fastapi.core_api.security import requires_access_dag
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        for name in ("get_many", "deserialize_value"):
            if not callable(getattr(XComModel, name, None)):
                raise AttributeError(f"XComModel.{name}")
        for name in ("TASK_INSTANCE", "XCOM"):
            if not hasattr(DagAccessEntity, name):
                raise AttributeError(f"DagAccessEntity.{name}")
    except (ImportError, AttributeError) as exc:
        log.warning("LiangXin result view disabled: this Airflow lacks %s", exc, exc_info=False)
        return None
    return ResultViewInternals(
        task_instance=TaskInstance,
        xcom=XComModel,
        create_session=create_session,
        requires_access_dag=requires_access_dag,
        entity=DagAccessEntity,
    )


def supports_task_instance_views(plugin_class: Any) -> bool:
    """Airflow 3.1+ draws a plugin's ``external_views`` with ``destination="task_instance"`` as a tab on the task
    instance page; 3.0 has no ``external_views`` (the extra link is then the only way in)."""
    if hasattr(plugin_class, "external_views"):
        return True
    log.info("LiangXin result view: this Airflow has no task-instance plugin tabs; the extra link opens the view")
    return False


__all__ = [
    "AirflowInternals",
    "ResultViewInternals",
    "TaskInstanceFacts",
    "WaitingTask",
    "has_fs",
    "load_internals",
    "load_result_view_internals",
    "supports_task_instance_views",
]
