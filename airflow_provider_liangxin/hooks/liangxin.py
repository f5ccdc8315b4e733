"""LiangxinHook: an Airflow connection turned into configured LiangXin clients, sync and async.

The sync path (workers) uses httpx. The async path (the triggerer, one event loop shared by every deferred task
of a deployment) uses one aiohttp session per (event loop, TLS setting), shared by every hook on that loop:
measured on a 2-core machine, a default ``httpx.AsyncClient`` costs ~40 ms CPU to create and 5-15 ms CPU per
request under 500-way concurrency, against ~0.3 ms for a shared aiohttp session (see ``benchmarks/``).
Both paths send what :mod:`airflow_provider_liangxin._api` builds and read what it parses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import platform
import ssl
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import httpx
import tenacity
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_provider_liangxin import __version__
from airflow_provider_liangxin._api import (
    ApiRequest,
    LiangxinAuthError,
    LiangxinConfigError,
    LiangxinConnectError,
    LiangxinError,
    LiangxinTaskNotFoundError,
    LiangxinTimeoutError,
    LiangxinTransportError,
    RetryPolicy,
    TaskRecord,
    build_create_task,
    build_record_info,
    is_retryable,
    parse_create_task,
    parse_response,
)

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


@dataclass(frozen=True)
class ConnectionSettings:
    """What the hook needs from an Airflow connection. The key is kept out of ``repr``."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    timeout: float
    verify_ssl: bool

    @classmethod
    def from_connection(
        cls, conn: Any, extras: Mapping[str, Any], timeout_override: float | None
    ) -> ConnectionSettings:
        conn_id = conn.conn_id
        host = (conn.host or "").strip()
        if not host:
            raise LiangxinConfigError(
                f"Airflow connection {conn_id!r} has no host: set it to the LiangXin API base URL "
                "(e.g. https://api.example.com or http://127.0.0.1:8765 for the simulator)"
            )
        api_key = (conn.password or "").strip()
        if not api_key:
            raise LiangxinConfigError(f"Airflow connection {conn_id!r} has no password: set it to the API key")
        if not (api_key.isascii() and api_key.isprintable()):
            # Never echo it: a key with a line break would otherwise surface (unmasked) in an HTTP library error.
            raise LiangxinConfigError(
                f"Airflow connection {conn_id!r}: the API key contains spaces, line breaks or non-ASCII characters; "
                "paste it again as one line"
            )
        if "://" not in host:
            scheme = (conn.schema or "").lower() if (conn.schema or "").lower() in ("http", "https") else "https"
            host = f"{scheme}://{host}"
        parts = urlsplit(host)
        if conn.port and parts.port is None:
            host = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{conn.port}"))
        timeout = timeout_override if timeout_override is not None else extras.get("timeout")
        return cls(
            conn_id=conn_id,
            base_url=host.rstrip("/"),
            api_key=api_key,
            timeout=_as_timeout(timeout, conn_id),
            verify_ssl=_as_bool(extras.get("verify_ssl", True), "verify_ssl", conn_id),
        )

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent(),
        }


def _as_timeout(value: Any, conn_id: str) -> float:
    if value in (None, ""):
        return DEFAULT_TIMEOUT
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise LiangxinConfigError(f"connection {conn_id!r}: timeout must be a number, got {value!r}") from None
    if timeout <= 0:
        raise LiangxinConfigError(f"connection {conn_id!r}: timeout must be > 0, got {value!r}")
    return timeout


def _as_bool(value: Any, name: str, conn_id: str) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
    ):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise LiangxinConfigError(f"connection {conn_id!r}: {name} must be a boolean, got {value!r}")


# ----------------------------------------------------------------------------- the shared async session pool


