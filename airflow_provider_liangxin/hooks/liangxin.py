"""LiangxinHook: an Airflow connection turned into configured LiangXin clients, sync and async.

The sync path (workers) uses httpx. The async path (the triggerer, one event loop shared by every deferred task
of a deployment) uses one aiohttp session per (event loop, TLS setting, API origin), shared by every hook on that
loop: measured on a 2-core machine, a default ``httpx.AsyncClient`` costs ~40 ms CPU to create and 5-15 ms CPU per
request under 500-way concurrency, against ~0.3 ms for a shared aiohttp session (see ``benchmarks/``).
Both paths send what :mod:`airflow_provider_liangxin._api` builds and read what it parses.

aiohttp is imported on the first async use only: DAG files import the operator (and so this module) while being
parsed, and only the triggerer needs aiohttp (~70 ms of import time).

Every request has a whole-request deadline (the connection's ``timeout``, or the caller's ``deadline`` if earlier):
connect, send and the whole answer must fit in it, so a server trickling a byte a second cannot hold a worker or
the triggerer. Answers are read up to :data:`~airflow_provider_liangxin._api.MAX_API_RESPONSE_BYTES` only.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import logging
import platform
import re
import ssl
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpcore
import httpx
import tenacity
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_provider_liangxin import __version__
from airflow_provider_liangxin._api import (
    MAX_API_RESPONSE_BYTES,
    ApiRequest,
    LiangxinAuthError,
    LiangxinConfigError,
    LiangxinConnectError,
    LiangxinConnectTimeoutError,
    LiangxinError,
    LiangxinResponseError,
    LiangxinTaskNotFoundError,
    LiangxinTimeoutError,
    LiangxinTransportError,
    RetryPolicy,
    TaskRecord,
    build_create_task,
    build_record_info,
    finite_number,
    is_retryable,
    parse_create_task,
    parse_record_info,
    parse_response,
    scrub_error,
    too_large_error,
    transport_error,
    without_secret,
)

if TYPE_CHECKING:
    import aiohttp

DEFAULT_TIMEOUT = 30.0
#: Connections kept open per shared async session; bounded so the pool never thrashes a small server.
ASYNC_CONNECTION_LIMIT = 100

log = logging.getLogger(__name__)


@functools.cache
def user_agent() -> str:
    """Computed once per process: looking versions up per request (as some ASF hooks do) is wasted work."""
    try:
        from airflow import __version__ as airflow_version
    except ImportError:  # pragma: no cover - Airflow is a dependency
        airflow_version = "unknown"
    return f"airflow-provider-liangxin/{__version__} airflow/{airflow_version} python/{platform.python_version()}"


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process for the sync path: building one loads the CA bundle (~40 ms CPU,
    ~0.8 MB), so no client may build its own. httpx's builder honours ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (else
    certifi); the async path uses aiohttp's context, built at its import, which honours them too."""
    return httpx.create_ssl_context()


@functools.cache
def _aiohttp() -> Any:
    """aiohttp, imported once, on the first async use (never while a DAG file is parsed)."""
    import aiohttp

    return aiohttp


# ------------------------------------------------------------------------------------------ the connection


@dataclass(frozen=True)
class ConnectionSettings:
    """What the hook needs from an Airflow connection. The key is kept out of ``repr``."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    timeout: float
    verify_ssl: bool
    #: Result downloads may go to loopback/private hosts (a private object store); see results.store_results.
    allow_private_result_hosts: bool = False

    @classmethod
    def from_connection(
        cls, conn: Any, extras: Mapping[str, Any], timeout_override: float | None
    ) -> ConnectionSettings:
        conn_id = conn.conn_id
        base_url = _base_url(conn, conn_id)
        api_key = (conn.password or "").strip()
        if not api_key:
            raise LiangxinConfigError(f"Airflow connection {conn_id!r} has no password: set it to the API key")
        if not _KEY.fullmatch(api_key):
            # Never echo it: a key with a line break would otherwise surface (unmasked) in an HTTP library error.
            raise LiangxinConfigError(
                f"Airflow connection {conn_id!r}: the API key contains spaces, line breaks or non-ASCII characters; "
                "paste it again as one line"
            )
        timeout = timeout_override if timeout_override is not None else extras.get("timeout")
        return cls(
            conn_id=conn_id,
            base_url=base_url,
            api_key=api_key,
            timeout=_as_timeout(timeout, conn_id),
            verify_ssl=_as_bool(extras.get("verify_ssl"), "verify_ssl", conn_id, default=True),
            allow_private_result_hosts=_as_bool(
                extras.get("allow_private_result_hosts"), "allow_private_result_hosts", conn_id, default=False
            ),
        )

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent(),
        }

    @property
    def origin(self) -> str:
        """scheme://host:port of the API: the unit the async session pool is keyed by."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}".lower()


