"""LiangxinCreateTaskOperator: create a LiangXin generation task and, by default, wait for its result.

Waiting happens in one of three ways: deferred to the triggerer (``deferrable=True``, no worker slot held), polled
on the worker (``deferrable=False``), or not at all (``wait_for_completion=False``: return the taskId and let a
:class:`~airflow_provider_liangxin.sensors.liangxin.LiangxinTaskSensor` wait).

A paid generation is never created twice for one task instance: the taskId is written to Airflow 3.3's
``task_state_store`` right after creation, and a retry resumes that task (waits for it if it is still running,
returns its result if it succeeded) and only creates a new one if it failed or is unknown.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
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

from airflow_provider_liangxin._api import LiangxinTaskNotFoundError, TaskRecord, cap_text
from airflow_provider_liangxin.batch import CHUNK_SIZE, json_problem
from airflow_provider_liangxin.callbacks import (
    AUTO,
    CallbackSettings,
    callback_url_for,
    check_callback_url,
    deferral_settle_seconds,
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
#: XCom key of the stored file (or result URL, or recordInfo URL) of the task; the extra link opens the result view.
XCOM_RESULT_URL = "liangxin_result_url"
#: XCom key of a failed LiangXin task's ``task_id``, ``model``, ``fail_code`` and ``fail_msg`` (the result view).
XCOM_FAILURE = "liangxin_failure"
#: task_state_store key holding the taskId across retries (renaming it breaks in-flight retries).
STATE_KEY = "liangxin_task_id"
#: After a failed task_state_store write, eager batch saves pause this long (seconds): each failed write may
#: already have cost the Execution API client's own retries, and creation must not stall behind them.
STATE_WRITE_BACKOFF = 30.0


def _describe_write_error(exc: BaseException) -> str:
    """A failed Execution API write for the log (the SDK's AirflowRuntimeError names the HTTP status or the
    transport error; its text never holds the LiangXin key)."""
    return f"{type(exc).__name__}: {cap_text(str(exc), 300)}"


#: Schemes a link may never have (a browser would run or render them): result URLs must be http(s) anyway.
_UNSAFE_LINK_SCHEMES = frozenset({"javascript", "data", "vbscript", "blob"})


class LiangxinResultLink(BaseOperatorLink):
    """ "LiangXin result" button: opens the provider's result view of this task instance in the Airflow UI (the
    images inline, the reasons of a failure; docs/result-view.md), for every try that made a LiangXin task.

    A same-origin path (prefixed with the path of ``[api] base_url``), because the UI draws only same-origin or
    http(s) links, and neither a worker's ``file://`` path nor LiangXin's recordInfo URL (which needs the API key)
    means anything in the user's browser.

    Airflow 3 calls ``get_link`` only in the worker, once the try ends, with the very operator that ran, and stores
    the answer for the UI. So whether a LiangXin task exists is read from that operator, not from XCom: a task that
    failed before creating one has no link, and reading a missing XCom would log a misleading ``XCom not found``.
    """

    name = "LiangXin result"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if not (getattr(operator, "_liangxin_result_link", None) or getattr(operator, "_liangxin_task_id", None)):
            return ""
        from airflow_provider_liangxin.result_view import view_url

        try:
            base_url = conf.get("api", "base_url", fallback="") or ""
        except Exception:
            base_url = ""
        return view_url(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index, base_url=base_url)


def safe_link(url: str) -> bool:
    """May ``url`` become the extra link? Never a script or inline-content URL."""
    scheme = urlsplit(url.strip()).scheme.lower() if url else ""
    return bool(scheme) and scheme not in _UNSAFE_LINK_SCHEMES


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


class _SharedArguments:
    """The arguments both operators take, checked where the DAG is parsed (a NaN or inf found later would surface
    after the paid createTask)."""

    retry: dict[str, Any] | None
    request_timeout: float | None
    max_error_duration: float
    download_timeout: float
    max_download_bytes: int
    allow_private_result_hosts: bool | None
    strict: bool
    validate: bool
    openlineage_include_prompt: bool

    def _set_shared_arguments(
        self,
        owner: str,
        *,
        retry: Mapping[str, Any] | None,
        request_timeout: float | None,
        max_error_duration: float,
        download_timeout: float,
        max_download_bytes: int,
        allow_private_result_hosts: bool | None,
        strict: bool,
        validate: bool,
        openlineage_include_prompt: bool,
    ) -> None:
        self.retry = normalize_retry(retry, owner=owner)
        self.request_timeout = check_number("request_timeout", request_timeout, owner=owner, optional=True)
        self.max_error_duration = check_number("max_error_duration", max_error_duration, owner=owner, zero=True)
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


class LiangxinCreateTaskOperator(_SharedArguments, BaseOperator):
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
        self.output_path = output_path
        self._set_shared_arguments(
            owner,
            retry=retry,
            request_timeout=request_timeout,
            max_error_duration=max_error_duration,
            download_timeout=download_timeout,
            max_download_bytes=max_download_bytes,
            allow_private_result_hosts=allow_private_result_hosts,
            strict=strict,
            validate=validate,
            openlineage_include_prompt=openlineage_include_prompt,
        )
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
        problem = json_problem(self.model, "model") or json_problem(self.input, "input")
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
            self._push_failure(context, exc)
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
        """Record a just-paid taskId: in the state store (for a retry) and in XCom (the link, a downstream sensor).
        Either write failing (the Execution API timing out under load) must not fail the try: the task is paid
        for and this try still waits for it (the trigger kwargs carry the taskId). The log says what is lost."""
        store = context.get("task_state_store")
        if store is not None:
            try:
                store.set(STATE_KEY, task_id)
            except Exception as exc:
                self.log.warning(
                    "Could not record LiangXin task %s for a retry to resume (%s); this try still waits for it, "
                    "but a retry of it would create a new one",
                    task_id,
                    _describe_write_error(exc),
                )
        try:
            self._push_task_id(context, task_id, hook)
        except Exception as exc:
            self.log.warning(
                "Could not push LiangXin task %s to XCom (%s); this try still waits for it",
                task_id,
                _describe_write_error(exc),
            )

    def _push_task_id(self, context: Context, task_id: str, hook: LiangxinHook) -> None:
        self._liangxin_task_id = task_id
        context["ti"].xcom_push(key=XCOM_TASK_ID, value=task_id)
        # Until a result exists the link names the task's status URL, so even a failed or stuck task shows which
        # LiangXin task it was (the API needs the key to answer it; it has no public task page).
        self._set_link(context, hook.task_status_url(task_id))

    def _push_failure(self, context: Context, exc: LiangxinTaskFailedException) -> None:
        """LiangXin's reasons for the result view (and anyone reading XCom): the task's return value never comes."""
        with contextlib.suppress(Exception):
            context["ti"].xcom_push(
                key=XCOM_FAILURE,
                value={
                    "task_id": exc.task_id,
                    "model": self.model,
                    "prompt": self.input.get("prompt") if isinstance(self.input, Mapping) else None,
                    "fail_code": exc.fail_code,
                    "fail_msg": exc.fail_msg,
                },
            )

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
                settle_seconds=deferral_settle_seconds(),
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
            self._push_failure(context, exc)
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
        from airflow_provider_liangxin.results import is_web_url, redact_url

        result = record.to_dict()
        self._liangxin_task_id = record.task_id
        shown = ", ".join(redact_url(url) for url in record.result_urls)
        self.log.info("LiangXin task %s succeeded: %s", record.task_id, shown)
        link = next((url for url in record.result_urls if is_web_url(url)), None)
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


# ================================================================================================ the batch

#: createTask requests in flight at once while a wave is created (max_in_flight bounds the LiangXin tasks).
CREATE_CONCURRENCY = 16
#: recordInfo requests at once when the worker polls a batch itself (deferrable=False).
SYNC_POLL_CONCURRENCY = 16
#: Result downloads at once when a batch stores its files (each local file and sidecar is fsync-ed: the threads
#: overlap those waits; measured: 1,000 results took 37 s with 4 threads on a loaded 2-core machine).
STORE_CONCURRENCY = 16
#: XCom key of the per-item results when the task fails (``return_value`` holds them when it succeeds).
XCOM_BATCH_RESULTS = "liangxin_batch_results"
#: Seconds between progress lines while the worker polls a batch itself.
PROGRESS_EVERY = 15.0
#: Rows of the failure table in the summary log.
SUMMARY_MAX_FAILURES = 50


class LiangxinBatchCreateTaskOperator(_SharedArguments, BaseOperator):
    """Generate many images (or videos) in one task instance: paced creation, one trigger for all, no duplicate.

    Each item of ``inputs`` becomes one LiangXin task. At most ``max_in_flight`` of them run at a time; a 429
    slows creation down (Retry-After honoured, concurrency halved, then grown back) instead of failing an item.
    While tasks run, the operator defers to one :class:`~airflow_provider_liangxin.triggers.liangxin.
    LiangxinBatchTrigger` that polls all of them on the triggerer's shared session and resumes the worker only
    when there is work: the next wave to create (half of ``max_in_flight`` free), or the end.

    Every taskId is written to Airflow 3.3's ``task_state_store`` right after createTask answers (in chunks of
    50 items), so a resumed deferral, an Airflow retry or a worker killed with ``kill -9`` continue the tasks
    already created: a succeeded item is never paid twice, a running one is waited for. Item-retry policy: within
    one try an item is created at most once; an item that failed (LiangXin ``fail``, or createTask refused) is
    created again only by the next Airflow try. See docs/batch.md.

    :param inputs: The items: input dicts (sent with ``model``) or ``{"model": ..., "input": {...}}`` dicts, e.g.
        the output of an upstream task. (templated) Every item is validated before anything is sent; all problems
        of all items are listed at once.
    :param model: The default model of the items. (templated)
    :param max_in_flight: LiangXin tasks created and not yet finished, at most.
    :param deferrable: Wait in the triggerer (one trigger for the whole batch) instead of polling on the worker.
    :param poll_interval: Seconds between status polls of the in-flight tasks.
    :param output_path: Store every result there (as the single-task operator does: files + JSON sidecars);
        each item then lists its ``stored`` files. (templated)
    :param max_failed: The task fails when more items than this fail (default 0: any failure fails the task, and
        an Airflow retry re-creates only the failed items). Its per-item results are then in the
        ``liangxin_batch_results`` XCom.
    :param timeout: Seconds the batch may take per Airflow try (creation and waiting); tasks still running then
        are reported as failed with ``fail_code="timeout"`` and polled again (not re-created) by a retry.
    :param liangxin_conn_id: Airflow connection of type ``liangxin``. (templated)
    :param retry: Hook retry settings for polls and downloads (createTask pacing is the batch's own).
    :param request_timeout: Whole-request HTTP timeout in seconds (overrides the connection's ``timeout``).
    :param max_error_duration: Seconds transient API errors may last in a row (every poll of a round failing, or
        createTask unreachable) before the try fails; a retry resumes.
    :param download_timeout: Per-step timeout of a result download.
    :param max_download_bytes: Size cap per result file.
    :param allow_private_result_hosts: As for :class:`LiangxinCreateTaskOperator`.
    :param output_asset: Declare ``output_path`` (literal) as an Asset outlet; the event's extra lists the files.
    :param strict: Reject models this provider does not know.
    :param validate: Check each input against its model's schema before sending anything.
    :param openlineage_include_prompt: Put each prompt's text in the OpenLineage ``liangxin`` run facet (off by
        default: only each prompt's SHA-256 and length; prompts can be confidential).

    ``return_value``: one dict per item, in input order: ``index``, ``model``, ``task_id``, ``state``
    (``success``/``fail``), ``result_urls``, ``fail_code``, ``fail_msg``, ``creations`` (LiangXin tasks created
    for it over all tries) and, with ``output_path``, ``stored``.
    """

    #: time.monotonic() before which eager state saves are skipped (after a failed write); per worker process.
    _state_write_paused_until: float = 0.0

    template_fields: Sequence[str] = ("inputs", "model", "liangxin_conn_id", "output_path")
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (LiangxinResultLink(),)
    ui_color = "#e9d8ff"

    def __init__(
        self,
        *,
        inputs: Any,
        model: str | None = None,
        max_in_flight: int = 100,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        output_path: str | None = None,
        max_failed: int = 0,
        timeout: float | None = 4 * 3600.0,
        liangxin_conn_id: str = LiangxinHook.default_conn_name,
        retry: Mapping[str, Any] | None = None,
        request_timeout: float | None = None,
        max_error_duration: float = DEFAULT_MAX_ERROR_DURATION,
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
        self.inputs = inputs
        self.model = model
        self.max_in_flight = check_number("max_in_flight", max_in_flight, owner=owner, integer=True)
        if isinstance(max_failed, bool) or not isinstance(max_failed, int) or max_failed < 0:
            raise ValueError(f"{owner}: max_failed must be an integer >= 0, got {max_failed!r}")
        self.max_failed = max_failed
        self.deferrable = deferrable
        self.poll_interval = check_number("poll_interval", poll_interval, owner=owner)
        self.output_path = output_path
        self.timeout = check_number("timeout", timeout, owner=owner, optional=True)
        self.liangxin_conn_id = liangxin_conn_id
        self._set_shared_arguments(
            owner,
            retry=retry,
            request_timeout=request_timeout,
            max_error_duration=max_error_duration,
            download_timeout=download_timeout,
            max_download_bytes=max_download_bytes,
            allow_private_result_hosts=allow_private_result_hosts,
            strict=strict,
            validate=validate,
            openlineage_include_prompt=openlineage_include_prompt,
        )
        # Literal items are checked where the DAG is parsed (every problem at once); templated ones and XComArgs
        # (not a list here) at execute, before any request.
        from_mapped = getattr(self, "_BaseOperator__from_mapped", False)
        if (
            isinstance(inputs, list | tuple)
            and not from_mapped
            and not _has_template(inputs)
            and not _has_template(model)
        ):
            self._items()

    # ------------------------------------------------------------------------------------------ helpers

    @cached_property
    def hook(self) -> LiangxinHook:
        return LiangxinHook(self.liangxin_conn_id, timeout=self.request_timeout, retry=self.retry)

    def _items(self) -> list[Any]:
        from airflow_provider_liangxin.batch import normalize_items

        try:
            items, warnings = normalize_items(self.inputs, self.model, validate=self.validate, strict=self.strict)
        except ValueError as exc:
            raise ValueError(f"{self.task_id}: {exc}") from None
        self._warnings = warnings
        return items

    def _prepare(self, context: Context) -> Any:
        """Validated items and their state as persisted by earlier steps of this task instance."""
        from airflow_provider_liangxin.batch import BatchState

        try:
            items = self._items()
            if self.output_path:
                from airflow_provider_liangxin.results import check_output_path

                check_output_path(self.output_path)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc  # a retry renders the same items: fail once
        try_number = getattr(context.get("ti"), "try_number", None) or 1
        return BatchState(items, int(try_number))

    def _load(self, context: Context, state: Any, carry: Mapping[str, Any] | None) -> None:
        store = context.get("task_state_store")
        carried = {int(k): v for k, v in (carry or {}).items()}
        unwritten: list[int] = []
        chunks: dict[int, Any] = {}
        if store is not None:
            # Chunks whose write failed before the deferral: written first, before anything here can fail.
            unwritten = self._write_chunks(store, state, [(chunk, carried[chunk]) for chunk in sorted(carried)])
            chunks = {chunk: store.get(state.chunk_key(chunk)) for chunk in state.chunks() if chunk not in carried}
        chunks.update(carried)  # newer than the store
        for note in state.restore({k: v for k, v in chunks.items() if v}):
            self.log.warning("%s", note)
        state.dirty.update(unwritten)

    def _save(self, context: Context, state: Any, *, eager: bool = False) -> None:
        """Write the chunks that changed: right after each createTask answer (``eager``: grouped when several came
        back together), and after each step; the one memory a retry or a killed worker has. After a failed write,
        eager saves wait :data:`STATE_WRITE_BACKOFF` seconds (each failed write may have cost the Execution API
        client's own retries); the step's closing save always tries."""
        store = context.get("task_state_store")
        if store is None:
            state.take_dirty()
            return
        if eager and time.monotonic() < self._state_write_paused_until:
            return
        dirty = state.take_dirty()
        state.dirty.update(self._write_chunks(store, state, [(chunk, state.dump_chunk(chunk)) for chunk in dirty]))

    def _write_chunks(self, store: Any, state: Any, chunks: list[tuple[int, Any]]) -> list[int]:
        """Write ``(chunk, data)`` pairs in order; returns the chunks not written. Paid tasks must not fail the
        batch because the Execution API was slow: the first failure is logged and the rest wait for the next save
        (the try holds every taskId in memory, and the deferral carries what is still unwritten)."""
        for position, (chunk, data) in enumerate(chunks):
            try:
                store.set(state.chunk_key(chunk), data)
            except Exception as exc:
                self._state_write_paused_until = time.monotonic() + STATE_WRITE_BACKOFF
                self.log.warning(
                    "Could not record the batch's state (%s); %d chunk(s) of %d items are written at the next "
                    "save and carried along a deferral, and a retry before then could not resume their items",
                    _describe_write_error(exc),
                    len(chunks) - position,
                    CHUNK_SIZE,
                )
                return [chunk for chunk, _ in chunks[position:]]
        return []

    def _carry(self, context: Context, state: Any) -> dict[str, Any] | None:
        """What rides along the deferral (next_kwargs): without a task_state_store (Airflow < 3.3) the whole
        state; with one, only the chunks whose write failed (so the resumed worker never forgets a paid task)."""
        chunks = state.chunks() if context.get("task_state_store") is None else sorted(state.dirty)
        return {str(chunk): state.dump_chunk(chunk) for chunk in chunks} or None

    # ------------------------------------------------------------------------------------------ execute

    def execute(self, context: Context) -> Any:
        state = self._prepare(context)
        for warning in self._warnings:
            self.log.warning("%s", warning)
        if not state.items:
            self.log.info("No inputs: nothing to generate")
            return []
        if context.get("task_state_store") is None:
            self.log.info("No task_state_store (Airflow < 3.3): a retry of this batch creates its tasks again")
        self._load(context, state, None)
        for note in state.start_try():
            self.log.warning("%s", note)
        resumed = state.counts()
        if resumed["running"] or resumed["success"]:
            self.log.info(
                "Resuming a batch of %d items from earlier attempts: %d running, %d succeeded (not created again)",
                resumed["items"],
                resumed["running"],
                resumed["success"],
            )
        self._save(context, state)
        self._liangxin_result_link = True  # the extra link: the result view shows whatever this batch made
        deadlines = Deadlines.start(context, self.timeout, self.execution_timeout)
        return self._run(context, state, deadlines)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        deadline: float | None = None,
        execution_deadline: float | None = None,
        carry: dict[str, Any] | None = None,
    ) -> Any:
        """Resume after the batch trigger fired: record what ended, then create the next wave or finish."""
        state = self._prepare(context)
        self._load(context, state, carry)
        self._liangxin_result_link = True
        hook = self.hook
        try:
            event = without_secret(event, self._register_key(hook))
        finally:
            hook.close()
        if not isinstance(event, Mapping) or event.get("status") not in ("success", "timeout", "error"):
            raise AirflowException(f"LiangXin batch trigger returned no usable event: {event!r}")
        for key, record in (event.get("done") or {}).items():
            state.finished(int(key), record)
        for key, lost in (event.get("lost") or {}).items():
            entry = state.entries.get(int(key))
            if entry is not None and entry.task_id and isinstance(lost, Mapping):
                message = f"LiangXin task {entry.task_id} cannot be followed: {lost.get('message')}"
                state.lost(int(key), entry.task_id, message, final=bool(lost.get("final")))
        self._save(context, state)
        deadlines = Deadlines(deadline, execution_deadline)
        if event["status"] == "timeout":
            self.log.warning("The batch's wait ended: %s", event.get("message"))
            state.timed_out(list(state.in_flight()))
        elif event["status"] == "error":
            raise wait_error(f"batch of {len(state.items)}", str(event.get("message")))
        return self._run(context, state, deadlines)

    def _register_key(self, hook: LiangxinHook) -> str | None:
        try:
            return hook.settings.api_key
        except Exception as exc:
            self.log.warning("Connection %r could not be resolved: %s", self.liangxin_conn_id, exc)
            return None

    def _run(self, context: Context, state: Any, deadlines: Deadlines) -> Any:
        """Create waves and wait (deferred, or polling here) until every item ended or a deadline passed."""
        hook = self.hook
        last_progress = 0.0
        try:
            while True:
                reason = deadlines.passed(time.time())
                if reason:
                    self.log.warning("The batch's wait ended: %s", reason)
                    state.timed_out(list(state.in_flight()))
                    return self._finish(context, state, hook)
                self._create_wave(context, state, deadlines)
                self._store_new(context, state, hook)
                if time.monotonic() - last_progress >= PROGRESS_EVERY or self.deferrable:
                    last_progress = time.monotonic()
                    self._log_progress(state)
                in_flight = state.in_flight()
                if not in_flight:
                    return self._finish(context, state, hook)
                if self.deferrable:
                    self._defer(context, state, in_flight, deadlines)
                time.sleep(deadlines.sleep_for(time.time(), self.poll_interval))
                self._poll_round(context, state, hook, deadlines)
        finally:
            hook.close()

    # ------------------------------------------------------------------------------------------ creating

    def _create_wave(self, context: Context, state: Any, deadlines: Deadlines) -> None:
        """Fill the free slots with new LiangXin tasks, paced like TCP: a 429 halves the number of createTask
        requests in flight (then it grows back by one per success) and puts the item back, to be sent again once
        its Retry-After (else a backoff) has passed; a 429 while only one request was allowed pauses all creation
        for that long (LiangXin is saturated). A connect error (nothing reached LiangXin) pauses all creation
        with a backoff. Neither fails the item. Any other answer is final for the item in this try: a createTask
        that may have reached LiangXin is never sent again (it could pay twice)."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        from airflow_provider_liangxin._api import (
            LiangxinAuthError,
            LiangxinConfigError,
            LiangxinConnectError,
            LiangxinError,
            LiangxinForbiddenError,
            LiangxinRateLimitError,
            RetryPolicy,
        )

        slots = self.max_in_flight - len(state.in_flight())
        todo = collections.deque(state.pending()[: max(0, slots)])
        if not todo:
            return
        # One attempt per request: the pacing below is the batch's retry (a hook retry would sleep per thread).
        creator = LiangxinHook(self.liangxin_conn_id, timeout=self.request_timeout, retry={"max_attempts": 1})
        policy = RetryPolicy.from_kwargs(self.retry)
        window = min(CREATE_CONCURRENCY, len(todo))
        pause_until = 0.0
        delayed: list[tuple[float, int]] = []  # (monotonic time it may be sent again, item index), a heap
        streak = throttled = 0
        budget = ErrorBudget(self.max_error_duration)
        fatal: BaseException | None = None
        futures: dict[Any, int] = {}
        self.log.info(
            "Creating %d LiangXin tasks (%d in flight, max_in_flight=%d)",
            len(todo),
            len(state.in_flight()),
            self.max_in_flight,
        )
        try:
            with ThreadPoolExecutor(max_workers=CREATE_CONCURRENCY, thread_name_prefix="liangxin-create") as pool:
                while todo or futures or delayed:
                    now = time.monotonic()
                    while delayed and delayed[0][0] <= now:
                        todo.appendleft(heapq.heappop(delayed)[1])
                    if fatal is None and deadlines.passed(time.time()):
                        self.log.warning(
                            "Deadline passed while creating: %d items not created", len(todo) + len(delayed)
                        )
                        todo.clear()
                        delayed.clear()
                    while todo and len(futures) < window and now >= pause_until:
                        index = todo.popleft()
                        item = state.items[index]
                        future = pool.submit(creator.create_task, item.model, item.input, log_created=False)
                        futures[future] = index
                    wake = [t for t in ((pause_until if todo else 0.0), delayed[0][0] if delayed else 0.0) if t > now]
                    if not futures:
                        time.sleep(max(0.005, min(wake) - now) if wake else 0.005)
                        continue
                    done, _ = wait(futures, timeout=min(wake) - now if wake else None, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = futures.pop(future)
                        try:
                            task_id = future.result()
                        except LiangxinRateLimitError as exc:
                            # Surely not created: sent again after its Retry-After, with fewer requests at once.
                            streak += 1
                            throttled += 1
                            hint = exc.retry_after
                            delay = hint if isinstance(hint, int | float) else policy.backoff(streak)
                            heapq.heappush(delayed, (time.monotonic() + delay, index))
                            if window == 1:
                                pause_until = max(pause_until, time.monotonic() + delay)
                            window = max(1, window // 2)
                            if streak == 1 or streak % 20 == 0:
                                self.log.warning(
                                    "createTask: %s; creating slower (%d at a time, item retried in %.1f s)",
                                    exc,
                                    window,
                                    delay,
                                )
                        except LiangxinConnectError as exc:
                            streak += 1
                            throttled += 1
                            todo.appendleft(index)
                            window = max(1, window // 2)
                            delay = policy.backoff(streak)
                            pause_until = max(pause_until, time.monotonic() + delay)
                            if budget.failed(time.time()):
                                fatal = wait_error("createTask", f"{budget.describe(time.time())}; last error: {exc}")
                                todo.clear()
                                delayed.clear()
                            elif streak == 1 or streak % 20 == 0:
                                self.log.warning("createTask: %s; pausing creation for %.1f s", exc, delay)
                        except (LiangxinAuthError, LiangxinForbiddenError, LiangxinConfigError) as exc:
                            # Every other item would get the same answer: stop, keep what was created.
                            fatal = fatal or exc
                            todo.clear()
                            delayed.clear()
                        except LiangxinError as exc:
                            code = str(exc.status_code or exc.api_code or "error")
                            state.create_failed(index, code, f"createTask: {exc}")
                            self.log.warning("item %d: createTask failed: %s", index, exc)
                        except Exception as exc:
                            state.create_failed(index, "error", f"createTask: {type(exc).__name__}: {exc}")
                            self.log.warning("item %d: createTask failed: %s", index, exc)
                        else:
                            state.created(index, task_id)
                            streak = 0
                            budget.succeeded()
                            window = min(CREATE_CONCURRENCY, window + 1)
                    self._save(context, state, eager=True)  # every taskId persisted as soon as it exists
        finally:
            creator.close()
            self._save(context, state)
        if throttled:
            self.log.info("createTask was throttled %d times (429 or unreachable) in this wave", throttled)
        if fatal is not None:
            raise fatal

    def _defer(self, context: Context, state: Any, in_flight: Mapping[int, str], deadlines: Deadlines) -> None:
        from airflow_provider_liangxin.triggers.liangxin import LiangxinBatchTrigger

        pending = len(state.pending())
        # Wake up when half the slots are free (or enough for what is left), not once per item.
        resume_after = len(in_flight) if not pending else min(pending, max(1, math.ceil(self.max_in_flight / 2)))
        self.log.info(
            "Deferring: one trigger watches %d LiangXin tasks (poll every %g s); the worker resumes after %d end",
            len(in_flight),
            self.poll_interval,
            resume_after,
        )
        self.defer(
            trigger=LiangxinBatchTrigger(
                task_ids={str(index): task_id for index, task_id in in_flight.items()},
                liangxin_conn_id=self.liangxin_conn_id,
                poll_interval=self.poll_interval,
                resume_after=resume_after,
                deadline=deadlines.wait,
                execution_deadline=deadlines.execution,
                request_timeout=self.request_timeout,
                retry=self.retry,
                max_error_duration=self.max_error_duration,
                settle_seconds=deferral_settle_seconds(),
            ),
            method_name="execute_complete",
            kwargs={
                "deadline": deadlines.wait,
                "execution_deadline": deadlines.execution,
                "carry": self._carry(context, state),
            },
            timeout=deadlines.backstop(self.poll_interval),
        )

    # ------------------------------------------------------------------------------------------ waiting

    def _poll_round(self, context: Context, state: Any, hook: LiangxinHook, deadlines: Deadlines) -> None:
        """deferrable=False: one recordInfo per in-flight task (threads), applied like a trigger event."""
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_liangxin._api import LiangxinError
        from airflow_provider_liangxin.batch import compact_record

        in_flight = state.in_flight()
        budget = getattr(self, "_poll_budget", None) or ErrorBudget(self.max_error_duration)
        self._poll_budget = budget

        def poll(task_id: str) -> Any:
            try:
                return hook.get_task(task_id, deadline=deadlines.earliest)
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(max_workers=SYNC_POLL_CONCURRENCY, thread_name_prefix="liangxin-poll") as pool:
            answers = list(zip(in_flight.items(), pool.map(poll, in_flight.values()), strict=True))
        transient = None
        answered = 0
        for (index, task_id), answer in answers:
            if isinstance(answer, TRANSIENT_ERRORS):
                transient = answer
            elif isinstance(answer, LiangxinError):
                final = isinstance(answer, LiangxinTaskNotFoundError)
                state.lost(index, task_id, f"LiangXin task {task_id} cannot be followed: {answer}", final=final)
            elif isinstance(answer, Exception):
                raise answer
            else:
                answered += 1
                if answer.state.is_terminal:
                    state.finished(index, compact_record(answer.to_dict()))
        if transient is not None and not answered:
            now = time.time()
            if budget.failed(now):
                raise wait_error(f"batch of {len(state.items)}", f"{budget.describe(now)}; last error: {transient}")
            self.log.warning("LiangXin batch polls failed (%s): %s", budget.describe(now), transient)
        else:
            budget.succeeded()
        self._save(context, state)

    # ------------------------------------------------------------------------------------------ results

    def _store_new(self, context: Context, state: Any, hook: LiangxinHook) -> None:
        """Download the results of items that succeeded since the last step (before their URLs expire)."""
        if not self.output_path:
            return
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_liangxin.results import store_results

        todo = [i for i, e in sorted(state.entries.items()) if e.state == "success" and e.stored is None]
        if not todo:
            return
        settings = hook.settings
        allow_private = self.allow_private_result_hosts
        errors: dict[int, str] = getattr(self, "_store_errors", {})
        self._store_errors = errors

        def store(index: int) -> list[dict[str, Any]]:
            entry = state.entries[index]
            item = state.items[index]
            record = {
                "task_id": entry.task_id,
                "model": item.model,
                "state": "success",
                "param": {"model": item.model, "input": item.input},
                "result_urls": entry.result_urls,
            }
            return store_results(
                record,
                self.output_path,  # type: ignore[arg-type]
                verify_ssl=settings.verify_ssl,
                timeout=self.download_timeout,
                max_bytes=self.max_download_bytes,
                retry=self.retry,
                allow_private_hosts=settings.allow_private_result_hosts if allow_private is None else allow_private,
                trusted_base_url=settings.base_url,
            )

        def attempt(index: int) -> tuple[int, Any]:
            try:
                return index, store(index)
            except Exception as exc:
                return index, exc

        with ThreadPoolExecutor(max_workers=STORE_CONCURRENCY, thread_name_prefix="liangxin-store") as pool:
            for index, outcome in pool.map(attempt, todo):
                if isinstance(outcome, Exception):
                    errors[index] = f"{type(outcome).__name__}: {outcome}"
                    self.log.warning("item %d: storing results failed: %s", index, outcome)
                else:
                    errors.pop(index, None)
                    state.set_stored(index, outcome)
        self.log.info("Stored the results of %d items at %s", len(todo) - len(errors), self.output_path)
        self._save(context, state)

    def _log_progress(self, state: Any) -> None:
        c = state.counts()
        self.log.info(
            "LiangXin batch: %d items: %d created and running, %d pending, %d succeeded, %d failed",
            c["items"],
            c["running"],
            c["pending"],
            c["success"],
            c["fail"],
        )

    def _finish(self, context: Context, state: Any, hook: LiangxinHook) -> list[dict[str, Any]]:
        self._store_new(context, state, hook)
        self._save(context, state)
        results = state.results(with_stored=bool(self.output_path))
        self._liangxin_items = results  # for get_openlineage_facets_on_complete/_on_failure
        self._log_summary(results)
        failed = [r for r in results if r["state"] != "success"]
        store_errors: dict[int, str] = getattr(self, "_store_errors", {})
        if self.output_asset_ref is not None:
            context["outlet_events"][self.output_asset_ref].extra = {
                "liangxin_task_ids": [r["task_id"] for r in results if r["state"] == "success"],
                "files": [s["path"] for r in results for s in r.get("stored") or []],
            }
        if len(failed) > self.max_failed or store_errors:
            context["ti"].xcom_push(key=XCOM_BATCH_RESULTS, value=results)
            reasons = "; ".join(f"item {r['index']}: {r['fail_code']}: {r['fail_msg']}"[:200] for r in failed[:5])
            if store_errors:
                stored = "; ".join(f"item {i}: {m}"[:200] for i, m in sorted(store_errors.items())[:5])
                raise AirflowException(
                    f"Results of {len(store_errors)} succeeded items could not be stored ({stored}); "
                    "a retry downloads them again without creating new LiangXin tasks"
                )
            raise AirflowException(
                f"{len(failed)} of {len(results)} items failed (max_failed={self.max_failed}): {reasons}"
                f"{' ...' if len(failed) > 5 else ''}. Per-item results are in the {XCOM_BATCH_RESULTS!r} XCom; "
                "a retry re-creates only the failed items"
            )
        return results

    def _log_summary(self, results: list[dict[str, Any]]) -> None:
        by_model: dict[str, list[int]] = {}
        for r in results:
            row = by_model.setdefault(r["model"], [0, 0, 0, 0])
            row[0] += 1
            row[1 if r["state"] == "success" else 2] += 1
            row[3] += len(r.get("stored") or [])
        width = max([5, *(len(m) for m in by_model)])
        lines = [
            f"{'model':<{width}} | items | success | fail | files",
            f"{'-' * width}-+-------+---------+------+------",
        ]
        for model, (n, ok, bad, files) in sorted(by_model.items()):
            lines.append(f"{model:<{width}} | {n:>5} | {ok:>7} | {bad:>4} | {files:>5}")
        failed = [r for r in results if r["state"] != "success"]
        if failed:
            lines.append("")
            lines.append("index | LiangXin task | fail_code | fail_msg")
            for r in failed[:SUMMARY_MAX_FAILURES]:
                lines.append(
                    f"{r['index']:>5} | {r['task_id'] or '-'} | {r['fail_code'] or '-'} | {r['fail_msg'][:100]}"
                )
            if len(failed) > SUMMARY_MAX_FAILURES:
                lines.append(f"... and {len(failed) - SUMMARY_MAX_FAILURES} more (see the return value)")
        ok = len(results) - len(failed)
        self.log.info("LiangXin batch done: %d of %d items succeeded\n%s", ok, len(results), "\n".join(lines))

    # ------------------------------------------------------------------------------------------ lineage

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow_provider_liangxin.lineage import batch_lineage

        return batch_lineage(self.model, self.inputs, include_prompt=self.openlineage_include_prompt)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_liangxin.lineage import batch_lineage

        items = getattr(self, "_liangxin_items", None)
        if items is None:  # an instance that did not run the task: its XCom return_value
            items = task_instance.xcom_pull(task_ids=task_instance.task_id, map_indexes=task_instance.map_index)
        return batch_lineage(self.model, self.inputs, items=items, include_prompt=self.openlineage_include_prompt)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_provider_liangxin.lineage import batch_lineage

        items = getattr(self, "_liangxin_items", None) or []
        return batch_lineage(self.model, self.inputs, items=items, include_prompt=self.openlineage_include_prompt)

    def on_kill(self) -> None:
        self.log.warning(
            "The LiangXin API has no cancel endpoint: tasks of this batch still running may finish (and be "
            "billed); a retry resumes them instead of creating new ones."
        )


#: The name the design documents use.
CreateTaskOperator = LiangxinCreateTaskOperator

__all__ = [
    "XCOM_BATCH_RESULTS",
    "XCOM_FAILURE",
    "XCOM_RESULT_URL",
    "XCOM_TASK_ID",
    "CreateTaskOperator",
    "LiangxinBatchCreateTaskOperator",
    "LiangxinCreateTaskOperator",
    "LiangxinResultLink",
    "check_callback_url",
]
