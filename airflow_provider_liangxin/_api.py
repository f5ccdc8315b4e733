"""The LiangXin Market API wire protocol, with no Airflow in it.

This is the one place that knows the JSON shapes: the request builder and the response parser here serve the
hook's sync (httpx) and async (aiohttp) paths alike, and the simulator builds its answers from the same types.
"""

from __future__ import annotations

import email.utils
import enum
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

CREATE_TASK_PATH = "/api/v1/jobs/createTask"
RECORD_INFO_PATH = "/api/v1/jobs/recordInfo"

#: Excerpts of unexpected bodies are cut to this length so an HTML error page cannot flood a log.
BODY_EXCERPT_CHARS = 300

#: An API answer larger than this is refused unread: real answers are a few KB, and a broken or hostile endpoint
#: must not be able to fill the memory of a triggerer that holds every deferred task of a deployment.
MAX_API_RESPONSE_BYTES = 4 * 1024 * 1024

#: The API's own free text (``msg``, ``error.message``, ``failMsg``) is cut to this many characters before it
#: reaches exceptions, trigger events, XCom or logs.
API_TEXT_MAX_CHARS = 2000

_REQUEST_ID_HEADERS = ("x-request-id", "x-oneapi-request-id", "x-liangxin-request-id")
_REQUEST_ID_IN_MESSAGE = re.compile(r"\(request id: ([^)]+)\)")


class TaskState(enum.StrEnum):
    """Lifecycle of a LiangXin task; anything outside these five values is a protocol error."""

    WAITING = "waiting"
    QUEUING = "queuing"
    GENERATING = "generating"
    SUCCESS = "success"
    FAIL = "fail"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskState.SUCCESS, TaskState.FAIL)

    @property
    def is_success(self) -> bool:
        return self is TaskState.SUCCESS

    @classmethod
    def parse(cls, value: Any) -> TaskState:
        """Parse a wire value; an unknown state must never be mistaken for success, so it raises."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise LiangxinResponseError(
                f"LiangXin returned an unknown task state {value!r}; expected one of {', '.join(s.value for s in cls)}"
            ) from None


# --------------------------------------------------------------------------------------------------- errors


class LiangxinError(Exception):
    """Base of every error the provider raises about the API; carries what a user needs to act on it."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        api_code: Any = None,
        request_id: str | None = None,
        body_excerpt: str | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.api_code = api_code
        self.request_id = request_id
        self.body_excerpt = body_excerpt
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}")
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        text = parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"
        if self.body_excerpt:
            text += f"; body: {self.body_excerpt}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        return (_rebuild_error, (type(self), self.message, self.__dict__.copy()))


def _rebuild_error(cls: type[LiangxinError], message: str, state: dict[str, Any]) -> LiangxinError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    err.args = (err._render(),)
    return err


class LiangxinConfigError(LiangxinError, ValueError):
    """The Airflow connection or a hook argument is unusable; raised before any HTTP call."""


class LiangxinResponseError(LiangxinError):
    """The API answered something the protocol does not allow (non-JSON, wrong envelope, unknown state)."""


class LiangxinHTTPError(LiangxinError):
    """An error status from the API."""


class LiangxinBadRequestError(LiangxinHTTPError):
    """400: missing or unsupported model, invalid parameter, or no price configured for the model."""


class LiangxinAuthError(LiangxinHTTPError):
    """401: the API key is missing or invalid."""


class LiangxinForbiddenError(LiangxinHTTPError):
    """403: quota insufficient or access denied."""


class LiangxinTaskNotFoundError(LiangxinHTTPError):
    """404: the taskId is unknown to LiangXin."""


class LiangxinPayloadTooLargeError(LiangxinHTTPError):
    """413: the request body is too large (often base64 reference images)."""


class LiangxinUpstreamValidationError(LiangxinHTTPError):
    """422: the upstream model provider rejected the request."""


