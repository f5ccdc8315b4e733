"""Download a finished task's result URLs into durable storage, each with a JSON sidecar (worker side only).

LiangXin result URLs expire after about a day, so the operator copies them to a user-given ``output_path``: a
local path (``/data/out`` or ``file:///data/out``), any scheme Airflow's ``ObjectStoragePath`` knows through a
provider (``s3://aws_default@bucket/prefix``, ``gs://...``), or any other fsspec URL (``memory://...``).

A result URL comes from the API, so it is treated as untrusted: only ``http(s)``, only public addresses unless
the caller opts in (or the URL points at the API's own host, e.g. the simulator on loopback), never link-local
cloud-metadata addresses, checked again on every redirect hop (redirects are followed here, not by httpx).

Each result is downloaded in full (streamed, size-capped, hashed, retried on transient failures) before anything
is written at its destination, so a failed download never leaves a partial file under the final name. Local
files are written to a hidden ``.part`` file and renamed; object stores get one plain write (a PUT is atomic).

Only the operator's ``execute`` path imports this module (never DAG parsing); at import time it loads the
standard library and ``_api`` only. httpx, tenacity, fsspec, upath and Airflow's storage classes are imported
inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_liangxin._api import LiangxinError, RetryPolicy, TaskRecord, parse_retry_after

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
#: Downloads bound for an object store are buffered in memory up to this size, then in a temporary file.
SPOOL_MEMORY_BYTES = 16 * 1024 * 1024
#: Redirect hops followed per download attempt; more (a loop, or a chain) fails the download for good.
MAX_REDIRECTS = 10
#: A ``.part`` file of the same task untouched this long is a leftover of a killed worker (a live download
#: writes at least once per read timeout, and a retry's backoff is far shorter), so the next store removes it.
STALE_PART_SECONDS = 10 * 60

#: The only stored extensions: known image and video types. Anything else is stored as ``.bin``.
CONTENT_TYPE_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/avif": "avif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
}
_SUFFIX_ALIASES = {"jpeg": "jpg"}
URL_EXTENSIONS = frozenset(CONTENT_TYPE_EXTENSIONS.values())
#: The type each extension a stored file can have is served as (the result view): the first content type named
#: for it above, and its aliases.
MEDIA_TYPES: dict[str, str] = {}
for _mime, _ext in CONTENT_TYPE_EXTENSIONS.items():
    MEDIA_TYPES.setdefault(_ext, _mime)
MEDIA_TYPES.update({alias: MEDIA_TYPES[ext] for alias, ext in _SUFFIX_ALIASES.items()})
FALLBACK_EXTENSION = "bin"

#: TaskIds stored under their own name: lower case (no clash on case-insensitive disks), no path characters.
_PLAIN_STEM = re.compile(r"[a-z0-9][a-z0-9._-]{0,149}")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_RETRYABLE_STATUSES = frozenset({408, 429})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: Refused even with ``allow_private_hosts``: link-local ranges and the cloud metadata services' addresses.
_ALWAYS_REFUSED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "169.254.0.0/16",  # link-local; AWS/GCP/Azure/OpenStack metadata at 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

#: A path object: ``airflow.sdk.ObjectStoragePath`` or a ``upath.UPath`` (both pathlib-like over fsspec).
StoragePath = Any
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_T = TypeVar("_T")

#: How retries sleep; a module attribute so tests can record the waits instead of sleeping.
_sleep: Callable[[float], None] = time.sleep


class ResultDownloadError(LiangxinError):
    """A result URL could not be downloaded (error status, timeout, size cap, refused destination); the message
    names taskId and URL.

    ``url`` is the URL without its query string (signed URLs carry credentials there). ``retryable`` tells
    whether the last failure was a transient one (and the retries ran out) or a final answer such as a 404.
    """

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        url: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.task_id = task_id
        self.url = url
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


# ---------------------------------------------------------------------------------------------- helpers


def is_web_url(url: Any) -> bool:
    """A result URL from the API is only worth linking, storing or showing when it is http(s) with a host."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def redact_url(url: str) -> str:
    """The URL without user info, query string and fragment, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    text = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return text + "?…" if parts.query else text


def extension_for(content_type: str | None, url: str) -> str:
    """A known image/video extension from the Content-Type, else from the URL path's suffix, else ``bin``.

    Never anything else: a URL ending in ``.json`` must not overwrite its own sidecar, and one ending in ``.sh``
    must not leave an executable-looking file in someone's bucket.
    """
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in CONTENT_TYPE_EXTENSIONS:
        return CONTENT_TYPE_EXTENSIONS[mime]
    try:
        suffix = PurePosixPath(urlsplit(url).path).suffix.lstrip(".").lower()
    except ValueError:
        suffix = ""
    suffix = _SUFFIX_ALIASES.get(suffix, suffix)
    return suffix if suffix in URL_EXTENSIONS else FALLBACK_EXTENSION


def stored_stem(task_id: str) -> str:
    """The file-name stem of a task's results: injective, so two taskIds never share a file.

    A plain lower-case taskId (LiangXin's own ``task_<model>_<ms>``) is used as is. Anything else (path
    characters, upper case, over 150 characters) keeps a readable part and gets ``~`` plus a short hash of the
    exact taskId: ``~`` never occurs in a plain stem, and the hash separates ``a/b`` from ``a_b``.
    """
    if _PLAIN_STEM.fullmatch(task_id):
        return task_id
    readable = _UNSAFE_NAME_CHARS.sub("_", task_id).lstrip("._-")[:120] or "task"
    digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{readable}~{digest}"


def _utc_now_iso() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------ destinations


@dataclass(frozen=True)
class DestinationPolicy:
    """Which hosts a result download may reach; see :func:`destination_problem`."""

    allow_private_hosts: bool = False
    #: ``(host, port)`` of the API base URL: reachable even when private (the simulator on loopback).
    trusted_origin: tuple[str, int] | None = None

    @classmethod
    def build(cls, allow_private_hosts: bool, trusted_base_url: str | None) -> DestinationPolicy:
        if not isinstance(allow_private_hosts, bool):
            # A string such as "false" would be truthy: refuse rather than open the gate by accident.
            raise ValueError(f"allow_private_hosts must be True or False, got {allow_private_hosts!r}")
        trusted = _origin(trusted_base_url) if trusted_base_url else None
        return cls(allow_private_hosts, trusted)


def _origin(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in ("http", "https"):
        return None
    return parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def _judged(address: IPAddress) -> list[IPAddress]:
    """The addresses to judge for one address: an IPv4-mapped IPv6 address is its IPv4 address; other IPv6
    addresses also carry the IPv4 addresses they tunnel to (6to4, Teredo, NAT64), which are reached in the end."""
    if not isinstance(address, ipaddress.IPv6Address):
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    found: list[IPAddress] = [address]
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def address_problem(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why a download must not connect to ``address``, or None when it may."""
    judged = _judged(address)
    for candidate in judged:
        if candidate.is_link_local or any(candidate in net for net in _ALWAYS_REFUSED):
            return f"{address}, a link-local or cloud-metadata address (always refused)"
    if allow_private:
        return None
    for candidate in judged:
        if not candidate.is_global or candidate.is_multicast:
            return (
                f"{address}, not a public address (loopback, private or reserved); "
                "set allow_private_result_hosts to download from it"
            )
    return None


