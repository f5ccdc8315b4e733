"""LiangxinTaskSensor: wait for a LiangXin task created elsewhere (e.g. ``wait_for_completion=False`` upstream).

Poke mode polls with the sync hook; ``deferrable=True`` hands the wait to the same trigger the operator uses and
resumes through the same event handling, so a LiangXin ``fail`` fails the sensor (or skips it with
``soft_fail=True``) in every mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    conf,
)

from airflow_provider_liangxin._api import LiangxinError, RetryPolicy
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
from airflow_provider_liangxin.triggers.liangxin import (
    Deadlines,
    LiangxinTaskFailedException,
    LiangxinTaskTrigger,
    event_for_record,
    record_from_event,
)

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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        retry = RetryPolicy.from_kwargs(retry).to_dict() if retry is not None else None
        self.liangxin_task_id = liangxin_task_id
        self.liangxin_conn_id = liangxin_conn_id
        self.deferrable = deferrable
        self.retry = retry
        self.request_timeout = request_timeout

    @property
    def hook(self) -> LiangxinHook:
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
        try:
            record = record_from_event(event_for_record(record))
        except LiangxinTaskFailedException as exc:
            # A failed generation will not succeed by poking again: fail now (soft_fail turns this into a skip).
            raise AirflowFailException(str(exc)) from exc
        return PokeReturnValue(is_done=True, xcom_value=record.to_dict())

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        try:
            done = self.poke(context)
        except AirflowFailException as exc:
            # The first check runs outside BaseSensorOperator.execute, so apply its soft_fail/never_fail here.
            if self.soft_fail or getattr(self, "never_fail", False):
                mode = "soft_fail" if self.soft_fail else "never_fail"
                raise AirflowSkipException(f"Skipping ({mode}): {exc}") from exc
            raise
        if done:
            return done.xcom_value if not isinstance(done, bool) else None
        deadlines = Deadlines.start(
            context, float(self.timeout) if self.timeout is not None else None, self.execution_timeout
        )
        self.defer(
            trigger=LiangxinTaskTrigger(
                liangxin_task_id=self._task_id(),
                liangxin_conn_id=self.liangxin_conn_id,
                poll_interval=float(self.poke_interval),
                deadline=deadlines.wait,
                execution_deadline=deadlines.execution,
                request_timeout=self.request_timeout,
                retry=self.retry,
            ),
            method_name="execute_complete",
            timeout=deadlines.backstop(float(self.poke_interval)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """The operator's event handling, with the sensor's exception types so both modes fail alike.

        A LiangXin ``fail`` raises ``AirflowFailException`` (no retry can fix it) and a passed deadline raises
        ``AirflowSensorTimeout``, as in poke mode; ``resume_execution`` turns both into skips under soft_fail.
        """
        if isinstance(event, Mapping) and event.get("status") == "timeout":
            raise AirflowSensorTimeout(f"LiangXin task {event.get('task_id')}: {event.get('message')}")
        if isinstance(event, Mapping) and event.get("status") == "error":
            # Not an AirflowException: an API error fails (and retries) the sensor as in poke mode, where
            # soft_fail does not apply to it either.
            raise LiangxinError(f"Error while waiting for LiangXin task {event.get('task_id')}: {event.get('message')}")
        try:
            return record_from_event(event).to_dict()
        except LiangxinTaskFailedException as exc:
            raise AirflowFailException(str(exc)) from exc