class _SessionPool:
    """aiohttp sessions shared per (event loop, TLS setting), reference-counted by open hooks.

    A session lives while at least one hook on its loop holds it, and is closed by the last one out, so no
    session outlives its users nor is bound to a dead loop (the dict is keyed weakly by the loop).
    """

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[bool, tuple[aiohttp.ClientSession, int]]
        ] = weakref.WeakKeyDictionary()

    def acquire(self, verify_ssl: bool) -> aiohttp.ClientSession:
        per_loop = self._entries.setdefault(asyncio.get_running_loop(), {})
        session, users = per_loop.get(verify_ssl, (None, 0))
        if session is None or session.closed:
            # ssl=True selects aiohttp's default verifying context, built once when aiohttp is imported: building
            # our own here would cost ~40 ms of CPU inside the triggerer's event loop on first use.
            connector = aiohttp.TCPConnector(limit=ASYNC_CONNECTION_LIMIT, ssl=verify_ssl, enable_cleanup_closed=False)
            # No trust_env: it re-reads the proxy environment and ~/.netrc in two executor hops on *every* request
            # (measured: 0.29 -> 0.66 ms CPU per poll), and a ~/.netrc entry for the API host breaks every request
            # ("Cannot combine AUTHORIZATION header"). Each hook resolves its proxy once instead (env_proxy).
            session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
            users = 0
        per_loop[verify_ssl] = (session, users + 1)
        return session

    async def release(self, verify_ssl: bool) -> None:
        per_loop = self._entries.get(asyncio.get_running_loop(), {})
        session, users = per_loop.get(verify_ssl, (None, 0))
        if session is None:
            return
        if users <= 1:
            del per_loop[verify_ssl]
            await session.close()
        else:
            per_loop[verify_ssl] = (session, users - 1)

    def users(self, verify_ssl: bool) -> int:
        """Open hooks holding the current loop's session (for tests and benchmarks)."""
        entry = self._entries.get(asyncio.get_running_loop(), {}).get(verify_ssl)
        return entry[1] if entry else 0


SESSION_POOL = _SessionPool()


