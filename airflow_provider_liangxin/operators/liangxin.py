"""LiangxinCreateTaskOperator: create a LiangXin generation task and, by default, wait for its result.

Waiting happens in one of three ways: deferred to the triggerer (``deferrable=True``, no worker slot held), polled
on the worker (``deferrable=False``), or not at all (``wait_for_completion=False``: return the taskId and let a
:class:`~airflow_provider_liangxin.sensors.liangxin.LiangxinTaskSensor` wait).

A paid generation is never created twice for one task instance: the taskId is written to Airflow 3.3's
``task_state_store`` right after creation, and a retry resumes that task (waits for it if it is still running,
returns its result if it succeeded) and only creates a new one if it failed or is unknown.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    BaseOperator,
    BaseOperatorLink,
    conf,
)

from airflow_provider_liangxin._api import LiangxinTaskNotFoundError, TaskRecord
from airflow_provider_liangxin.callbacks import (
    AUTO,
    CallbackSettings,
    callback_url_for,
    check_callback_url,
    new_token,
    token_hash,
)
from airflow_provider_liangxin.events import (
    CALLBACK_STATUS,
    DEFAULT_MAX_ERROR_DURATION,
    NO_CANCEL_NOTE,
    TRANSIENT_ERRORS,
    Deadlines,
    ErrorBudget,
    LiangxinTaskFailedException,
    check_number,
    normalize_retry,
    record_from_event,
    settle_record,
    timed_out,
    wait_error,
    without_secret,
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


#: Schemes a link may never have (a browser would run or render them): result URLs must be http(s) anyway.
_UNSAFE_LINK_SCHEMES = frozenset({"javascript", "data", "vbscript", "blob"})


class LiangxinResultLink(BaseOperatorLink):
    """ "LiangXin result" button: the stored image when there is one, else the first result URL, else the task's
    recordInfo URL.

    Airflow 3 calls ``get_link`` only in the worker, once the try ends, with the very operator that ran, and stores
    the answer for the UI. So the link is read from that operator, not from XCom: a task that failed before
    creating a LiangXin task has no link, and reading a missing XCom would log a misleading ``XCom not found``.
    """

    name = "LiangXin result"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        link = getattr(operator, "_liangxin_result_link", None)
        return link if isinstance(link, str) and safe_link(link) else ""


def safe_link(url: str) -> bool:
    """May ``url`` become the extra link? Never a script or inline-content URL."""
    scheme = urlsplit(url.strip()).scheme.lower() if url else ""
    return bool(scheme) and scheme not in _UNSAFE_LINK_SCHEMES


def _is_web_url(url: str) -> bool:
    """A result URL from the API is only worth linking (or storing) when it is http(s) with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _json_problem(value: Any, path: str) -> str | None:
    """The first part of ``value`` that cannot be sent as JSON, named by its path (``input.prompt``), or None.

    Caught before any request, so a bad value fails once instead of as a TypeError/ValueError Airflow retries.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path} is not valid text (it holds a lone surrogate character)"
        return None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} must be a finite number, got {value!r}"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-string key {key!r}"
            problem = _json_problem(key, f"{path} key") or _json_problem(item, f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    return f"{path} must be JSON data (text, number, bool, null, list or object), got {type(value).__name__}"


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


def _pulled_result(task_instance: Any) -> Mapping[str, Any] | None:
    """The task's result from XCom, for an operator instance that did not run it itself."""
    try:
        value = task_instance.xcom_pull(task_ids=task_instance.task_id, map_indexes=task_instance.map_index)
    except Exception:
        return None
    return value if isinstance(value, Mapping) else None