def destination_problem(url: str, policy: DestinationPolicy) -> tuple[str, bool] | None:
    """``(reason, retryable)`` when ``url`` must not be fetched, else None.

    The host is resolved and every address checked, so a public-looking name that resolves to loopback is
    refused too. (A DNS answer that changes between this check and httpx's own lookup is not caught: put an
    egress proxy or firewall in front of the workers if that matters.)
    """
    origin = _origin(url)
    if origin is None:
        return "not an http(s) URL with a host", False
    host, port = origin
    trusted = origin == policy.trusted_origin
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        return f"invalid host name {host!r} ({exc})", False
    except OSError as exc:
        return f"cannot resolve host {host!r} ({exc})", True
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        problem = address_problem(address, allow_private=policy.allow_private_hosts or trusted)
        if problem:
            return f"host {host!r} resolves to {problem}", False
    return None


# ---------------------------------------------------------------------------------------------- storage


def _storage_path(output_path: Any) -> StoragePath:
    """Resolve ``output_path`` to a path object, or raise ValueError saying why it cannot be storage."""
    if hasattr(output_path, "fs") and hasattr(output_path, "protocol"):
        return output_path  # already an ObjectStoragePath / UPath
    if isinstance(output_path, os.PathLike):
        output_path = os.fspath(output_path)
    if not isinstance(output_path, str) or not output_path.strip():
        raise ValueError(f"output_path must be a non-empty path or URL string, got {output_path!r}")
    text = output_path.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        raise ValueError(f"output_path {text!r} is a web URL, not a storage location; use a path, s3://, gs://...")
    from airflow_provider_liangxin._airflow_compat import has_fs

    in_airflow = has_fs(scheme or "file")
    if not in_airflow and "@" in parts.netloc:
        raise ValueError(
            f"output_path {text!r} names an Airflow connection, but no installed provider registers "
            f"an ObjectStoragePath filesystem for {scheme!r} (install the provider for that storage)"
        )
    path: StoragePath
    try:
        if in_airflow:
            from airflow.sdk import ObjectStoragePath

            path = ObjectStoragePath(text)
        else:
            from upath import UPath

            path = UPath(text)
        path.fs  # noqa: B018 - resolving the filesystem surfaces a missing fsspec implementation now
    except ValueError as exc:
        raise ValueError(f"output_path {text!r}: unsupported storage protocol {scheme!r} ({exc})") from exc
    except ImportError as exc:
        raise ValueError(f"output_path {text!r}: the filesystem for {scheme!r} is not installed ({exc})") from exc
    if _local_dir(path) is not None and not path.is_absolute():
        raise ValueError(f"output_path {text!r} must be absolute: a worker's current directory is arbitrary")
    return path


