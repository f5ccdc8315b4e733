"""LiangxinTaskSensor: wait for a LiangXin task created elsewhere (e.g. ``wait_for_completion=False`` upstream).

Poke mode polls with the sync hook; ``deferrable=True`` hands the wait to the same trigger the operator uses and
resumes through the same event handling, so a LiangXin ``fail`` fails the sensor (or skips it with
``soft_fail=True``) in every mode.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseSensorOperator, conf

from airflow_provider_liangxin._api import RetryPolicy
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger, event_for_record, record_from_event

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
        RetryPolicy.from_kwargs(retry)
        self.liangxin_task_id = liangxin_task_id
        self.liangxin_conn_id = liangxin_conn_id
        self.deferrable = deferrable
        self.retry = dict(retry) if retry is not None else None
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
        except AirflowException as exc:
            # A failed generation will not succeed by poking again: fail now (soft_fail turns this into a skip).
            raise AirflowFailException(str(exc)) from exc
        return PokeReturnValue(is_done=True, xcom_value=record.to_dict())

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if done:
            return done.xcom_value if not isinstance(done, bool) else None
        deadline = time.time() + float(self.timeout) if self.timeout is not None else None
        self.defer(
            trigger=LiangxinTaskTrigger(
                liangxin_task_id=self._task_id(),
                liangxin_conn_id=self.liangxin_conn_id,
                poll_interval=float(self.poke_interval),
                deadline=deadline,
                request_timeout=self.request_timeout,
                retry=self.retry,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + 2 * float(self.poke_interval) + 60)
            if self.timeout is not None
            else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Same event handling as the operator; ``resume_execution`` maps the errors to soft_fail skips."""
        return record_from_event(event).to_dict()
