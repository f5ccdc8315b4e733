"""LiangxinCreateTaskOperator: create a LiangXin generation task and, by default, wait for its result.

Waiting happens in one of three ways: deferred to the triggerer (``deferrable=True``, no worker slot held), polled
on the worker (``deferrable=False``), or not at all (``wait_for_completion=False``: return the taskId and let a
:class:`~airflow_provider_liangxin.sensors.liangxin.LiangxinTaskSensor` wait).

A paid generation is never created twice for one task instance: the taskId is written to Airflow 3.3's
``task_state_store`` right after creation, and a retry resumes that task (waits for it if it is still running,
returns its result if it succeeded) and only creates a new one if it failed or is unknown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator, BaseOperatorLink, XCom, conf

from airflow_provider_liangxin._api import LiangxinTaskNotFoundError, TaskRecord
from airflow_provider_liangxin.events import (
    DEFAULT_MAX_ERROR_DURATION,
    NO_CANCEL_NOTE,
    Deadlines,
    check_number,
    normalize_retry,
    record_from_event,
    settle_record,
    timed_out,
)
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
from airflow_provider_liangxin.models import InputValidationError, validate_input
from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

#: XCom key of the LiangXin taskId, pushed right after createTask.
XCOM_TASK_ID = "task_id"
#: XCom key read by :class:`LiangxinResultLink`.
XCOM_RESULT_URL = "liangxin_result_url"
#: task_state_store key holding the taskId across retries (renaming it breaks in-flight retries).
STATE_KEY = "liangxin_task_id"


class LiangxinResultLink(BaseOperatorLink):
    """ "LiangXin result" button: the stored image when there is one, else the first result URL."""

    name = "LiangXin result"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(key=XCOM_RESULT_URL, ti_key=ti_key) or ""


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_has_template(k) or _has_template(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return any(_has_template(v) for v in value)
    return False


def _output_asset(output_path: str | None) -> Any:
    """The Asset for a literal output_path (assets are declared when the DAG is parsed, before templating)."""
    from airflow.providers.common.compat.sdk import Asset

    if not output_path or _has_template(output_path):
        raise ValueError(
            "output_asset=True needs a literal output_path (assets are declared at parse time); "
            "for a templated path pass outlets=[Asset(...)] yourself"
        )
    uri = output_path if "://" in output_path else "file://" + output_path
    return Asset(uri=uri.rstrip("/") + "/")


def check_callback_url(callback_url: str | None) -> None:
    """LiangXin only calls public HTTPS URLs back; catch a typo before it costs a task."""
    if not callback_url:
        return
    parts = urlsplit(callback_url)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"callback_url must be an https:// URL, got {callback_url!r}")


class LiangxinCreateTaskOperator(BaseOperator):
    """Create a LiangXin Market task (image or video generation) and wait for its result.

    :param model: The LiangXin model, e.g. ``seedream-v4-5``. (templated)
    :param input: The model's input, e.g. ``{"prompt": "...", "aspect_ratio": "16:9"}``; nested values are
        templated. Validated against the model's documented schema before any request is sent.
    :param liangxin_conn_id: Airflow connection of type ``liangxin``. (templated)
    :param callback_url: Optional public HTTPS URL LiangXin calls when the task ends. (templated)
    :param wait_for_completion: Wait for the task to end; False returns the taskId at once.
    :param deferrable: Wait in the triggerer instead of holding a worker slot.
    :param poll_interval: Seconds between status polls (float allowed).
    :param timeout: Seconds to wait for the task to end, counted from the start of each Airflow try; it becomes an
        absolute deadline, so neither a triggerer restart nor the trip to the triggerer resets it. ``None`` waits
        without bound (``execution_timeout`` still applies, deferred included).
    :param retry: Hook retry settings (JSON-native): ``max_attempts``, ``backoff_initial``, ``backoff_max``,
        ``max_wait_total``.
    :param request_timeout: Per-request HTTP timeout in seconds (overrides the connection's ``timeout`` extra).
    :param max_error_duration: Seconds that transient poll errors (5xx, 429, network; each poll already retried
        by the hook) may last in a row before the wait fails; 0 fails on the first one.
    :param output_path: Where to store the results (any ObjectStoragePath/fsspec URL or local path); the
        result then lists the stored files. (templated)
    :param download_timeout: Per-step (connect/read) timeout in seconds when downloading results.
    :param max_download_bytes: Size cap per result file; a larger file fails the task (files already stored stay).
    :param output_asset: Also declare ``output_path`` as an Airflow Asset outlet, so downstream DAGs can be
        scheduled on new images. Needs a literal (untemplated) ``output_path``; the asset event's ``extra``
        lists the stored files.
    :param strict: Reject models this provider does not know (by default they pass through with a warning).
    :param validate: Check ``input`` against the model's documented schema before sending it. Turn off only when
        LiangXin accepts a field this provider version does not know yet.

    XCom: ``task_id`` holds the LiangXin taskId as soon as it exists; ``return_value`` holds the result dict
    (``task_id``, ``model``, ``state``, ``result_urls``, ``fail_code``, ``fail_msg``, times, and ``stored``
    when ``output_path`` is set), or the taskId when ``wait_for_completion=False``.
    """

    template_fields: Sequence[str] = ("model", "input", "liangxin_conn_id", "callback_url", "output_path")
    template_fields_renderers = {"input": "json"}
    operator_extra_links = (LiangxinResultLink(),)
    ui_color = "#f4e1ff"

    def __init__(
        self,
        *,
        model: str,
        input: Mapping[str, Any],
        liangxin_conn_id: str = LiangxinHook.default_conn_name,
        callback_url: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        timeout: float | None = 3600.0,
        retry: Mapping[str, Any] | None = None,
        request_timeout: float | None = None,
        max_error_duration: float = DEFAULT_MAX_ERROR_DURATION,
        output_path: str | None = None,
        download_timeout: float = 60.0,
        max_download_bytes: int = 200 * 1024 * 1024,
        output_asset: bool = False,
        strict: bool = False,
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        self.output_asset_ref = _output_asset(output_path) if output_asset else None
        if self.output_asset_ref is not None:
            kwargs["outlets"] = [*(kwargs.get("outlets") or []), self.output_asset_ref]
        super().__init__(**kwargs)
        owner = self.task_id
        self.model = model
        self.input = input
        self.liangxin_conn_id = liangxin_conn_id
        self.callback_url = callback_url
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        # Checked here, where the DAG is parsed: a NaN or inf found later would surface after the paid createTask.
        self.poll_interval = check_number("poll_interval", poll_interval, owner=owner)
        self.timeout = check_number("timeout", timeout, owner=owner, optional=True)
        self.retry = normalize_retry(retry, owner=owner)
        self.request_timeout = check_number("request_timeout", request_timeout, owner=owner, optional=True)
        self.max_error_duration = check_number("max_error_duration", max_error_duration, owner=owner, zero=True)
        self.output_path = output_path
        self.download_timeout = check_number("download_timeout", download_timeout, owner=owner)
        self.max_download_bytes = check_number("max_download_bytes", max_download_bytes, owner=owner, integer=True)
        self.strict = strict
        self.validate = validate
        if not wait_for_completion and deferrable:
            self.log.debug("%s: deferrable has no effect when wait_for_completion=False", self.task_id)
        # A typo in a literal input fails the DAG import, long before anything is paid for. (Not when Airflow
        # unmaps a mapped task at run time: execute() validates then, failing once instead of per retry.)
        from_mapped = getattr(self, "_BaseOperator__from_mapped", False)
        if not from_mapped and not _has_template(model) and not _has_template(input):
            self._validate()
        if callback_url and not _has_template(callback_url):
            check_callback_url(callback_url)

    # ------------------------------------------------------------------------------------------- helpers

    @cached_property
    def hook(self) -> LiangxinHook:
        """One hook per operator instance (its sync client is reopened after ``close()`` if used again)."""
        return LiangxinHook(self.liangxin_conn_id, timeout=self.request_timeout, retry=self.retry)

    def _validate(self) -> list[str]:
        if not self.validate:
            return []
        try:
            return validate_input(self.model, self.input, strict=self.strict)
        except InputValidationError as exc:
            raise ValueError(f"{self.task_id}: {exc}") from None

    # ------------------------------------------------------------------------------------------- execute

    def execute(self, context: Context) -> Any:
        try:
            for warning in self._validate():
                self.log.warning("%s", warning)
            check_callback_url(self.callback_url)
            if self.output_path:
                from airflow_provider_liangxin.results import check_output_path

                check_output_path(self.output_path)
        except ValueError as exc:
            # A retry renders the same input: fail once, without burning the retries.
            raise AirflowFailException(str(exc)) from exc

        hook = self.hook
        try:
            record = self._resume(context, hook)
            if record is None:
                task_id = hook.create_task(self.model, self.input, self.callback_url)
                self._remember(context, task_id, hook)
                self.log.info("LiangXin task %s created for model %s", task_id, self.model)
                if not self.wait_for_completion:
                    return task_id
                record = hook.get_task(task_id)
            elif not self.wait_for_completion:
                return record.task_id
            if record.state.is_terminal:
                return self._complete(context, settle_record(record), hook)
            if self.deferrable:
                self._defer(context, record.task_id)
            return self._complete(context, self._poll(context, hook, record), hook)
        finally:
            hook.close()

    def _resume(self, context: Context, hook: LiangxinHook) -> TaskRecord | None:
        """On a retry, find this task instance's earlier LiangXin task; None means create a new one."""
        store = context.get("task_state_store")
        if store is None:
            self.log.info("No task_state_store (Airflow < 3.3): a retry of this task creates a new LiangXin task")
            return None
        previous = store.get(STATE_KEY)
        if not previous:
            return None
        try:
            record = hook.get_task(str(previous))
        except LiangxinTaskNotFoundError:
            self.log.warning("Earlier LiangXin task %s is unknown to LiangXin; creating a new one", previous)
            return None
        if not self._same_request(record):
            self.log.warning(
                "Earlier LiangXin task %s was made for a different request (model or input changed since); "
                "creating a new one",
                previous,
            )
            return None
        if record.state.is_success or not record.state.is_terminal:
            self.log.info(
                "Resuming LiangXin task %s from an earlier attempt (state %s) instead of creating a new one",
                record.task_id,
                record.state.value,
            )
            self._push_task_id(context, record.task_id, hook)
            return record
        self.log.warning(
            "Earlier LiangXin task %s failed (%s: %s); creating a new one", previous, record.fail_code, record.fail_msg
        )
        return None

    def _same_request(self, record: TaskRecord) -> bool:
        """Does the stored task answer *this* rendered request? A clear after editing the prompt, or a mapped
        index now pointing at another item, must not return an image made for something else."""
        if not record.param:
            return True  # nothing echoed to compare: trust the task instance's own state store
        wanted = json.loads(json.dumps({"model": self.model, "input": dict(self.input)}, default=str))
        return record.param.get("model") == wanted["model"] and record.param.get("input") == wanted["input"]

    def _remember(self, context: Context, task_id: str, hook: LiangxinHook) -> None:
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, task_id)
        self._push_task_id(context, task_id, hook)

    def _push_task_id(self, context: Context, task_id: str, hook: LiangxinHook) -> None:
        self._liangxin_task_id = task_id
        context["ti"].xcom_push(key=XCOM_TASK_ID, value=task_id)
        # Until a result exists the link names the task's status URL, so even a failed or stuck task shows which
        # LiangXin task it was (the API needs the key to answer it; it has no public task page).
        context["ti"].xcom_push(key=XCOM_RESULT_URL, value=hook.task_status_url(task_id))

    def _defer(self, context: Context, task_id: str) -> None:
        deadlines = Deadlines.start(context, self.timeout, self.execution_timeout)
        self.log.info("Deferring: the triggerer polls LiangXin task %s every %g s", task_id, self.poll_interval)
        self.defer(
            trigger=LiangxinTaskTrigger.for_wait(
                task_id,
                deadlines,
                liangxin_conn_id=self.liangxin_conn_id,
                poll_interval=self.poll_interval,
                request_timeout=self.request_timeout,
                retry=self.retry,
                max_error_duration=self.max_error_duration,
            ),
            method_name="execute_complete",
            timeout=deadlines.backstop(self.poll_interval),
        )

    def _poll(self, context: Context, hook: LiangxinHook, record: TaskRecord) -> TaskRecord:
        """Sync waiting on the worker; the same deadlines and event semantics as the trigger."""
        deadlines = Deadlines.start(context, self.timeout, self.execution_timeout)
        last_state = record.state
        self.log.info("Waiting for LiangXin task %s (poll every %g s)", record.task_id, self.poll_interval)
        while not record.state.is_terminal:
            now = time.time()
            reason = deadlines.passed(now)
            if reason:
                timed_out(record.task_id, reason)
            time.sleep(deadlines.sleep_for(now, self.poll_interval))
            record = hook.get_task(record.task_id)
            if record.state is not last_state:
                self.log.info("LiangXin task %s is %s", record.task_id, record.state.value)
                last_state = record.state
        return settle_record(record)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: validate the event, then finish like the sync path."""
        record = record_from_event(event)
        hook = self.hook
        try:
            return self._complete(context, record, hook)
        finally:
            hook.close()

    def _complete(self, context: Context, record: TaskRecord, hook: LiangxinHook) -> dict[str, Any]:
        from airflow_provider_liangxin.results import redact_url

        result = record.to_dict()
        shown = ", ".join(redact_url(url) for url in record.result_urls)
        self.log.info("LiangXin task %s succeeded: %s", record.task_id, shown)
        link = record.result_urls[0] if record.result_urls else None
        if self.output_path:
            from airflow_provider_liangxin.results import store_results

            stored = store_results(
                result,
                self.output_path,
                verify_ssl=hook.settings.verify_ssl,
                timeout=self.download_timeout,
                max_bytes=self.max_download_bytes,
                retry=self.retry,
            )
            result["stored"] = stored
            link = stored[0]["path"] if stored else link
            if self.output_asset_ref is not None:
                context["outlet_events"][self.output_asset_ref].extra = {
                    "liangxin_task_id": record.task_id,
                    "model": record.model,
                    "files": [item["path"] for item in stored],
                }
        if link:
            context["ti"].xcom_push(key=XCOM_RESULT_URL, value=link)
        return result

    def on_kill(self) -> None:
        task_id = getattr(self, "_liangxin_task_id", None)
        if task_id:
            self.log.warning(NO_CANCEL_NOTE.format(task_id=task_id))


#: The name the design documents use.
CreateTaskOperator = LiangxinCreateTaskOperator

__all__ = [
    "XCOM_RESULT_URL",
    "XCOM_TASK_ID",
    "CreateTaskOperator",
    "LiangxinCreateTaskOperator",
    "LiangxinResultLink",
    "check_callback_url",
]