class LiangxinRateLimitError(LiangxinHTTPError):
    """429: the caller's group or the upstream is saturated; ``retry_after`` is the server's hint in seconds."""

    retry_after: float | None = None


class LiangxinServerError(LiangxinHTTPError):
    """5xx: an upstream or internal error."""


class LiangxinTransportError(LiangxinError):
    """No complete HTTP answer was obtained; the server may have seen the request."""


class LiangxinConnectError(LiangxinTransportError):
    """The connection could not be opened: the request surely never reached the server."""


class LiangxinTimeoutError(LiangxinTransportError):
    """No complete answer within the whole-request timeout or the caller's deadline (it may have been sent)."""


class LiangxinConnectTimeoutError(LiangxinConnectError, LiangxinTimeoutError):
    """The time ran out while connecting: a timeout to the caller, and still safe to retry (nothing was sent)."""


_STATUS_ERRORS: dict[int, type[LiangxinHTTPError]] = {
    400: LiangxinBadRequestError,
    401: LiangxinAuthError,
    403: LiangxinForbiddenError,
    404: LiangxinTaskNotFoundError,
    413: LiangxinPayloadTooLargeError,
    422: LiangxinUpstreamValidationError,
    429: LiangxinRateLimitError,
}


def error_class_for_status(status: int) -> type[LiangxinHTTPError]:
    if status >= 500:
        return LiangxinServerError
    return _STATUS_ERRORS.get(status, LiangxinHTTPError)


# --------------------------------------------------------------------------------------------- task record


