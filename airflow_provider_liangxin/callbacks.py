"""Callback-driven completion, the parts the worker, the trigger and the receiver share.

LiangXin POSTs the task's record to ``callBackUrl`` when it ends; nothing is signed. So the URL itself is the
credential: ``{callback_base_url}/liangxin/v1/callback/{ti_id}/{token}`` with a fresh high-entropy token per task
try, and only the token's sha256 is stored (in the trigger's kwargs, which Airflow encrypts at rest). A callback is
a hint that makes the worker check LiangXin once; it never carries the result.

Kept free of FastAPI and of Airflow internals: the operator imports it while a DAG file is parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Where the plugin mounts its FastAPI app in the api-server (fixed: docs, examples and ingress rules use it).
URL_PREFIX = "/liangxin"
#: The callback route under the prefix; ``{ti_id}`` is the task instance's id (a new UUID each try).
CALLBACK_ROUTE = "/v1/callback/{ti_id}/{token}"
HEALTH_ROUTE = "/v1/health"
CONFIG_SECTION = "liangxin"
#: ``callback_url="auto"``: build the capability URL from ``[liangxin] callback_base_url``.
AUTO = "auto"
#: The trigger a callback may wake (the receiver checks the waiting task's trigger row against it).
TRIGGER_CLASSPATH = "airflow_provider_liangxin.triggers.liangxin.LiangxinTaskTrigger"

DEFAULT_FALLBACK_POLL_INTERVAL = 60.0
DEFAULT_SETTLE_SECONDS = 15.0
DEFAULT_MAX_WAKEUPS = 3
DEFAULT_MAX_REQUESTS_PER_SECOND = 200.0
#: ``[liangxin] deferral_settle_seconds``: the least time between a deferral and the trigger's event (see
#: :func:`deferral_settle_seconds`). Capped so a held event never meets ``defer(timeout=)``'s 60 s backstop margin.
DEFAULT_DEFERRAL_SETTLE_SECONDS = 15.0
MAX_DEFERRAL_SETTLE_SECONDS = 60.0

log = logging.getLogger(__name__)

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_CAPABILITY = re.compile(r"(/liangxin/v1/callback/[^/?#]+/)[^/?#]+")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def new_token() -> str:
    """256 bits from the OS's CSPRNG, URL-safe: unguessable, so the URL alone can be the credential."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored instead of the token (hex sha256): a leaked trigger row cannot be turned into a URL."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: Any) -> bool:
    """Constant-time comparison of a presented token with the stored hash (False for anything malformed)."""
    if not isinstance(stored_hash, str) or not is_token_hash(stored_hash) or not token or len(token) > 256:
        return False
    return hmac.compare_digest(token_hash(token), stored_hash)


def is_token_hash(value: Any) -> bool:
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def callback_url_for(base_url: str, ti_id: str, token: str) -> str:
    """The capability URL LiangXin is given for one task try."""
    return f"{base_url.rstrip('/')}{URL_PREFIX}{CALLBACK_ROUTE.format(ti_id=ti_id, token=token)}"


def redact_capability(text: str) -> str:
    """``text`` with the token part of any callback URL or path replaced by ``***`` (logs, XCom, events)."""
    return _CAPABILITY.sub(r"\1***", text) if "/liangxin/v1/callback/" in text else text


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_callback_url(callback_url: str | None, *, what: str = "callback_url") -> None:
    """LiangXin calls back HTTPS URLs only; ``http://`` is accepted for loopback hosts (the simulator, tests).

    ``"auto"`` passes: the URL is built at run time from ``[liangxin] callback_base_url``.
    """
    if not callback_url or callback_url == AUTO:
        return
    if not isinstance(callback_url, str):
        raise ValueError(f"{what} must be a URL or 'auto', got {type(callback_url).__name__}")
    try:
        parts = urlsplit(callback_url)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"{what} is not a valid URL: {redact_capability(callback_url)!r}") from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and is_loopback_host(host):
        return
    raise ValueError(
        f"{what} must be an https:// URL (http:// only for loopback hosts), got {redact_capability(callback_url)!r}"
    )