_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Visible ASCII only: a space, a line break or a non-ASCII character in a key is a paste accident.
_KEY = re.compile(r"[\x21-\x7e]+")
#: Host names as DNS and URLs allow them (IP literals are checked with ipaddress).
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")


def _base_url(conn: Any, conn_id: str) -> str:
    """The API base URL from the connection's host (+ schema, port), or a LiangxinConfigError saying why not.

    Raised before any request, so a mistyped host fails once instead of being retried as a network error.
    A host that carries ``user:password@`` is refused without being echoed: the password would otherwise reach
    error messages and the XCom'd task URL, and LiangXin authenticates with the API key alone.
    """
    host = (conn.host or "").strip()
    if not host:
        raise LiangxinConfigError(
            f"Airflow connection {conn_id!r} has no host: set it to the LiangXin API base URL "
            "(e.g. https://api.example.com or http://127.0.0.1:8765 for the simulator)"
        )
    if "://" not in host:
        schema = (conn.schema or "").lower()
        host = f"{schema if schema in ('http', 'https') else 'https'}://{host}"
    try:
        parts = urlsplit(host)
        has_userinfo = "@" in parts.netloc
    except ValueError:
        parts, has_userinfo = None, "@" in host
    if has_userinfo:
        raise LiangxinConfigError(
            f"Airflow connection {conn_id!r}: the host contains a user name or password (user:password@...); "
            "remove it: LiangXin takes only the API key, in the connection's password field"
        )
    bad = f"Airflow connection {conn_id!r}: host {host[:200]!r}"
    if parts is None:
        raise LiangxinConfigError(f"{bad} is not a valid URL")
    if parts.scheme.lower() not in ("http", "https"):
        raise LiangxinConfigError(f"{bad} has an unsupported scheme {parts.scheme!r}; use http or https")
    if parts.query or parts.fragment:
        raise LiangxinConfigError(f"{bad} must not contain a ?query or #fragment")
    try:
        url_port = parts.port
    except ValueError:
        raise LiangxinConfigError(f"{bad} has an invalid port (use 1-65535)") from None
    if url_port == 0:
        raise LiangxinConfigError(f"{bad} has an invalid port (use 1-65535)")
    if not _valid_hostname(parts.hostname or ""):
        raise LiangxinConfigError(f"{bad} has no valid host name")
    port = conn.port or None  # the UI of Airflow 3.3.2 may send 0 for an empty port: "no port"
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port) or None
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise LiangxinConfigError(f"Airflow connection {conn_id!r}: port {port!r} is invalid (use 1-65535)")
    if port and url_port is None and port != _DEFAULT_PORTS[parts.scheme.lower()]:
        parts = parts._replace(netloc=f"{parts.netloc}:{port}")
    base_url = urlunsplit(parts).rstrip("/")
    try:
        httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise LiangxinConfigError(f"{bad} is not a valid URL ({exc})") from None
    return base_url


