"""Download a finished task's result URLs into durable storage, each with a JSON sidecar (worker side only).

LiangXin result URLs expire after about a day, so the operator copies them to a user-given ``output_path``: a
local path (``/data/out`` or ``file:///data/out``), any scheme Airflow's ``ObjectStoragePath`` knows through a
provider (``s3://aws_default@bucket/prefix``, ``gs://...``), or any other fsspec URL (``memory://...``).

Each result is downloaded in full (streamed, size-capped, hashed, retried on transient failures) before anything
is written at its destination, so a failed download never leaves a partial file under the final name. Local
files are written to a hidden ``.part`` file and renamed; object stores get one plain write (a PUT is atomic).

Kept cheap to import (the operator module imports it while DAGs are parsed): httpx, tenacity, fsspec and the
Airflow storage classes are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any
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

CONTENT_TYPE_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
}
_SUFFIX_ALIASES = {"jpeg": "jpg"}
_SAFE_SUFFIX = re.compile(r"^[a-z0-9]{1,8}$")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_RETRYABLE_STATUSES = frozenset({408, 429})

#: A path object: ``airflow.sdk.ObjectStoragePath`` or a ``upath.UPath`` (both pathlib-like over fsspec).
StoragePath = Any

#: How retries sleep; a module attribute so tests can record the waits instead of sleeping.
_sleep: Callable[[float], None] = time.sleep


class ResultDownloadError(LiangxinError):
    """A result URL could not be downloaded (error status, timeout, size cap); the message names taskId and URL.

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
    """File extension from the Content-Type, else from the URL path's suffix, else ``bin``."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in CONTENT_TYPE_EXTENSIONS:
        return CONTENT_TYPE_EXTENSIONS[mime]
    try:
        suffix = PurePosixPath(urlsplit(url).path).suffix.lstrip(".").lower()
    except ValueError:
        suffix = ""
    suffix = _SUFFIX_ALIASES.get(suffix, suffix)
    return suffix if _SAFE_SUFFIX.match(suffix) else "bin"


def _file_stem(task_id: str) -> str:
    """A taskId made safe as a file name: it comes from the API and must not be able to escape the folder."""
    stem = _UNSAFE_NAME_CHARS.sub("_", task_id).lstrip("._-")[:150]
    return stem or "task"


def _utc_now_iso() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------- storage


def _airflow_has_fs(scheme: str) -> bool:
    try:
        from airflow.sdk.io.fs import has_fs
    except ImportError:  # pragma: no cover - older layouts
        try:
            from airflow.io import has_fs  # type: ignore[no-redef,attr-defined]
        except ImportError:
            return scheme in ("file", "local")
    return bool(has_fs(scheme))


def _object_storage_path(url: str) -> StoragePath:
    try:
        from airflow.sdk import ObjectStoragePath
    except ImportError:  # pragma: no cover - Airflow 2 layout
        from airflow.io.path import ObjectStoragePath  # type: ignore[no-redef]
    return ObjectStoragePath(url)


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
    in_airflow = _airflow_has_fs(scheme or "file")
    if not in_airflow and "@" in parts.netloc:
        raise ValueError(
            f"output_path {text!r} names an Airflow connection, but no installed provider registers "
            f"an ObjectStoragePath filesystem for {scheme!r} (install the provider for that storage)"
        )
    try:
        if in_airflow:
            path = _object_storage_path(text)
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


def _ensure_local_dir(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)


def _replace_local(directory: str, name: str, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``name`` in ``directory`` through a hidden temporary file renamed into place."""
    part = os.path.join(directory, f".{name}.part-{uuid.uuid4().hex[:8]}")
    try:
        with open(part, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise


def _write_bytes(directory: StoragePath, name: str, data: bytes) -> StoragePath:
    local = _local_dir(directory)
    if local is not None:
        _replace_local(local, name, lambda fh: fh.write(data))
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
            _ensure_local_dir(local)
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
    """One result URL: one attempt at a time into a rewindable sink, retried with tenacity."""

    def __init__(
        self, client: httpx.Client, *, task_id: str, index: int, url: str, max_bytes: int, timeout: float
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.index = index
        self.url = url
        self.safe_url = redact_url(url)
        self.max_bytes = max_bytes
        self.timeout = timeout

    def error(self, reason: str, *, retryable: bool = False, **kwargs: Any) -> ResultDownloadError:
        return ResultDownloadError(
            f"cannot download result {self.index} of LiangXin task {self.task_id} from {self.safe_url}: {reason}",
            task_id=self.task_id,
            url=self.safe_url,
            retryable=retryable,
            **kwargs,
        )

    def once(self, sink: IO[bytes]) -> _Fetched:
        import httpx

        sink.seek(0)
        sink.truncate()
        try:
            with self.client.stream("GET", self.url) as response:
                return self._read(response, sink)
        except httpx.TimeoutException as exc:
            raise self.error(f"no answer within {self.timeout:g} s ({type(exc).__name__})", retryable=True) from exc
        except httpx.TransportError as exc:
            # Connect errors, dropped connections, truncated bodies: all worth another try.
            raise self.error(f"{type(exc).__name__}: {exc}", retryable=True) from exc

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


def store_results(
    record: Mapping[str, Any],
    output_path: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retry: Mapping[str, Any] | None = None,
    verify_ssl: bool = True,
) -> list[dict[str, Any]]:
    """Download every result URL of a successful task to ``<output_path>/<taskId>_<i>.<ext>`` plus a JSON sidecar.

    :param record: ``TaskRecord.to_dict()`` of a ``success`` task.
    :param output_path: local path, ``file://``, ``ObjectStoragePath`` URL (``s3://conn_id@bucket/prefix``) or
        any fsspec URL.
    :param timeout: seconds allowed for each connect / read / write step of a download (not the whole body).
    :param max_bytes: a result larger than this aborts with :class:`ResultDownloadError` (not retried).
    :param retry: :class:`~airflow_provider_liangxin._api.RetryPolicy` settings for transient failures
        (5xx, 408, 429, connection errors, timeouts, truncated bodies).
    :param verify_ssl: verify the CDN's TLS certificate.
    :return: one dict per stored file: ``index``, ``path``, ``sidecar``, ``source_url``, ``content_type``,
        ``bytes``, ``sha256``.
    :raises ResultDownloadError: a URL failed for good; files stored before it are kept.
    """
    import httpx

    from airflow_provider_liangxin.hooks.liangxin import shared_ssl_context, user_agent

    task = _task_record(record)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"timeout must be a number > 0, got {timeout!r}")
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be an integer > 0, got {max_bytes!r}")
    policy = RetryPolicy.from_kwargs(retry)
    directory = _storage_path(output_path)
    local = _local_dir(directory)
    if local is not None:
        _ensure_local_dir(local)

    raw_input = task.param.get("input")
    task_input: dict[str, Any] = dict(raw_input) if isinstance(raw_input, Mapping) else {}
    stem = _file_stem(task.task_id)
    stored: list[dict[str, Any]] = []
    with httpx.Client(
        verify=shared_ssl_context() if verify_ssl else False,
        headers={"User-Agent": user_agent()},
        follow_redirects=True,
        timeout=httpx.Timeout(timeout),
    ) as client:
        for index, url in enumerate(task.result_urls):
            download = _Download(
                client, task_id=task.task_id, index=index, url=url, max_bytes=max_bytes, timeout=timeout
            )
            if urlsplit(url).scheme.lower() not in ("http", "https"):
                raise download.error("not an http(s) URL")
            fetched, target = _download_and_store(download, policy, directory, local, stem)
            sidecar = {
                "task_id": task.task_id,
                "model": task.model,
                "prompt": task_input.get("prompt"),
                "seed": task_input.get("seed"),
                "input": task_input,
                "source_url": url,
                "path": _path_uri(target),
                "content_type": fetched.content_type,
                "sha256": fetched.sha256,
                "bytes": fetched.size,
                "create_time": task.create_time,
                "complete_time": task.complete_time,
                "downloaded_at": _utc_now_iso(),
            }
            sidecar_path = _write_bytes(
                directory, f"{stem}_{index}.json", json.dumps(sidecar, indent=2, ensure_ascii=False).encode()
            )
            log.info(
                "Stored result %d/%d of LiangXin task %s at %s (%d bytes, sha256 %s…)",
                index + 1,
                len(task.result_urls),
                task.task_id,
                sidecar["path"],
                fetched.size,
                fetched.sha256[:12],
            )
            stored.append(
                {
                    "index": index,
                    "path": sidecar["path"],
                    "sidecar": _path_uri(sidecar_path),
                    "source_url": url,
                    "content_type": fetched.content_type,
                    "bytes": fetched.size,
                    "sha256": fetched.sha256,
                }
            )
    return stored


def _download_and_store(
    download: _Download, policy: RetryPolicy, directory: StoragePath, local: str | None, stem: str
) -> tuple[_Fetched, StoragePath]:
    """Download fully first, then put the bytes under their final name (renamed locally, copied otherwise)."""
    if local is not None:
        part = os.path.join(local, f".{stem}_{download.index}.part-{uuid.uuid4().hex[:8]}")
        try:
            with open(part, "w+b") as fh:
                fetched = download.run(fh, policy)
                os.fsync(fh.fileno())
            name = f"{stem}_{download.index}.{extension_for(fetched.content_type, download.url)}"
            os.replace(part, os.path.join(local, name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        return fetched, directory / name

    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        fetched = download.run(spool, policy)  # type: ignore[arg-type]
        name = f"{stem}_{download.index}.{extension_for(fetched.content_type, download.url)}"
        target = directory / name
        spool.seek(0)
        with target.open("wb") as fh:
            shutil.copyfileobj(spool, fh, CHUNK_BYTES)
    return fetched, target