def _local_dir(path: StoragePath) -> str | None:
    """The OS path when ``path`` lives on the local filesystem (where atomic renames exist), else None."""
    from fsspec.implementations.local import LocalFileSystem

    return str(path.path) if isinstance(path.fs, LocalFileSystem) else None


def _path_uri(path: StoragePath) -> str:
    """How a stored file is reported: a ``file://`` URI locally, else the path's URL (connection id kept)."""
    local = _local_dir(path)
    if local is not None:
        return PurePosixPath(os.path.abspath(local)).as_uri()
    return str(path)


def _part_pattern(stem: str) -> re.Pattern[str]:
    """The ``.part`` names :func:`_write_local_atomically` gives the files of one stem (results and sidecars)."""
    return re.compile(rf"\.{re.escape(stem)}_\d+(?:\.json)?\.part-[0-9a-f]{{8}}")


def _write_local_atomically(
    directory: str, prefix: str, write: Callable[[IO[bytes]], _T], final_name: Callable[[_T], str]
) -> tuple[_T, str]:
    """Write through a hidden ``.<prefix>.part-<hex>`` file, fsync it, rename it to ``final_name(write(fh))``.

    The final name may depend on what was written (a result's extension comes from its Content-Type). On any
    failure the ``.part`` file is removed; only a killed process leaves one (see :func:`_remove_stale_parts`).
    """
    part = os.path.join(directory, f".{prefix}.part-{uuid.uuid4().hex[:8]}")
    try:
        with open(part, "w+b") as fh:
            outcome = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        name = final_name(outcome)
        os.replace(part, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    return outcome, name


def _remove_stale_parts(directory: str, stem: str, *, now: float | None = None) -> list[str]:
    """Delete ``.part`` files of ``stem`` untouched for :data:`STALE_PART_SECONDS` (a kill -9 mid-download).

    Fresh ones are kept: another worker may be writing them right now.
    """
    pattern = _part_pattern(stem)
    cutoff = (time.time() if now is None else now) - STALE_PART_SECONDS
    removed: list[str] = []
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if not pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(entry.name)
    if removed:
        log.info("Removed %d stale partial download(s) in %s: %s", len(removed), directory, ", ".join(removed))
    return removed


def _write_bytes(directory: StoragePath, name: str, data: bytes) -> StoragePath:
    local = _local_dir(directory)
    if local is not None:
        _write_local_atomically(local, name, lambda fh: fh.write(data), lambda _: name)
    else:
        with (directory / name).open("wb") as fh:
            fh.write(data)
    return directory / name


def check_output_path(output_path: str) -> None:
    """Prove ``output_path`` is writable before a (paid) task is created, or raise ValueError saying why.

    Creates missing local directories, then writes and removes a small probe object. Local and ``memory://``
    paths need no network; object stores get one small PUT and DELETE (with the connection's credentials).
    """
    path = _storage_path(output_path)
    probe = f".liangxin-probe-{uuid.uuid4().hex}"
    local = _local_dir(path)
    try:
        if local is not None:
            os.makedirs(local, exist_ok=True)
            probe_path = os.path.join(local, probe)
            with open(probe_path, "xb") as fh:
                fh.write(b"probe")
            os.unlink(probe_path)
        else:
            target = path / probe
            with target.open("wb") as fh:
                fh.write(b"probe")
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
    except (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError, ValueError) as exc:
        # Permanent: the same path fails the same way on a retry. Anything else (a storage 503, a network blip,
        # an expired token) propagates as is, so Airflow's retries apply.
        raise ValueError(f"output_path {output_path!r} is not writable: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------- download


@dataclass(frozen=True)
class _Fetched:
    content_type: str
    size: int
    sha256: str


class _Download:
    """One result URL: one attempt at a time into a rewindable sink, retried with tenacity.

    Redirects are followed here, one hop at a time, so every hop's destination is checked before connecting.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        task_id: str,
        index: int,
        url: str,
        max_bytes: int,
        timeout: float,
        destinations: DestinationPolicy,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.index = index
        self.url = url
        self.safe_url = redact_url(url)
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.destinations = destinations

    def error(self, reason: str, *, retryable: bool = False, **kwargs: Any) -> ResultDownloadError:
        return ResultDownloadError(
            f"cannot download result {self.index} of LiangXin task {self.task_id} from {self.safe_url}: {reason}",
            task_id=self.task_id,
            url=self.safe_url,
            retryable=retryable,
            **kwargs,
        )

    def check(self, url: str, hop: int) -> None:
        problem = destination_problem(url, self.destinations)
        if problem is not None:
            reason, retryable = problem
            where = "" if hop == 0 else f"redirect {hop} to {redact_url(url)}: "
            raise self.error(f"{where}{reason}", retryable=retryable)

    def once(self, sink: IO[bytes]) -> _Fetched:
        import httpx

        sink.seek(0)
        sink.truncate()
        url = self.url
        try:
            for hop in range(MAX_REDIRECTS + 1):
                self.check(url, hop)
                with self.client.stream("GET", url) as response:
                    location = response.headers.get("location")
                    if response.status_code not in _REDIRECT_STATUSES or not location:
                        return self._read(response, sink)
                try:
                    url = str(httpx.URL(url).join(location))
                except httpx.InvalidURL as exc:
                    raise self.error(f"redirect {hop + 1} has an invalid Location ({exc})") from None
        except httpx.TimeoutException as exc:
            raise self.error(f"no answer within {self.timeout:g} s ({type(exc).__name__})", retryable=True) from exc
        except httpx.TransportError as exc:
            # Connect errors, dropped connections, truncated bodies: all worth another try.
            raise self.error(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        raise self.error(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)")

    def _read(self, response: httpx.Response, sink: IO[bytes]) -> _Fetched:
        status = response.status_code
        if status >= 300:
            retry_after = parse_retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
            reason = "not found (the URL may have expired)" if status in (403, 404, 410) else "error status"
            raise self.error(
                reason,
                retryable=status >= 500 or status in _RETRYABLE_STATUSES,
                retry_after=retry_after,
                status_code=status,
            )
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise self.error(f"{int(declared)} bytes announced, more than the {self.max_bytes}-byte cap")
        digest = hashlib.sha256()
        size = 0
        for chunk in response.iter_bytes(CHUNK_BYTES):
            size += len(chunk)
            if size > self.max_bytes:
                raise self.error(f"body exceeds the {self.max_bytes}-byte cap")
            digest.update(chunk)
            sink.write(chunk)
        if size == 0:
            raise self.error("empty body", retryable=True, status_code=status)
        sink.flush()
        return _Fetched(response.headers.get("content-type", ""), size, digest.hexdigest())

    def run(self, sink: IO[bytes], policy: RetryPolicy) -> _Fetched:
        import tenacity

        attempts = 0
        try:
            for attempt in tenacity.Retrying(
                sleep=lambda seconds: _sleep(seconds),
                **policy.tenacity_kwargs(
                    lambda e: isinstance(e, ResultDownloadError) and e.retryable, "Result download", log
                ),
            ):
                with attempt:
                    attempts += 1
                    return self.once(sink)
        except ResultDownloadError as exc:
            if attempts > 1:
                raise ResultDownloadError(
                    f"{exc.message} (gave up after {attempts} attempts)",
                    task_id=exc.task_id,
                    url=exc.url,
                    retryable=exc.retryable,
                    status_code=exc.status_code,
                ) from exc
            raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


# ------------------------------------------------------------------------------------------------ store


def _task_record(record: Any) -> TaskRecord:
    parsed: TaskRecord
    if isinstance(record, TaskRecord):
        parsed = record
    elif isinstance(record, Mapping):
        try:
            parsed = TaskRecord.from_dict(record)
        except KeyError as exc:
            raise ValueError(f"record is not a TaskRecord.to_dict(): missing {exc}") from None
    else:
        raise ValueError(f"record must be a TaskRecord dict, got {type(record).__name__}")
    if not parsed.state.is_success:
        raise ValueError(f"LiangXin task {parsed.task_id} is {parsed.state.value}; only successful tasks have results")
    return parsed


def _check_limits(timeout: Any, max_bytes: Any) -> None:
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a finite number > 0, got {timeout!r}")
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be an integer > 0, got {max_bytes!r}")


@contextlib.contextmanager
def _download_client(timeout: float, verify_ssl: bool) -> Iterator[httpx.Client]:
    import httpx

    from airflow_provider_liangxin.hooks.liangxin import shared_ssl_context, user_agent

    with httpx.Client(
        verify=shared_ssl_context() if verify_ssl else False,
        headers={"User-Agent": user_agent()},
        follow_redirects=False,  # _Download follows them itself, checking each hop
        timeout=httpx.Timeout(timeout),
    ) as client:
        yield client


@dataclass(frozen=True)
class _Destination:
    """Where one task's files go: the folder, its OS path when local, and the task's file-name stem."""

    directory: StoragePath
    local: str | None
    stem: str

    @classmethod
    def prepare(cls, output_path: Any, task_id: str) -> _Destination:
        directory = _storage_path(output_path)
        local = _local_dir(directory)
        stem = stored_stem(task_id)
        if local is not None:
            os.makedirs(local, exist_ok=True)
            _remove_stale_parts(local, stem)
        return cls(directory, local, stem)

    def store(self, download: _Download, policy: RetryPolicy) -> tuple[_Fetched, StoragePath]:
        """Download fully first, then put the bytes under their final name (renamed locally, copied otherwise)."""
        base = f"{self.stem}_{download.index}"

        def final_name(fetched: _Fetched) -> str:
            return f"{base}.{extension_for(fetched.content_type, download.url)}"

        if self.local is not None:
            fetched, name = _write_local_atomically(self.local, base, lambda fh: download.run(fh, policy), final_name)
            return fetched, self.directory / name
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
            fetched = download.run(spool, policy)  # type: ignore[arg-type]
            target = self.directory / final_name(fetched)
            spool.seek(0)
            with target.open("wb") as fh:
                shutil.copyfileobj(spool, fh, CHUNK_BYTES)
        return fetched, target

    def write_sidecar(self, index: int, sidecar: Mapping[str, Any]) -> StoragePath:
        data = json.dumps(sidecar, indent=2, ensure_ascii=False).encode()
        return _write_bytes(self.directory, f"{self.stem}_{index}.json", data)


def _sidecar(task: TaskRecord, url: str, path: str, fetched: _Fetched) -> dict[str, Any]:
    raw_input = task.param.get("input")
    task_input: dict[str, Any] = dict(raw_input) if isinstance(raw_input, Mapping) else {}
    return {
        "task_id": task.task_id,
        "model": task.model,
        "prompt": task_input.get("prompt"),
        "seed": task_input.get("seed"),
        "input": task_input,
        "source_url": url,
        "path": path,
        "content_type": fetched.content_type,
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "create_time": task.create_time,
        "complete_time": task.complete_time,
        "downloaded_at": _utc_now_iso(),
    }


def store_results(
    record: Mapping[str, Any],
    output_path: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retry: Mapping[str, Any] | None = None,
    verify_ssl: bool = True,
    allow_private_hosts: bool = False,
    trusted_base_url: str | None = None,
) -> list[dict[str, Any]]:
    """Download every result URL of a successful task to ``<output_path>/<stem>_<i>.<ext>`` plus a JSON sidecar.

    :param record: ``TaskRecord.to_dict()`` of a ``success`` task.
    :param output_path: local path, ``file://``, ``ObjectStoragePath`` URL (``s3://conn_id@bucket/prefix``) or
        any fsspec URL.
    :param timeout: seconds allowed for each connect / read / write step of a download (not the whole body).
    :param max_bytes: a result larger than this aborts with :class:`ResultDownloadError` (not retried).
    :param retry: :class:`~airflow_provider_liangxin._api.RetryPolicy` settings for transient failures
        (5xx, 408, 429, connection errors, timeouts, truncated bodies, a failed DNS lookup).
    :param verify_ssl: verify the CDN's TLS certificate.
    :param allow_private_hosts: also download from loopback, private and reserved addresses (a private object
        store). Link-local and cloud-metadata addresses stay refused.
    :param trusted_base_url: the API's base URL; result URLs on its exact host and port are allowed even when
        it is private (the simulator on 127.0.0.1).
    :return: one dict per stored file: ``index``, ``path``, ``sidecar``, ``source_url``, ``content_type``,
        ``bytes``, ``sha256``.
    :raises ResultDownloadError: a URL failed for good or was refused; files stored before it are kept.
    """
    task = _task_record(record)
    _check_limits(timeout, max_bytes)
    destinations = DestinationPolicy.build(allow_private_hosts, trusted_base_url)
    policy = RetryPolicy.from_kwargs(retry)
    destination = _Destination.prepare(output_path, task.task_id)

    with _download_client(timeout, verify_ssl) as client:
        downloads = [
            _Download(
                client,
                task_id=task.task_id,
                index=index,
                url=url,
                max_bytes=max_bytes,
                timeout=timeout,
                destinations=destinations,
            )
            for index, url in enumerate(task.result_urls)
        ]
        # One by one, in order: a failure keeps the files stored before it (an Airflow retry redoes them all).
        return [_store_one(destination, download, task, policy) for download in downloads]


def _store_one(destination: _Destination, download: _Download, task: TaskRecord, policy: RetryPolicy) -> dict[str, Any]:
    """Download one result, store it and its sidecar, log one line; the ``stored`` entry for it."""
    fetched, target = destination.store(download, policy)
    path = _path_uri(target)
    sidecar_path = destination.write_sidecar(download.index, _sidecar(task, download.url, path, fetched))
    log.info(
        "Stored result %d/%d of LiangXin task %s at %s (%d bytes, sha256 %s…)",
        download.index + 1,
        len(task.result_urls),
        task.task_id,
        path,
        fetched.size,
        fetched.sha256[:12],
    )
    return {
        "index": download.index,
        "path": path,
        "sidecar": _path_uri(sidecar_path),
        "source_url": download.url,
        "content_type": fetched.content_type,
        "bytes": fetched.size,
        "sha256": fetched.sha256,
    }