@dataclass(frozen=True)
class CallbackSettings:
    """The ``[liangxin]`` section (``AIRFLOW__LIANGXIN__...`` environment variables work as usual).

    ``receiver_enabled``, ``settle_seconds`` and ``max_requests_per_second`` matter in the api-server;
    ``base_url``, ``fallback_poll_interval`` and ``max_wakeups`` on the workers.
    """

    receiver_enabled: bool = False
    base_url: str = ""
    fallback_poll_interval: float = DEFAULT_FALLBACK_POLL_INTERVAL
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    max_wakeups: int = DEFAULT_MAX_WAKEUPS
    max_requests_per_second: float = DEFAULT_MAX_REQUESTS_PER_SECOND

    @classmethod
    def from_conf(cls, conf: Any = None) -> CallbackSettings:
        """Read Airflow's config; a bad value is a clear ``ValueError`` naming the option."""
        conf = airflow_conf(conf)

        def number(key: str, default: float, *, minimum: float) -> float:
            return _conf_number(conf, key, default, minimum=minimum)

        base_url = (conf.get(CONFIG_SECTION, "callback_base_url", fallback="") or "").strip()
        if base_url:
            check_callback_url(base_url, what=f"[{CONFIG_SECTION}] callback_base_url")
            if urlsplit(base_url).path.rstrip("/").endswith(URL_PREFIX):
                raise ValueError(
                    f"[{CONFIG_SECTION}] callback_base_url is the api-server's public base URL without "
                    f"{URL_PREFIX!r}, got {base_url!r}"
                )
        return cls(
            receiver_enabled=conf.getboolean(CONFIG_SECTION, "callback_receiver_enabled", fallback=False),
            base_url=base_url,
            fallback_poll_interval=number("callback_fallback_poll_interval", DEFAULT_FALLBACK_POLL_INTERVAL, minimum=1),
            settle_seconds=number("callback_settle_seconds", DEFAULT_SETTLE_SECONDS, minimum=0),
            max_wakeups=int(number("callback_max_wakeups", DEFAULT_MAX_WAKEUPS, minimum=1)),
            max_requests_per_second=number(
                "callback_max_requests_per_second", DEFAULT_MAX_REQUESTS_PER_SECOND, minimum=1
            ),
        )


def airflow_conf(conf: Any = None) -> Any:
    """``conf``, or Airflow's own configuration when None (tests pass a fake; Airflow is imported only then)."""
    if conf is not None:
        return conf
    from airflow.providers.common.compat.sdk import conf as airflow_conf

    return airflow_conf


def _conf_number(conf: Any, key: str, default: float, *, minimum: float, maximum: float = math.inf) -> float:
    """A ``[liangxin]`` number; a bad value is a clear ``ValueError`` naming the option."""
    raw = conf.get(CONFIG_SECTION, key, fallback=None)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"[{CONFIG_SECTION}] {key} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum or value == math.inf:
        bound = f"between {minimum:g} and {maximum:g}" if maximum != math.inf else f">= {minimum:g}"
        raise ValueError(f"[{CONFIG_SECTION}] {key} must be a finite number {bound}, got {raw!r}")
    return value


def deferral_settle_seconds(conf: Any = None) -> float:
    """``[liangxin] deferral_settle_seconds``: how long a trigger holds its event after it starts.

    Airflow 3.3 fails a task resumed within seconds of deferring ("state changed externally", apache/airflow#72716):
    the worker's report that its deferring process exited can reach the scheduler after the resumed try was
    queued. That report leaves nothing in the database a trigger could wait for, so the trigger waits a margin:
    its event (a task that was already done at the first poll, a fast generation) lands no sooner than this many
    seconds after the trigger started, which is after the deferral was recorded. 0 turns the hold off.

    Read by the worker when it defers. A bad value is logged (naming the option) and the default applies: the
    LiangXin task is already paid for by then, and the margin only protects against a race.
    """
    try:
        return _conf_number(
            airflow_conf(conf),
            "deferral_settle_seconds",
            DEFAULT_DEFERRAL_SETTLE_SECONDS,
            minimum=0,
            maximum=MAX_DEFERRAL_SETTLE_SECONDS,
        )
    except ValueError as exc:
        log.warning("%s; using %g s", exc, DEFAULT_DEFERRAL_SETTLE_SECONDS)
        return DEFAULT_DEFERRAL_SETTLE_SECONDS


__all__ = [
    "AUTO",
    "CALLBACK_ROUTE",
    "HEALTH_ROUTE",
    "TRIGGER_CLASSPATH",
    "URL_PREFIX",
    "CallbackSettings",
    "airflow_conf",
    "callback_url_for",
    "check_callback_url",
    "deferral_settle_seconds",
    "is_loopback_host",
    "is_token_hash",
    "new_token",
    "redact_capability",
    "token_hash",
    "token_matches",
]
