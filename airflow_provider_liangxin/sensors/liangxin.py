"""LiangxinTaskSensor: wait for a LiangXin task created elsewhere (e.g. ``wait_for_completion=False`` upstream).

Poke mode polls with the sync hook; ``deferrable=True`` hands the wait to the same trigger the operator uses. Both
end through the one raise-or-return of :mod:`airflow_provider_liangxin.events`, with the sensor's exception types,
so every outcome fails (or skips) alike in every mode:

- LiangXin ``fail``: ``AirflowFailException`` (no retries); ``soft_fail``/``never_fail`` skip.
- the sensor's ``timeout``: ``AirflowSensorTimeout`` (no retries); ``soft_fail``/``never_fail`` skip.
- an API error or transient errors beyond ``max_error_duration``: an ordinary error, retried like any task
  error; ``never_fail`` skips it, ``soft_fail`` does not (Airflow's own sensor rule for exceptions from a poke).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    conf,
)

from airflow_provider_liangxin.callbacks import deferral_settle_seconds
from airflow_provider_liangxin.events import (
    DEFAULT_MAX_ERROR_DURATION,
    TRANSIENT_ERRORS,
    Deadlines,
    ErrorBudget,
    LiangxinTaskWaitException,
    check_number,
    normalize_retry,
    record_from_event,
    settle_record,
    timed_out,
    wait_error,
    without_secret,
)
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.sensor import PokeReturnValue


class LiangxinTaskSensor(BaseSensorOperator):
    """Wait until a LiangXin task ends; return its result dict (as the operator does).

    :param liangxin_task_id: The LiangXin taskId, typically
        ``"{{ ti.xcom_pull(task_ids='create', key='task_id') }}"``. (templated)
    :param liangxin_conn_id: Airflow connection of type ``liangxin``. (templated)
    :param deferrable: Wait in the triggerer instead of poking from a worker.
    :param retry: Hook retry settings (JSON-native).
    :param request_timeout: Per-request HTTP timeout in seconds.
    :param max_error_duration: Seconds that transient poll errors may last in a row before the wait fails
        (deferrable and poke mode; in reschedule mode every poke that fails fails the try).

    The wait is bounded by the sensor's ``timeout`` (seconds, as for every sensor) and polls every
    ``poke_interval`` seconds.
    """

    template_fields: Sequence[str] = ("liangxin_task_id", "liangxin_conn_id")
    ui_color = "#f4e1ff"

    def __init__(
        self,
        *,
        liangxin_task_id: str,
        liangxin_conn_id: str = LiangxinHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        retry: Mapping[str, Any] | None = None,
        request_timeout: float | None = None,
        max_error_duration: float = DEFAULT_MAX_ERROR_DURATION,
        **kwargs: Any,
    ) -> None:
        owner = str(kwargs.get("task_id", ""))
        # BaseSensorOperator lets inf through (timeout=inf breaks defer() and the trigger's JSON kwargs) or fails
        # with an OverflowError that names nothing: check the numbers it is given first.
        for name in ("poke_interval", "timeout"):
            value = kwargs.get(name)
            if value is not None and not isinstance(value, timedelta):
                check_number(name, value, owner=owner, zero=name == "timeout")  # poke_interval 0 busy-polls
        super().__init__(**kwargs)
        self.liangxin_task_id = liangxin_task_id
        self.liangxin_conn_id = liangxin_conn_id
        self.deferrable = deferrable
        self.retry = normalize_retry(retry, owner=owner)
        self.request_timeout = check_number("request_timeout", request_timeout, owner=owner, optional=True)
        self.max_error_duration = check_number("max_error_duration", max_error_duration, owner=owner, zero=True)
        self._deadlines = Deadlines()
        self._budget: ErrorBudget | None = None

    @cached_property
    def hook(self) -> LiangxinHook:
        """One hook per sensor instance (its sync client is closed after each poke and reopened on the next)."""
        return LiangxinHook(self.liangxin_conn_id, timeout=self.request_timeout, retry=self.retry)

    def _task_id(self) -> str:
        task_id = str(self.liangxin_task_id or "").strip()
        if not task_id or task_id == "None":
            raise AirflowFailException(
                f"{self.task_id}: liangxin_task_id rendered empty ({self.liangxin_task_id!r}); "
                "did the upstream task push its taskId to XCom?"
            )
        return task_id

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow.providers.common.compat.sdk import PokeReturnValue

        task_id = self._task_id()
        deadlines = self._deadlines
        hook = self.hook
        try:
            # Bounded by the sensor's own deadline: a server trickling its answer cannot hold the poke past it.
            record = hook.get_task(task_id, deadline=deadlines.earliest)
        except TRANSIENT_ERRORS as exc:
            now = time.time()
            reason = deadlines.passed(now)
            if reason:
                timed_out(task_id, reason, sensor=True)
            budget = self._budget
            if budget is None:
                raise  # reschedule mode: every poke is a fresh process, so there is nothing to count against
            if budget.failed(now):
                raise wait_error(task_id, f"{budget.describe(now)}; last error: {exc}") from exc
            self.log.warning("LiangXin task %s: status check failed (%s): %s", task_id, budget.describe(now), exc)
            return False
        finally:
            hook.close()
        if self._budget is not None:
            self._budget.succeeded()
        if not record.state.is_terminal:
            self.log.info("LiangXin task %s is %s", record.task_id, record.state.value)
            return False
        # A failed generation will not succeed by poking again: fail now (soft_fail turns this into a skip).
        return PokeReturnValue(is_done=True, xcom_value=settle_record(record, sensor=True).to_dict())

    def execute(self, context: Context) -> Any:
        # The wait's deadlines bound every poke's request; in reschedule mode each poke is a new try of the
        # process, so only execution_timeout (counted by Airflow from the try's start) applies to it.
        timeout = None if self.reschedule else float(self.timeout)
        self._deadlines = Deadlines.start(context, timeout, self.execution_timeout)
        self._budget = None if self.reschedule else ErrorBudget(self.max_error_duration)
        if not self.deferrable:
            return super().execute(context)
        try:
            done = self.poke(context)
        except AirflowSkipException:
            raise
        except Exception as exc:
            # The first check runs outside BaseSensorOperator.execute: apply its soft_fail/never_fail rule here.
            sensor_outcome = isinstance(exc, AirflowFailException | AirflowSensorTimeout)
            if (sensor_outcome and self.soft_fail) or self.never_fail:
                mode = "never_fail" if self.never_fail else "soft_fail"
                raise AirflowSkipException(f"Skipping ({mode}): {exc}") from exc
            raise
        if done:
            return done.xcom_value if not isinstance(done, bool) else None
        poll_interval = float(self.poke_interval)
        deadlines = self._deadlines
        self.defer(
            trigger=LiangxinTaskTrigger.for_wait(
                self._task_id(),
                deadlines,
                liangxin_conn_id=self.liangxin_conn_id,
                poll_interval=poll_interval,
                request_timeout=self.request_timeout,
                retry=self.retry,
                max_error_duration=self.max_error_duration,
                settle_seconds=deferral_settle_seconds(),
            ),
            method_name="execute_complete",
            timeout=deadlines.backstop(poll_interval),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume with the sensor's exception types (see the module docstring); ``resume_execution`` applies
        ``soft_fail``/``never_fail`` to the Airflow ones, and ``never_fail`` is applied here to a wait error.

        The connection is resolved first, so the API key is registered with Airflow's secrets masker in this
        process, and taken out of the event's text (a hostile server may have built it from our Authorization
        header) before anything is raised or logged: the scheduler's copy of task logs is not masked.
        """
        hook = self.hook
        key = None
        try:
            key = hook.settings.api_key  # resolving the connection calls mask_secret on the key
        except Exception as exc:
            self.log.warning("Connection %r could not be resolved: %s", self.liangxin_conn_id, exc)
        finally:
            hook.close()
        try:
            return record_from_event(without_secret(event, key), sensor=True).to_dict()
        except LiangxinTaskWaitException as exc:
            if self.never_fail:
                raise AirflowSkipException(f"Skipping (never_fail): {exc}") from exc
            raise