def _valid_hostname(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return len(name) <= 253 and bool(_HOSTNAME.fullmatch(name.lower()))


def _as_timeout(value: Any, conn_id: str) -> float:
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise LiangxinConfigError(f"connection {conn_id!r}: timeout must be a number, got {value!r}") from None
    return finite_number(value, f"connection {conn_id!r}: timeout", inclusive=False)


def _as_bool(value: Any, name: str, conn_id: str, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise LiangxinConfigError(f"connection {conn_id!r}: {name} must be a boolean, got {value!r}")


# ------------------------------------------------------------------- the sync path's whole-request deadline

#: ``time.monotonic()`` by which the current sync request must be complete; None outside a hook request.
_REQUEST_ENDS: contextvars.ContextVar[float | None] = contextvars.ContextVar("liangxin_request_ends", default=None)


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """A socket operation's timeout, shortened to what is left of the whole-request deadline."""
    ends = _REQUEST_ENDS.get()
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise expired("the whole-request deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every read and write ends by the request's deadline.

    httpx's timeouts apply per socket operation: a server sending a byte just inside each read timeout would hold
    the request forever. Bounding each operation by the time left bounds the whole request.
    """

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _bound_every_transport(client: httpx.Client) -> None:
    """Put the deadline backend under every connection pool of ``client`` (the direct one and env proxies').

    httpx takes no network backend, so this sets httpcore's pool attribute; tests/hooks prove it takes effect
    (a trickling server) for direct and proxied requests, so an httpx/httpcore change cannot go unnoticed.
    """
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            log.debug("LiangXin: cannot bound socket operations of %r; per-chunk deadline checks only", transport)
        elif not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]


def _content_length(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


#: (library exception classes, what they mean), checked in order; the wording is _api.transport_error's.
_ErrorTable = tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], type[LiangxinError]], ...]

#: How httpx's exceptions read; the aiohttp twin is _aiohttp_errors (built on first async use).
_HTTPX_ERRORS: _ErrorTable = (
    ((httpx.ConnectTimeout, httpx.PoolTimeout), LiangxinConnectTimeoutError),
    (httpx.ConnectError, LiangxinConnectError),
    (httpx.TimeoutException, LiangxinTimeoutError),
    (httpx.LocalProtocolError, LiangxinConfigError),
    (httpx.DecodingError, LiangxinResponseError),
    (httpx.HTTPError, LiangxinTransportError),
)


@functools.cache
def _aiohttp_errors() -> _ErrorTable:
    aiohttp = _aiohttp()
    return (
        # aiohttp reports bad gzip as a ClientPayloadError caused by this (a truncated body is one too).
        (aiohttp.http_exceptions.ContentEncodingError, LiangxinResponseError),
        (aiohttp.ConnectionTimeoutError, LiangxinConnectTimeoutError),
        (aiohttp.ClientConnectorError, LiangxinConnectError),
        ((TimeoutError, aiohttp.ServerTimeoutError), LiangxinTimeoutError),
        (aiohttp.InvalidURL, LiangxinConfigError),
        (aiohttp.ClientError, LiangxinTransportError),
    )


def _error_kind(exc: BaseException, table: _ErrorTable) -> type[LiangxinError] | None:
    cause = exc.__cause__
    for classes, kind in table:
        if isinstance(exc, classes) or (kind is LiangxinResponseError and isinstance(cause, classes)):
            return kind
    return None


# ----------------------------------------------------------------------------- the shared async session pool


class _SessionPool:
    """aiohttp sessions shared per (event loop, TLS setting, API origin), reference-counted by open hooks.

    One session (and connection limit) per origin, so a dead or slow host holding its connections cannot make
    a healthy host's requests wait for a free connection. A session lives while at least one hook on its loop
    holds it and is closed by the last one out, so no session outlives its users nor is bound to a dead loop
    (the dict is keyed weakly by the loop).
    """

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[bool, str], tuple[aiohttp.ClientSession, int]]
        ] = weakref.WeakKeyDictionary()

    def acquire(self, verify_ssl: bool, origin: str = "") -> aiohttp.ClientSession:
        per_loop = self._entries.setdefault(asyncio.get_running_loop(), {})
        key = (verify_ssl, origin)
        session, users = per_loop.get(key, (None, 0))
        if session is None or session.closed:
            aiohttp = _aiohttp()
            # ssl=True selects aiohttp's default verifying context, built once when aiohttp is imported: building
            # our own here would cost ~40 ms of CPU inside the triggerer's event loop on first use.
            connector = aiohttp.TCPConnector(limit=ASYNC_CONNECTION_LIMIT, ssl=verify_ssl, enable_cleanup_closed=False)
            # No trust_env: it re-reads the proxy environment and ~/.netrc in two executor hops on *every* request
            # (measured: 0.29 -> 0.66 ms CPU per poll), and a ~/.netrc entry for the API host breaks every request
            # ("Cannot combine AUTHORIZATION header"). Each hook resolves its proxy once instead (env_proxy).
            session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
            users = 0
        per_loop[key] = (session, users + 1)
        return session

    async def release(self, verify_ssl: bool, origin: str = "") -> None:
        per_loop = self._entries.get(asyncio.get_running_loop(), {})
        key = (verify_ssl, origin)
        session, users = per_loop.get(key, (None, 0))
        if session is None:
            return
        if users <= 1:
            del per_loop[key]
            await session.close()
        else:
            per_loop[key] = (session, users - 1)

    def users(self, verify_ssl: bool, origin: str | None = None) -> int:
        """Open hooks holding the current loop's sessions, of one origin or all (for tests and benchmarks)."""
        per_loop = self._entries.get(asyncio.get_running_loop(), {})
        return sum(
            users for (tls, host), (_, users) in per_loop.items() if tls == verify_ssl and origin in (None, host)
        )


SESSION_POOL = _SessionPool()


def env_proxy(base_url: str) -> str | None:
    """The proxy the environment (HTTP(S)_PROXY, NO_PROXY) names for ``base_url``, as httpx's sync path uses it."""
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(base_url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


async def _aread_capped(request: ApiRequest, response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, or a LiangxinResponseError as soon as it is known to exceed the cap."""
    declared = response.content_length
    if declared is not None:
        if declared > MAX_API_RESPONSE_BYTES:
            response.close()
            raise too_large_error(request, response.status, declared)
        if "Content-Encoding" not in response.headers:
            return await response.read()  # bounded by the declared length: the fast path of every poll
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():  # decoded: a compressed bomb is capped after decoding
        size += len(chunk)
        if size > MAX_API_RESPONSE_BYTES:
            response.close()
            raise too_large_error(request, response.status)
        chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------------------------------- the hook


class LiangxinHook(BaseHook):
    """Talk to the LiangXin Market API through an Airflow connection of type ``liangxin``.

    :param liangxin_conn_id: Connection whose host is the API base URL and whose password is the API key.
    :param timeout: Whole-request timeout in seconds (connect, send and the whole answer); overrides the
        connection's ``timeout`` extra.
    :param retry: JSON-native retry settings (the fields of :class:`~airflow_provider_liangxin._api.RetryPolicy`:
        ``max_attempts``, ``backoff_initial``, ``backoff_max``, ``max_wait_total``).

    Sync use: ``hook.create_task(...)``, ``hook.get_task(...)``. Async use (triggers)::

        async with LiangxinHook(conn_id) as hook:
            record = await hook.aget_task(task_id)
    """

    conn_name_attr = "liangxin_conn_id"
    default_conn_name = "liangxin_default"
    conn_type = "liangxin"
    hook_name = "LiangXin"

    #: How retries sleep; class attributes so tests can record the waits instead of sleeping.
    _sleep = staticmethod(time.sleep)
    _asleep = staticmethod(asyncio.sleep)

    def __init__(
        self,
        liangxin_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        retry: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.liangxin_conn_id = liangxin_conn_id
        self.timeout = None if timeout is None else finite_number(timeout, "timeout", inclusive=False)
        self.retry_policy = RetryPolicy.from_kwargs(retry)
        self._settings: ConnectionSettings | None = None
        self._client: httpx.Client | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pool_key: tuple[bool, str] | None = None
        self._client_timeout: aiohttp.ClientTimeout | None = None
        self._proxy: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(liangxin_conn_id={self.liangxin_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form for Airflow < 3.2 (3.2+ reads the same from ``get_provider_info``)."""
        from airflow_provider_liangxin import get_provider_info

        behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
        return {
            "hidden_fields": list(behaviour["hidden-fields"]),
            "relabeling": dict(behaviour["relabeling"]),
            "placeholders": dict(behaviour["placeholders"]),
        }

    # ------------------------------------------------------------------------------------------ settings

    @property
    def settings(self) -> ConnectionSettings:
        """Resolved on first use (never in ``__init__``) through the sync connection API; workers only."""
        if self._settings is None:
            conn = self.get_connection(self.liangxin_conn_id)
            settings = ConnectionSettings.from_connection(conn, conn.extra_dejson, self.timeout)
            mask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    async def _asettings(self) -> ConnectionSettings:
        """Async-safe resolution for the triggerer: never the sync ``get_connection`` inside the event loop.

        ``aget_connection`` already registers the password with the secrets masker, so no sync
        ``mask_secret`` (a supervisor round trip) is made here.
        """
        if self._settings is None:
            conn = await get_async_connection(self.liangxin_conn_id, hook=self)
            extras = await get_async_extra_dejson(conn)
            self._settings = ConnectionSettings.from_connection(conn, extras, self.timeout)
        return self._settings

    def _budget(self, request: ApiRequest, deadline: float | None) -> float:
        """Seconds this request may take: the whole-request timeout, or less if the caller's deadline is nearer."""
        timeout = self.settings_or_raise().timeout
        if deadline is None:
            return timeout
        left = deadline - time.time()
        if left <= 0:
            raise LiangxinTimeoutError(f"LiangXin {request.operation}: the caller's deadline has passed")
        return min(timeout, left)

    # ------------------------------------------------------------------------------------------ retries

    def _retry_kwargs(self, request: ApiRequest, deadline: float | None) -> dict[str, Any]:
        return self.retry_policy.tenacity_kwargs(
            lambda exc: is_retryable(request, exc), f"LiangXin {request.operation}", self.log, deadline
        )

    def _raise_transport_error(
        self,
        request: ApiRequest,
        exc: BaseException,
        budget: float,
        table: _ErrorTable,
    ) -> NoReturn:
        kind = _error_kind(exc, table)
        if kind is None:
            raise exc
        settings = self.settings_or_raise()
        err = transport_error(
            request, kind, exc, base_url=settings.base_url, budget=budget, conn_id=self.liangxin_conn_id
        )
        # A request that could not be built may quote its Authorization header: never chain that message.
        raise err from (None if isinstance(err, LiangxinConfigError) else exc)

    # ---------------------------------------------------------------------------------------- sync path

    def get_conn(self) -> httpx.Client:
        """The sync httpx client, created on first use and reused until :meth:`close`."""
        if self._client is None:
            settings = self.settings
            self._client = httpx.Client(
                base_url=settings.base_url,
                headers=settings.headers,
                timeout=settings.timeout,
                verify=shared_ssl_context() if settings.verify_ssl else False,
                follow_redirects=False,
            )
            _bound_every_transport(self._client)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _send(self, request: ApiRequest, deadline: float | None = None) -> Any:
        try:
            return self._scrubbed(self._send_once(request, deadline))
        except LiangxinError as exc:
            scrub_error(exc, self._secret)
            raise

    def _send_once(self, request: ApiRequest, deadline: float | None) -> Any:
        client = self.get_conn()
        budget = self._budget(request, deadline)
        ends = time.monotonic() + budget
        token = _REQUEST_ENDS.set(ends)
        try:
            with client.stream(request.method, request.path, params=request.params, json=request.json_body) as response:
                declared = _content_length(response.headers.get("Content-Length"))
                if declared is not None and declared > MAX_API_RESPONSE_BYTES:
                    raise too_large_error(request, response.status_code, declared)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():  # decoded: a compressed bomb is capped after decoding
                    size += len(chunk)
                    if size > MAX_API_RESPONSE_BYTES:
                        raise too_large_error(request, response.status_code)
                    if time.monotonic() > ends:
                        raise httpx.ReadTimeout("the whole-request deadline has passed")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            self._raise_transport_error(request, exc, budget, _HTTPX_ERRORS)
        finally:
            _REQUEST_ENDS.reset(token)
        return parse_response(request, response.status_code, response.headers, b"".join(chunks))

    def _call(self, request: ApiRequest, deadline: float | None = None) -> Any:
        for attempt in tenacity.Retrying(sleep=self._sleep, **self._retry_kwargs(request, deadline)):
            with attempt:
                return self._send(request, deadline)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def create_task(
        self, model: str, input: Mapping[str, Any], callback_url: str | None = None, *, log_created: bool = True
    ) -> str:
        """Create a generation task and return its taskId. Retried only where no task can have been made.

        ``log_created=False`` leaves the one line per task out (a batch of 1,000 logs progress counts instead)."""
        request = build_create_task(model, input, callback_url)
        task_id = parse_create_task(self._call(request))
        if log_created:
            self.log.info("Created LiangXin task %s (model %s)", task_id, request.json_body["model"])  # type: ignore[index]
        return task_id

    def task_status_url(self, task_id: str) -> str:
        """The recordInfo URL of a task: the closest thing LiangXin has to a task page."""
        request = build_record_info(task_id)
        return f"{self.settings.base_url}{request.path}?{urlencode(request.params or {})}"

    def get_task(self, task_id: str, *, deadline: float | None = None) -> TaskRecord:
        """The task's record. ``deadline`` (epoch seconds) bounds the call, retries included, when it is nearer
        than the whole-request timeout; passing it raises :class:`LiangxinTimeoutError`."""
        return parse_record_info(self._call(build_record_info(task_id), deadline), task_id)

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call: recordInfo for an id that cannot exist; LiangXin's 404 proves the key."""
        probe = LiangxinHook(self.liangxin_conn_id, timeout=self.timeout, retry={"max_attempts": 1})
        try:
            probe.get_task(f"airflow-connection-test-{uuid.uuid4().hex}")
        except LiangxinTaskNotFoundError as exc:
            if str(exc.api_code) != "404":
                # LiangXin answers an unknown task with {"code":404,...}; any other 404 (an HTML page, a gateway's
                # "Invalid URL") means a wrong base URL, not a working key.
                return False, f"{probe.settings.base_url} does not look like the LiangXin API: {exc}"
            return True, f"Connection to LiangXin at {probe.settings.base_url} works: the API key was accepted"
        except LiangxinAuthError as exc:
            return False, f"The API key was rejected: {exc}"
        except LiangxinError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        else:
            return True, f"Connection to LiangXin at {probe.settings.base_url} works"
        finally:
            probe.close()

    # --------------------------------------------------------------------------------------- async path

    async def __aenter__(self) -> LiangxinHook:
        settings = await self._asettings()
        self._proxy = env_proxy(settings.base_url)  # once per hook, not per request
        if self._session is None:
            self._pool_key = (settings.verify_ssl, settings.origin)
            self._session = SESSION_POOL.acquire(*self._pool_key)
            self._client_timeout = _aiohttp().ClientTimeout(total=settings.timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None and self._pool_key is not None:
            self._session = None
            await SESSION_POOL.release(*self._pool_key)

    def _scrubbed(self, data: Any) -> Any:
        """An API answer without our key in it: a hostile server may echo the Authorization header into a
        ``failMsg`` that would reach events, XCom and the scheduler's unmasked copy of task logs."""
        return without_secret(data, self._secret)

    @property
    def _secret(self) -> str | None:
        return self._settings.api_key if self._settings is not None else None

    def settings_or_raise(self) -> ConnectionSettings:
        if self._settings is None:
            raise LiangxinConfigError("the hook's connection has not been resolved yet")
        return self._settings

    async def _asend(self, request: ApiRequest, deadline: float | None = None) -> Any:
        try:
            return self._scrubbed(await self._asend_once(request, deadline))
        except LiangxinError as exc:
            scrub_error(exc, self._secret)
            raise

    async def _asend_once(self, request: ApiRequest, deadline: float | None) -> Any:
        if self._session is None:
            raise LiangxinConfigError("async LiangxinHook calls need `async with hook:` around them")
        settings = self.settings_or_raise()
        budget = self._budget(request, deadline)
        # total= is aiohttp's whole-request timeout: connect, send, headers and the body read below.
        timeout = self._client_timeout if deadline is None else _aiohttp().ClientTimeout(total=budget)
        try:
            async with self._session.request(
                request.method,
                settings.base_url + request.path,
                params=request.params,
                json=request.json_body,
                headers=settings.headers,
                timeout=timeout,
                proxy=self._proxy,
                allow_redirects=False,  # as the sync path: a redirect is an error, never a re-sent createTask
            ) as response:
                content = await _aread_capped(request, response)
                return parse_response(request, response.status, response.headers, content)
        except LiangxinError:
            raise
        except Exception as exc:
            self._raise_transport_error(request, exc, budget, _aiohttp_errors())

    async def _acall(self, request: ApiRequest, deadline: float | None = None) -> Any:
        # Fast path: a poll that succeeds builds no tenacity objects. Those leave ~40 objects of cyclic garbage per
        # call, which drive full GCs of the triggerer's whole heap (measured: 100-500 ms loop stalls).
        try:
            return await self._asend(request, deadline)
        except Exception as exc:
            if self.retry_policy.max_attempts <= 1 or not is_retryable(request, exc):
                raise
            first_failure: BaseException | None = exc
        # Same policy as the sync path: the failure above counts as tenacity's attempt 1 (same waits, caps, logs).
        async for attempt in tenacity.AsyncRetrying(sleep=self._asleep, **self._retry_kwargs(request, deadline)):
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return await self._asend(request, deadline)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def acreate_task(self, model: str, input: Mapping[str, Any], callback_url: str | None = None) -> str:
        return parse_create_task(await self._acall(build_create_task(model, input, callback_url)))

    async def aget_task(self, task_id: str, *, deadline: float | None = None) -> TaskRecord:
        """The async twin of :meth:`get_task`, for the triggerer."""
        return parse_record_info(await self._acall(build_record_info(task_id), deadline), task_id)


__all__ = ["ConnectionSettings", "LiangxinHook", "shared_ssl_context", "user_agent"]