@dataclass(frozen=True)
class TaskRecord:
    """A recordInfo answer, parsed once into typed fields (JSON strings decoded, states checked)."""

    task_id: str
    model: str
    state: TaskState
    param: dict[str, Any] = field(default_factory=dict)
    result_urls: list[str] = field(default_factory=list)
    fail_code: str = ""
    fail_msg: str = ""
    create_time: int | None = None
    update_time: int | None = None
    complete_time: int | None = None
    cost_time: int | None = None
    progress: int | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> TaskRecord:
        if not isinstance(data, Mapping):
            raise LiangxinResponseError(f"recordInfo data must be an object, got {type(data).__name__}")
        task_id = data.get("taskId")
        if not task_id:
            raise LiangxinResponseError("recordInfo data has no taskId", body_excerpt=_excerpt(data))
        state = TaskState.parse(data.get("state"))
        fail_code = data.get("failCode")
        return cls(
            task_id=str(task_id),
            model=cap_text(str(data.get("model") or "")),
            state=state,
            param=_json_object_field(data.get("param"), "param"),
            result_urls=_result_urls(data.get("resultJson"), state),
            fail_code="" if fail_code is None else cap_text(str(fail_code)),
            fail_msg=cap_text(str(data.get("failMsg") or "")),
            create_time=_optional_int(data.get("createTime")),
            update_time=_optional_int(data.get("updateTime")),
            complete_time=_optional_int(data.get("completeTime")),
            cost_time=_optional_int(data.get("costTime")),
            progress=_optional_int(data.get("progress")),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-native dict: the shape of trigger events and of the operator's XCom result.

        ``data:`` URIs in ``param`` (base64 reference images, possibly megabytes) are summarised, so they are not
        copied into the trigger event, XCom and every sidecar.
        """
        return {
            "task_id": self.task_id,
            "model": self.model,
            "state": self.state.value,
            "param": _without_capability(summarize_data_uris(self.param)),
            "result_urls": list(self.result_urls),
            "fail_code": self.fail_code,
            "fail_msg": self.fail_msg,
            "create_time": self.create_time,
            "update_time": self.update_time,
            "complete_time": self.complete_time,
            "cost_time": self.cost_time,
            "progress": self.progress,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        """Inverse of :meth:`to_dict` (trigger events come back to the worker in that shape)."""
        return cls(
            task_id=str(data["task_id"]),
            model=str(data.get("model") or ""),
            state=TaskState.parse(data["state"]),
            param=dict(data.get("param") or {}),
            result_urls=list(data.get("result_urls") or []),
            fail_code=cap_text(str(data.get("fail_code") or "")),
            fail_msg=cap_text(str(data.get("fail_msg") or "")),
            create_time=data.get("create_time"),
            update_time=data.get("update_time"),
            complete_time=data.get("complete_time"),
            cost_time=data.get("cost_time"),
            progress=data.get("progress"),
        )


def parse_record_info(data: Any, task_id: str) -> TaskRecord:
    """The record of ``task_id``, or a :class:`LiangxinResponseError` when the answer is another task's.

    A cache or proxy that ignores the query string would otherwise hand every task the same record (and image).
    """
    record = TaskRecord.from_api(data)
    asked = task_id.strip()
    if record.task_id != asked:
        raise LiangxinResponseError(
            f"LiangXin recordInfo answered for task {_excerpt(record.task_id)!r} when {asked!r} was asked "
            "(a cache or proxy ignoring the query string?); the record is not used"
        )
    return record


def without_secret(value: Any, secret: str | None) -> Any:
    """``value`` (an event, or any JSON-native data) with every occurrence of ``secret`` replaced by ``***``.

    Registering the key with Airflow's secrets masker is not enough: with the LocalExecutor, a task's log lines
    (the exception that failed it included) are also written to the scheduler's stdout, which Airflow 3 does not
    mask. A hostile server echoing our Authorization header must not get the key that far.
    """
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, Mapping):
        return {k: without_secret(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secret(v, secret) for v in value]
    return value


def scrub_error(exc: LiangxinError, secret: str | None) -> LiangxinError:
    """``exc`` with ``secret`` replaced by ``***`` in its message, every text it carries and the exceptions it
    chains (in place).

    The hook applies it to each failed attempt before tenacity logs it or a task raises it: an error text is
    built from what the server sent, and a hostile server can echo our Authorization header into it (or into a
    malformed status line that the HTTP library quotes in the chained error).
    """
    if not secret:
        return exc
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        for name, value in list(vars(link).items()):
            if isinstance(value, str) and secret in value:
                setattr(link, name, value.replace(secret, "***"))
        link.args = tuple(without_secret(arg, secret) for arg in link.args)
        link = link.__cause__ or link.__context__
    return exc


def cap_text(text: str, limit: int = API_TEXT_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the cut marked; idempotent, so capping twice changes nothing."""
    if len(text) <= limit:
        return text
    marker = f"…[cut: {len(text)} chars in all]"
    return text[: max(0, limit - len(marker))] + marker


#: ``data:`` URIs longer than this are replaced by a summary in JSON-native records.
DATA_URI_KEEP_CHARS = 128


def summarize_data_uris(value: Any) -> Any:
    """A copy of ``value`` with long ``data:`` URIs replaced by ``data:<type>;…(<n> chars)``."""
    if isinstance(value, str):
        if value.startswith("data:") and len(value) > DATA_URI_KEEP_CHARS:
            return f"{value.split(',', 1)[0]},…({len(value)} chars)"
        return value
    if isinstance(value, Mapping):
        return {k: summarize_data_uris(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [summarize_data_uris(v) for v in value]
    return value


def _without_capability(param: Any) -> Any:
    """LiangXin echoes the request, callBackUrl included: its token (valid while the try waits) stays out of
    events, XCom and sidecars."""
    if isinstance(param, dict) and isinstance(param.get("callBackUrl"), str):
        from airflow_provider_liangxin.callbacks import redact_capability

        return {**param, "callBackUrl": redact_capability(param["callBackUrl"])}
    return param


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _json_object_field(raw: Any, name: str) -> dict[str, Any]:
    if raw in (None, ""):
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        raise LiangxinResponseError(f"recordInfo field {name} is not valid JSON", body_excerpt=_excerpt(raw)) from None
    if not isinstance(value, dict):
        raise LiangxinResponseError(f"recordInfo field {name} is not a JSON object", body_excerpt=_excerpt(raw))
    return value


def _result_urls(raw: Any, state: TaskState) -> list[str]:
    parsed = _json_object_field(raw, "resultJson")
    urls = parsed.get("resultUrls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise LiangxinResponseError("resultJson.resultUrls is not a list of strings", body_excerpt=_excerpt(raw))
    if state.is_success and not urls:
        raise LiangxinResponseError("task succeeded but resultJson has no resultUrls", body_excerpt=_excerpt(raw))
    return urls


# ------------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class ApiRequest:
    """A transport-neutral request: what both the httpx and the aiohttp paths send."""

    method: str
    path: str
    params: dict[str, str] | None = None
    json_body: dict[str, Any] | None = None
    #: Safe to resend after an ambiguous failure (a timeout after sending, a 5xx)?
    idempotent: bool = True

    @property
    def operation(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def build_create_task(model: str, input: Mapping[str, Any], callback_url: str | None = None) -> ApiRequest:
    if not isinstance(model, str) or not model.strip():
        raise LiangxinConfigError("model must be a non-empty string")
    if not isinstance(input, Mapping):
        raise LiangxinConfigError(f"input must be a mapping, got {type(input).__name__}")
    body: dict[str, Any] = {"model": model.strip(), "input": dict(input)}
    if callback_url:
        body["callBackUrl"] = callback_url
    return ApiRequest("POST", CREATE_TASK_PATH, json_body=body, idempotent=False)


def build_record_info(task_id: str) -> ApiRequest:
    if not isinstance(task_id, str) or not task_id.strip():
        raise LiangxinConfigError("task_id must be a non-empty string")
    return ApiRequest("GET", RECORD_INFO_PATH, params={"taskId": task_id.strip()})


# ----------------------------------------------------------------------------------------------- responses


def _excerpt(raw: Any) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    elif not isinstance(raw, str):
        raw = json.dumps(raw, default=str)
    text = " ".join(raw.split())
    return text if len(text) <= BODY_EXCERPT_CHARS else text[:BODY_EXCERPT_CHARS] + "…"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent/invalid.

    ``nan``, ``inf`` and negative seconds are invalid (None: the caller's backoff applies), never a zero-second
    wait that would turn the retries into a hot loop.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _request_id(headers: Mapping[str, str], message: str) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in _REQUEST_ID_HEADERS:
        if lowered.get(name):
            return lowered[name]
    found = _REQUEST_ID_IN_MESSAGE.search(message or "")
    return found.group(1) if found else None


def _error_message(body: Any) -> tuple[str | None, Any]:
    """Read (message, api code) from either documented error shape."""
    if not isinstance(body, Mapping):
        return None, None
    gateway = body.get("error")
    if isinstance(gateway, Mapping):
        text = str(gateway.get("message") or "")
        return (cap_text(text) or None), _api_code(gateway.get("code") or gateway.get("type"))
    message = body.get("msg", body.get("message"))
    return (cap_text(str(message)) if message not in (None, "") else None), _api_code(body.get("code"))


def _api_code(code: Any) -> Any:
    """Numbers stay numbers (callers compare them); anything else is the API's text, so it is capped too."""
    if code is None or isinstance(code, int | float):
        return code
    return cap_text(str(code))


def parse_response(request: ApiRequest, status: int, headers: Mapping[str, str], content: bytes) -> Any:
    """Turn a raw HTTP answer into ``data`` or a typed :class:`LiangxinError`.

    Checks the HTTP status first, then the ``{code,msg,data}`` envelope (a 200 whose body code is not 200 is
    an error too, with the body's code deciding the error class).
    """
    try:
        body: Any = json.loads(content) if content else None
    except ValueError:
        body = None
    message, api_code = _error_message(body)
    request_id = _request_id(headers, message or "")
    what = f"LiangXin {request.operation}"

    if 300 <= status < 400:
        # Neither path follows redirects: a createTask re-sent elsewhere could pay twice, and the key must not
        # travel to another origin.
        location = headers.get("Location") or headers.get("location")
        raise LiangxinHTTPError(
            f"{what} answered a redirect{' to ' + _excerpt(location) if location else ''}; redirects are not "
            "followed: set the connection's host to the API's final base URL",
            status_code=status,
            request_id=request_id,
        )
    if status >= 300:
        cls = error_class_for_status(status)
        err = cls(
            f"{what} failed: {message or _reason(status)}",
            status_code=status,
            api_code=api_code,
            request_id=request_id,
            body_excerpt=None if message else (_excerpt(content) or "<empty>"),
        )
        if isinstance(err, LiangxinRateLimitError):
            err.retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        raise err

    if not isinstance(body, Mapping):
        raise LiangxinResponseError(
            f"{what} answered HTTP {status} with a body that is not a JSON object",
            status_code=status,
            request_id=request_id,
            body_excerpt=_excerpt(content) or "<empty>",
        )
    code = _api_code(body.get("code"))
    if code is not None and str(code) != "200":
        try:
            cls = error_class_for_status(int(code))
        except (TypeError, ValueError, OverflowError):
            cls = LiangxinHTTPError
        raise cls(
            f"{what} failed: {message or 'body code ' + str(code)}",
            status_code=status,
            api_code=code,
            request_id=request_id,
        )
    if "data" not in body:
        raise LiangxinResponseError(
            f"{what} answered without a data field", status_code=status, body_excerpt=_excerpt(content)
        )
    return body["data"]


def parse_create_task(data: Any) -> str:
    task_id = data.get("taskId") if isinstance(data, Mapping) else None
    if not isinstance(task_id, str) or not task_id:
        raise LiangxinResponseError("createTask answered without data.taskId", body_excerpt=_excerpt(data))
    return task_id


def _reason(status: int) -> str:
    return {
        400: "bad request",
        401: "API key missing or invalid",
        403: "quota insufficient or access denied",
        404: "not found",
        413: "request body too large",
        422: "upstream validation rejected the request",
        429: "rate limited",
    }.get(status, "server error" if status >= 500 else "unexpected status")


# ------------------------------------------------------------------------------------------------- retries


def finite_number(value: Any, name: str, *, minimum: float = 0.0, inclusive: bool = True) -> float:
    """``value`` as a float, or a :class:`LiangxinConfigError` naming ``name``.

    ``nan`` and ``inf`` pass every ``> 0`` check (a NaN poll interval busy-polls, an infinite timeout crashes
    later), and ``True`` is an ``int`` to Python: all three are refused here, where the DAG is parsed.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LiangxinConfigError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        raise LiangxinConfigError(f"{name} must be {'>=' if inclusive else '>'} {minimum:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """JSON-native retry settings; tenacity objects are built from these where they are used.

    ``max_attempts`` counts the first try. ``max_wait_total`` bounds the sum of sleeps, Retry-After included:
    a hint that would overrun it ends the retries at once rather than sleeping past the budget. The field names
    below are the accepted ``retry`` keys: validation, parsing and :meth:`to_dict` all read them from here.
    """

    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    max_wait_total: float = 120.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise LiangxinConfigError(f"{spec.name} must be an integer >= 1, got {value!r}")
            else:
                finite_number(value, spec.name)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(spec.name for spec in fields(cls))

    @classmethod
    def from_kwargs(cls, retry: Mapping[str, Any] | None) -> RetryPolicy:
        if retry is None:
            return cls()
        if isinstance(retry, RetryPolicy):
            return retry
        if not isinstance(retry, Mapping):
            raise LiangxinConfigError(f"retry settings must be a dict, got {type(retry).__name__}")
        unknown = set(retry) - set(cls.field_names())
        if unknown:
            raise LiangxinConfigError(
                f"unknown retry settings: {', '.join(sorted(map(str, unknown)))}; "
                f"allowed: {', '.join(cls.field_names())}"
            )
        return cls(**retry)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for the given (1-based) failed attempt."""
        ceiling = min(self.backoff_max, self.backoff_initial * (2 ** min(attempt - 1, 64)))
        return random.uniform(0, ceiling)

    def tenacity_kwargs(
        self,
        retryable: Callable[[BaseException], bool],
        what: str,
        log: logging.Logger | Any,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying``/``AsyncRetrying`` that apply this policy.

        A server's ``retry_after`` hint (an attribute of the raised error) wins over the backoff; the policy's
        attempt cap and total-wait budget both stop the retries, and so does the caller's ``deadline`` (epoch
        seconds): no sleep is started that would end past it.
        """
        import tenacity

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hint = getattr(exc, "retry_after", None)
            if isinstance(hint, int | float) and math.isfinite(hint) and hint >= 0:
                return float(hint)
            return self.backoff(state.attempt_number)

        def stop(state: tenacity.RetryCallState) -> bool:
            return (
                state.attempt_number >= self.max_attempts
                or state.idle_for + state.upcoming_sleep > self.max_wait_total
                or (deadline is not None and time.time() + state.upcoming_sleep >= deadline)
            )

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s attempt %d/%d failed (%s); retrying in %.1f s",
                what,
                state.attempt_number,
                self.max_attempts,
                exc,
                state.upcoming_sleep,
            )

        return {
            "retry": tenacity.retry_if_exception(retryable),
            "wait": wait,
            "stop": stop,
            "before_sleep": before_sleep,
            "reraise": True,
        }


# ------------------------------------------------------------------------------------- transport failures


def transport_error(
    request: ApiRequest,
    kind: type[LiangxinError],
    exc: BaseException,
    *,
    base_url: str,
    budget: float,
    conn_id: str,
) -> LiangxinError:
    """The one wording of a transport failure, whichever HTTP library (httpx, aiohttp) saw it.

    ``kind`` is what the library's exception means (each transport keeps a table of its exception classes);
    ``budget`` is the whole-request time the request had. Library messages are quoted only for generic
    transport errors: a request that could not be built may quote its Authorization header.
    """
    what = f"LiangXin {request.operation}"
    name = type(exc).__name__
    if issubclass(kind, LiangxinConnectTimeoutError):
        return kind(f"{what}: cannot connect to {base_url} within {round(budget, 3):g} s ({name})")
    if issubclass(kind, LiangxinConnectError):
        return kind(f"{what}: cannot connect to {base_url}: {name}")
    if issubclass(kind, LiangxinTimeoutError):
        return kind(f"{what}: no answer within {round(budget, 3):g} s ({name})")
    if issubclass(kind, LiangxinConfigError):
        return kind(
            f"{what}: the request could not be built ({name}); check the API key and host of connection {conn_id!r}"
        )
    if issubclass(kind, LiangxinResponseError):
        return kind(f"{what}: the answer could not be decoded ({name}: {_excerpt(str(exc))})")
    return LiangxinTransportError(f"{what}: {name}: {_excerpt(str(exc))}")


def too_large_error(request: ApiRequest, status: int, declared: int | None = None) -> LiangxinResponseError:
    size = f"{declared} bytes declared" if declared is not None else "more was sent"
    return LiangxinResponseError(
        f"LiangXin {request.operation} answered more than {MAX_API_RESPONSE_BYTES} bytes ({size}); "
        "the answer was not read",
        status_code=status,
    )


def is_retryable(request: ApiRequest, exc: BaseException) -> bool:
    """May this failure be retried without risking a second paid task?

    Reads are retried on 429, 5xx, connect errors and timeouts. createTask is retried only where the server
    surely did not create a task: the connection never opened, or it answered 429 before doing anything.
    """
    if isinstance(exc, LiangxinRateLimitError | LiangxinConnectError):
        return True
    if not request.idempotent:
        return False
    return isinstance(exc, LiangxinServerError | LiangxinTimeoutError | LiangxinTransportError)