class LiangxinCreateTaskOperator(BaseOperator):
    """Create a LiangXin Market task (image or video generation) and wait for its result.

    :param model: The LiangXin model, e.g. ``seedream-v4-5``. (templated)
    :param input: The model's input, e.g. ``{"prompt": "...", "aspect_ratio": "16:9"}``; nested values are
        templated. Validated against the model's documented schema before any request is sent.
    :param liangxin_conn_id: Airflow connection of type ``liangxin``. (templated)
    :param callback_url: ``"auto"``: LiangXin calls this Airflow back when the task ends (the provider's callback
        receiver, see docs/callbacks.md), so a deferred task finishes within seconds and the trigger only polls as
        a slow fallback. The URL is built from ``[liangxin] callback_base_url`` with a fresh token per try (only
        its hash is stored). Any other value is passed to LiangXin as is (https, or http for loopback hosts).
        (templated)
    :param callback_fallback_poll_interval: With ``callback_url="auto"``, seconds between the trigger's fallback
        polls (the first poll is immediate); None takes ``[liangxin] callback_fallback_poll_interval`` (60).
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
    :param allow_private_result_hosts: Download results from private/loopback hosts too (a private object store).
        None takes the connection's ``allow_private_result_hosts`` extra; the API's own host is always allowed,
        link-local addresses (cloud metadata endpoints) never.
    :param output_asset: Also declare ``output_path`` as an Airflow Asset outlet, so downstream DAGs can be
        scheduled on new images. Needs a literal (untemplated) ``output_path``; the asset event's ``extra``
        lists the stored files.
    :param strict: Reject models this provider does not know (by default they pass through with a warning).
    :param validate: Check ``input`` against the model's documented schema before sending it. Turn off only when
        LiangXin accepts a field this provider version does not know yet.
    :param openlineage_include_prompt: Put the prompt text in the OpenLineage ``liangxin`` run facet. Off by
        default: prompts can be confidential, and lineage backends are read by many; the facet always has the
        prompt's SHA-256 and length (see docs/lineage.md).

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
        callback_fallback_poll_interval: float | None = None,
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
        allow_private_result_hosts: bool | None = None,
        output_asset: bool = False,
        strict: bool = False,
        validate: bool = True,
        openlineage_include_prompt: bool = False,
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
        self.callback_fallback_poll_interval = check_number(
            "callback_fallback_poll_interval", callback_fallback_poll_interval, owner=owner, optional=True
        )
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
        if allow_private_result_hosts is not None and not isinstance(allow_private_result_hosts, bool):
            raise ValueError(
                f"{owner}: allow_private_result_hosts must be True, False or None, got {allow_private_result_hosts!r}"
            )
        self.allow_private_result_hosts = allow_private_result_hosts
        self.strict = strict
        self.validate = validate
        self.openlineage_include_prompt = openlineage_include_prompt
        if not wait_for_completion and deferrable:
            self.log.debug("%s: deferrable has no effect when wait_for_completion=False", self.task_id)
        # A typo in a literal input fails the DAG import, long before anything is paid for. Not when Airflow
        # unmaps a mapped task at run time: a ValueError there would be retried, so execute() validates instead and
        # fails once. The SDK has no public "unmapped" flag: ``_BaseOperator__from_mapped`` is what its own
        # DecoratedOperator reads; tests/operators pin it (TestMappedValidation), so an SDK change shows up there.
        from_mapped = getattr(self, "_BaseOperator__from_mapped", False)
        if not from_mapped and not _has_template(model) and not _has_template(input):
            self._validate()
        if callback_url and not _has_template(callback_url):
            try:
                check_callback_url(callback_url)
            except ValueError as exc:
                raise ValueError(f"{owner}: {exc}") from None

    # ------------------------------------------------------------------------------------------- helpers

    @cached_property
    def hook(self) -> LiangxinHook:
        """One hook per operator instance (its sync client is reopened after ``close()`` if used again)."""
        return LiangxinHook(self.liangxin_conn_id, timeout=self.request_timeout, retry=self.retry)

    def _validate(self) -> list[str]:
        """Normalise ``model`` and check what will be sent; ValueError names the field. Runs on the rendered
        values (in ``__init__`` only for literal ones), so the value validated, sent and compared on resume is
        one and the same."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"{self.task_id}: model must be a non-empty string, got {self.model!r}")
        # A template or Variable rendering "seedream-v4-5\n" would skip validation (unknown model) and defeat
        # resume (LiangXin echoes the stripped name): strip once, here.
        self.model = self.model.strip()
        if not isinstance(self.input, Mapping):
            raise ValueError(f"{self.task_id}: input must be a mapping, got {type(self.input).__name__}")
        problem = _json_problem(self.model, "model") or _json_problem(self.input, "input")
        if problem:
            raise ValueError(f"{self.task_id}: {problem}")
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
        callback_hash: str | None = None  # set when this try gave LiangXin a callback URL of its own
        # One wait window per try: every request of a sync wait is bounded by it, not only the sleeps between.
        deadlines = Deadlines.start(context, self.timeout, self.execution_timeout)
        try:
            record: TaskRecord | None = self._resume(context, hook, deadlines)
            if record is not None:
                task_id = record.task_id
            else:
                callback_url, callback_hash = self._callback_for_try(context)
                task_id = hook.create_task(self.model, self.input, callback_url)
                self._remember(context, task_id, hook)
                self.log.info("LiangXin task %s created for model %s", task_id, self.model)
                # With a callback URL the trigger's immediate first poll does this check: one recordInfo less.
                if self.wait_for_completion and not (self.deferrable and callback_hash):
                    record = self._poll_once(hook, task_id, deadlines, None)
            if not self.wait_for_completion:
                return task_id
            if record is not None and record.state.is_terminal:
                return self._complete(context, settle_record(record), hook)
            if self.deferrable:
                self._defer(context, task_id, deadlines, callback_hash)
            return self._complete(context, self._poll(hook, record or task_id, deadlines), hook)
        except LiangxinTaskFailedException as exc:
            self._liangxin_failure = exc  # for get_openlineage_facets_on_failure
            raise
        finally:
            hook.close()

    def _resume(self, context: Context, hook: LiangxinHook, deadlines: Deadlines) -> TaskRecord | None:
        """On a retry, find this task instance's earlier LiangXin task; None means create a new one."""
        store = context.get("task_state_store")
        if store is None:
            self.log.info("No task_state_store (Airflow < 3.3): a retry of this task creates a new LiangXin task")
            return None
        previous = store.get(STATE_KEY)
        if not previous:
            return None
        try:
            record = hook.get_task(str(previous), deadline=deadlines.earliest)
        except LiangxinTaskNotFoundError:
            self.log.warning("Earlier LiangXin task %s is unknown to LiangXin; creating a new one", previous)
            return None
        except TRANSIENT_ERRORS:
            reason = deadlines.passed(time.time())
            if reason:
                timed_out(str(previous), reason)
            raise
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
        wanted = json.loads(json.dumps(dict(self.input)))
        echoed_model = record.param.get("model")
        same_model = isinstance(echoed_model, str) and echoed_model.strip() == self.model
        return same_model and record.param.get("input") == wanted

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
        self._set_link(context, hook.task_status_url(task_id))

    def _set_link(self, context: Context, link: str) -> None:
        """The extra link (read by LiangxinResultLink from this operator) and its documented XCom."""
        if not safe_link(link):
            return
        self._liangxin_result_link = link
        context["ti"].xcom_push(key=XCOM_RESULT_URL, value=link)

    def _callback_for_try(self, context: Context) -> tuple[str | None, str | None]:
        """The callBackUrl for createTask and, for ``"auto"``, the hash of this try's token (else None).

        The token goes to LiangXin in the URL and nowhere else: not in a log line, the rendered template fields
        (``self.callback_url`` stays ``"auto"``), XCom or the trigger (which holds its sha256).
        """
        if self.callback_url != AUTO:
            return self.callback_url or None, None
        if not (self.wait_for_completion and self.deferrable):
            self.log.info("callback_url='auto' is used by deferred waits only: this task polls LiangXin instead")
            return None, None
        try:
            settings = CallbackSettings.from_conf()
        except ValueError as exc:
            raise AirflowFailException(f"callback_url='auto': {exc}") from exc
        if not settings.base_url:
            self.log.warning(
                "callback_url='auto' but [liangxin] callback_base_url is not set: waiting by polling every %g s",
                self.poll_interval,
            )
            return None, None
        ti_id = getattr(context.get("ti"), "id", None)
        if not ti_id:
            self.log.warning("callback_url='auto': this Airflow gives no task instance id; waiting by polling")
            return None, None
        token = new_token()
        self.log.info(
            "LiangXin will call back %s/liangxin/v1/callback/%s/*** when the task ends", settings.base_url, ti_id
        )
        self._callback_settings = settings
        return callback_url_for(settings.base_url, str(ti_id), token), token_hash(token)

    def _fallback_interval(self) -> float:
        if self.callback_fallback_poll_interval is not None:
            return max(self.poll_interval, self.callback_fallback_poll_interval)
        settings = getattr(self, "_callback_settings", None)
        if settings is None:
            try:
                settings = CallbackSettings.from_conf()
            except ValueError:
                settings = CallbackSettings()
        return max(self.poll_interval, settings.fallback_poll_interval)

    def _defer(
        self,
        context: Context,
        task_id: str,
        deadlines: Deadlines,
        callback_hash: str | None = None,
        wakeups: int = 0,
    ) -> None:
        interval = self._fallback_interval() if callback_hash else self.poll_interval
        if callback_hash:
            self.log.info(
                "Deferring: LiangXin calls back when task %s ends; the triggerer polls it every %g s as a fallback",
                task_id,
                interval,
            )
        else:
            self.log.info("Deferring: the triggerer polls LiangXin task %s every %g s", task_id, interval)
        self.defer(
            trigger=LiangxinTaskTrigger.for_wait(
                task_id,
                deadlines,
                liangxin_conn_id=self.liangxin_conn_id,
                poll_interval=interval,
                request_timeout=self.request_timeout,
                retry=self.retry,
                max_error_duration=self.max_error_duration,
                callback_token_sha256=callback_hash,
                callback_wakeups=wakeups,
            ),
            method_name="execute_complete",
            timeout=deadlines.backstop(interval),
        )

    def _after_callback(self, context: Context, event: Mapping[str, Any], hook: LiangxinHook) -> dict[str, Any]:
        """LiangXin called back (a hint, unsigned): check the task once with the key; finish, or defer again.

        Each callback that finds the task unfinished costs one wake-up; past ``[liangxin] callback_max_wakeups``
        the task waits by polling alone (at ``poll_interval``), so replayed or forged callbacks cannot keep waking it.
        """
        task_id = str(event.get("task_id") or "")
        raw_info = event.get("callback")
        info: Mapping[str, Any] = raw_info if isinstance(raw_info, Mapping) else {}
        deadlines = Deadlines(_number_or_none(info.get("deadline")), _number_or_none(info.get("execution_deadline")))
        raw_wakeups = info.get("wakeups")
        wakeups = raw_wakeups if isinstance(raw_wakeups, int) and not isinstance(raw_wakeups, bool) else 1
        if not task_id:
            raise AirflowException(f"LiangXin callback event without a task id: {dict(event)!r}")
        record = self._poll_once(hook, task_id, deadlines, None)
        if record is not None and record.state.is_terminal:
            self.log.info("LiangXin called back and task %s is %s", task_id, record.state.value)
            return self._complete(context, settle_record(record), hook)
        reason = deadlines.passed(time.time())
        if reason:
            timed_out(task_id, reason)
        try:
            max_wakeups = CallbackSettings.from_conf().max_wakeups
        except ValueError:
            max_wakeups = CallbackSettings().max_wakeups
        callback_hash = info.get("token_sha256") if wakeups < max_wakeups else None
        state = record.state.value if record is not None else "unknown (status check failed)"
        if callback_hash:
            self.log.warning(
                "LiangXin called back but task %s is %s: waiting again (wake-up %d of %d)",
                task_id,
                state,
                wakeups,
                max_wakeups,
            )
        else:
            self.log.warning(
                "LiangXin called back but task %s is %s; %d wake-ups used, so further callbacks are ignored for "
                "this try and the triggerer polls every %g s",
                task_id,
                state,
                wakeups,
                self.poll_interval,
            )
        self._defer(context, task_id, deadlines, callback_hash if isinstance(callback_hash, str) else None, wakeups)
        raise AssertionError("unreachable: defer() raises")  # pragma: no cover

    def _poll_once(
        self, hook: LiangxinHook, task_id: str, deadlines: Deadlines, budget: ErrorBudget | None
    ) -> TaskRecord | None:
        """One status read bounded by the wait's deadline. None: a transient error within ``max_error_duration``
        (without a budget, i.e. right after createTask, the wait that follows decides)."""
        try:
            record = hook.get_task(task_id, deadline=deadlines.earliest)
        except TRANSIENT_ERRORS as exc:
            now = time.time()
            reason = deadlines.passed(now)
            if reason:
                timed_out(task_id, reason)
            if budget is not None and budget.failed(now):
                raise wait_error(task_id, f"{budget.describe(now)}; last error: {exc}") from exc
            self.log.warning("LiangXin task %s: status check failed: %s", task_id, exc)
            return None
        if budget is not None:
            budget.succeeded()
        return record

    def _poll(self, hook: LiangxinHook, start: TaskRecord | str, deadlines: Deadlines) -> TaskRecord:
        """Sync waiting on the worker; the same deadlines, error budget and outcomes as the trigger."""
        task_id = start if isinstance(start, str) else start.task_id
        last_state = None if isinstance(start, str) else start.state
        budget = ErrorBudget(self.max_error_duration)
        self.log.info("Waiting for LiangXin task %s (poll every %g s)", task_id, self.poll_interval)
        while True:
            now = time.time()
            reason = deadlines.passed(now)
            if reason:
                timed_out(task_id, reason)
            time.sleep(deadlines.sleep_for(now, self.poll_interval))
            record = self._poll_once(hook, task_id, deadlines, budget)
            if record is None:
                continue
            if record.state.is_terminal:
                return settle_record(record)
            if record.state is not last_state:
                self.log.info("LiangXin task %s is %s", task_id, record.state.value)
                last_state = record.state

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: validate the event, then finish like the sync path.

        The connection is resolved first, whatever the event says: that registers the API key with Airflow's
        secrets masker in this process, and the key is taken out of the event's text, so an error a hostile server
        built from our Authorization header is neither logged nor raised with it (the triggerer masked only its own
        log, and the scheduler's copy of a task's log lines is not masked at all).
        """
        hook = self.hook
        try:
            event = without_secret(event, self._register_key(hook))
            task_id = event.get("task_id") if isinstance(event, Mapping) else None
            if task_id:
                self._liangxin_task_id = str(task_id)
                with contextlib.suppress(Exception):
                    self._set_link(context, hook.task_status_url(str(task_id)))
            if isinstance(event, Mapping) and event.get("status") == CALLBACK_STATUS:
                return self._after_callback(context, event, hook)
            return self._complete(context, record_from_event(event), hook)
        except LiangxinTaskFailedException as exc:
            self._liangxin_failure = exc  # for get_openlineage_facets_on_failure (a resumed, fresh instance)
            raise
        finally:
            hook.close()

    def _register_key(self, hook: LiangxinHook) -> str | None:
        """Resolve the connection (which calls ``mask_secret`` on the key) and return the key, to scrub it."""
        try:
            return hook.settings.api_key
        except Exception as exc:
            self.log.warning("Connection %r could not be resolved: %s", self.liangxin_conn_id, exc)
            return None

    def _complete(self, context: Context, record: TaskRecord, hook: LiangxinHook) -> dict[str, Any]:
        from airflow_provider_liangxin.results import redact_url

        result = record.to_dict()
        shown = ", ".join(redact_url(url) for url in record.result_urls)
        self.log.info("LiangXin task %s succeeded: %s", record.task_id, shown)
        link = next((url for url in record.result_urls if _is_web_url(url)), None)
        if self.output_path:
            from airflow_provider_liangxin.results import store_results

            settings = hook.settings
            allow_private = self.allow_private_result_hosts
            stored = store_results(
                result,
                self.output_path,
                verify_ssl=settings.verify_ssl,
                timeout=self.download_timeout,
                max_bytes=self.max_download_bytes,
                retry=self.retry,
                allow_private_hosts=settings.allow_private_result_hosts if allow_private is None else allow_private,
                trusted_base_url=settings.base_url,
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
            self._set_link(context, link)
        self._liangxin_result = result  # for get_openlineage_facets_on_complete
        return result

    # ------------------------------------------------------------------------------------------- OpenLineage
    # Called by the OpenLineage provider's listener, in the worker, on the operator instance that ran (after a
    # deferral: the fresh instance that ran execute_complete). The provider is optional: imports stay inside.

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_provider_liangxin.lineage import task_lineage

        return task_lineage(self.model, self.input, include_prompt=self.openlineage_include_prompt)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_liangxin.lineage import task_lineage

        result = getattr(self, "_liangxin_result", None)
        if result is None and self.wait_for_completion:
            result = _pulled_result(task_instance)
        task_id = getattr(self, "_liangxin_task_id", None)
        return task_lineage(
            self.model,
            self.input,
            result=result,
            task_id=task_id,
            include_prompt=self.openlineage_include_prompt,
            source=self._lineage_source(),
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_provider_liangxin.lineage import task_lineage

        failure = getattr(self, "_liangxin_failure", None)
        result = None
        if isinstance(failure, LiangxinTaskFailedException):
            result = {"task_id": failure.task_id, "state": "fail", "fail_code": failure.fail_code}
            result["fail_msg"] = failure.fail_msg
        return task_lineage(
            self.model,
            self.input,
            result=result,
            task_id=getattr(self, "_liangxin_task_id", None),
            include_prompt=self.openlineage_include_prompt,
            source=self._lineage_source(),
        )

    def _lineage_source(self) -> str:
        """``liangxin://<api host>`` for the external query facet: which LiangXin (the API, the simulator) ran it."""
        try:
            host = urlsplit(self.hook.settings.base_url).netloc.rpartition("@")[2]
        except Exception:
            host = ""
        return f"liangxin://{host}" if host else "liangxin"

    def on_kill(self) -> None:
        task_id = getattr(self, "_liangxin_task_id", None)
        if task_id:
            self.log.warning(NO_CANCEL_NOTE.format(task_id=task_id))


def _number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


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
