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

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    conf,
)

from airflow_provider_liangxin.events import (
    DEFAULT_MAX_ERROR_DURATION,
    Deadlines,
    LiangxinTaskWaitException,
    check_number,
    normalize_retry,
    record_from_event,
    settle_record,
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
        super().__init__(**kwargs)
        owner = self.task_id
        # BaseSensorOperator accepts NaN and inf: a NaN poke_interval busy-polls, an inf timeout breaks defer().
        check_number("poke_interval", self.poke_interval, owner=owner)
        check_number("timeout", self.timeout, owner=owner)
        self.liangxin_task_id = liangxin_task_id
        self.liangxin_conn_id = liangxin_conn_id
        self.deferrable = deferrable
        self.retry = normalize_retry(retry, owner=owner)
        self.request_timeout = check_number("request_timeout", request_timeout, owner=owner, optional=True)
        self.max_error_duration = check_number("max_error_duration", max_error_duration, owner=owner, zero=True)

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

        hook = self.hook
        try:
            record = hook.get_task(self._task_id())
        finally:
            hook.close()
        if not record.state.is_terminal:
            self.log.info("LiangXin task %s is %s", record.task_id, record.state.value)
            return False
        # A failed generation will not succeed by poking again: fail now (soft_fail turns this into a skip).
        return PokeReturnValue(is_done=True, xcom_value=settle_record(record, sensor=True).to_dict())

    def execute(self, context: Context) -> Any:
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
        deadlines = Deadlines.start(context, float(self.timeout), self.execution_timeout)
        self.defer(
            trigger=LiangxinTaskTrigger.for_wait(
                self._task_id(),
                deadlines,
                liangxin_conn_id=self.liangxin_conn_id,
                poll_interval=poll_interval,
                request_timeout=self.request_timeout,
                retry=self.retry,
                max_error_duration=self.max_error_duration,
            ),
            method_name="execute_complete",
            timeout=deadlines.backstop(poll_interval),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume with the sensor's exception types (see the module docstring); ``resume_execution`` applies
        ``soft_fail``/``never_fail`` to the Airflow ones, and ``never_fail`` is applied here to a wait error."""
        try:
            return record_from_event(event, sensor=True).to_dict()
        except LiangxinTaskWaitException as exc:
            if self.never_fail:
                raise AirflowSkipException(f"Skipping (never_fail): {exc}") from exc
            raise