def env_proxy(base_url: str) -> str | None:
    """The proxy the environment (HTTP(S)_PROXY, NO_PROXY) names for ``base_url``, as httpx's sync path uses it."""
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(base_url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


# ------------------------------------------------------------------------------------------------- the hook


class LiangxinHook(BaseHook):
    """Talk to the LiangXin Market API through an Airflow connection of type ``liangxin``.

    :param liangxin_conn_id: Connection whose host is the API base URL and whose password is the API key.
    :param timeout: Per-request timeout in seconds; overrides the connection's ``timeout`` extra.
    :param retry: JSON-native retry settings (``max_attempts``, ``backoff_initial``, ``backoff_max``,
        ``max_wait_total``); see :class:`~airflow_provider_liangxin._api.RetryPolicy`.

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
        self.timeout = timeout
        self.retry_policy = RetryPolicy.from_kwargs(retry)
        self._settings: ConnectionSettings | None = None
        self._client: httpx.Client | None = None
        self._session: aiohttp.ClientSession | None = None
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

    # ------------------------------------------------------------------------------------------ retries

    def _retry_kwargs(self, request: ApiRequest) -> dict[str, Any]:
        return self.retry_policy.tenacity_kwargs(
            lambda exc: is_retryable(request, exc), f"LiangXin {request.operation}", self.log
        )

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
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _send(self, request: ApiRequest) -> Any:
        client = self.get_conn()
        try:
            response = client.request(request.method, request.path, params=request.params, json=request.json_body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise LiangxinConnectError(
                f"LiangXin {request.operation}: cannot connect to {client.base_url}: {type(exc).__name__}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise LiangxinTimeoutError(
                f"LiangXin {request.operation}: no answer within {self.settings.timeout:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.LocalProtocolError as exc:
            # The request could not even be built (an illegal header value): not retryable, and the message
            # (which may quote the Authorization header) is not echoed.
            raise LiangxinConfigError(
                f"LiangXin {request.operation}: the request could not be built ({type(exc).__name__}); "
                f"check the API key and host of connection {self.liangxin_conn_id!r}"
            ) from None
        except httpx.TransportError as exc:
            raise LiangxinTransportError(f"LiangXin {request.operation}: {type(exc).__name__}: {exc}") from exc
        return parse_response(request, response.status_code, response.headers, response.content)

    def _call(self, request: ApiRequest) -> Any:
        for attempt in tenacity.Retrying(sleep=self._sleep, **self._retry_kwargs(request)):
            with attempt:
                return self._send(request)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def create_task(self, model: str, input: Mapping[str, Any], callback_url: str | None = None) -> str:
        """Create a generation task and return its taskId. Retried only where no task can have been made."""
        request = build_create_task(model, input, callback_url)
        task_id = parse_create_task(self._call(request))
        self.log.info("Created LiangXin task %s (model %s)", task_id, request.json_body["model"])  # type: ignore[index]
        return task_id

    def task_status_url(self, task_id: str) -> str:
        """The recordInfo URL of a task: the closest thing LiangXin has to a task page."""
        request = build_record_info(task_id)
        return f"{self.settings.base_url}{request.path}?{urlencode(request.params or {})}"

    def get_task(self, task_id: str) -> TaskRecord:
        return TaskRecord.from_api(self._call(build_record_info(task_id)))

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
            self._session = SESSION_POOL.acquire(settings.verify_ssl)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            self._session = None
            await SESSION_POOL.release(self.settings_or_raise().verify_ssl)

    def settings_or_raise(self) -> ConnectionSettings:
        if self._settings is None:
            raise LiangxinConfigError("the hook's connection has not been resolved yet")
        return self._settings

    async def _asend(self, request: ApiRequest) -> Any:
        if self._session is None:
            raise LiangxinConfigError("async LiangxinHook calls need `async with hook:` around them")
        settings = self.settings_or_raise()
        timeout = aiohttp.ClientTimeout(total=None, connect=settings.timeout, sock_read=settings.timeout)
        url = settings.base_url + request.path
        try:
            async with self._session.request(
                request.method,
                url,
                params=request.params,
                json=request.json_body,
                headers=settings.headers,
                timeout=timeout,
                proxy=self._proxy,
            ) as response:
                content = await response.read()
                return parse_response(request, response.status, response.headers, content)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise LiangxinConnectError(
                f"LiangXin {request.operation}: cannot connect to {settings.base_url}: {type(exc).__name__}"
            ) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise LiangxinTimeoutError(
                f"LiangXin {request.operation}: no answer within {settings.timeout:g} s ({type(exc).__name__})"
            ) from exc
        except aiohttp.ClientError as exc:
            raise LiangxinTransportError(f"LiangXin {request.operation}: {type(exc).__name__}: {exc}") from exc

    async def _acall(self, request: ApiRequest) -> Any:
        # Fast path: a poll that succeeds builds no tenacity objects. Those leave ~40 objects of cyclic garbage per
        # call, which drive full GCs of the triggerer's whole heap (measured: 100-500 ms loop stalls).
        try:
            return await self._asend(request)
        except Exception as exc:
            if self.retry_policy.max_attempts <= 1 or not is_retryable(request, exc):
                raise
            first_failure: BaseException | None = exc
        # Same policy as the sync path: the failure above counts as tenacity's attempt 1 (same waits, caps, logs).
        async for attempt in tenacity.AsyncRetrying(sleep=self._asleep, **self._retry_kwargs(request)):
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return await self._asend(request)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def acreate_task(self, model: str, input: Mapping[str, Any], callback_url: str | None = None) -> str:
        return parse_create_task(await self._acall(build_create_task(model, input, callback_url)))

    async def aget_task(self, task_id: str) -> TaskRecord:
        return TaskRecord.from_api(await self._acall(build_record_info(task_id)))


__all__ = ["ConnectionSettings", "LiangxinHook", "shared_ssl_context", "user_agent"]
