"""The result view's pieces that need neither FastAPI nor Airflow internals: where the view lives, what it shows of
a task instance's XComs, how it reads a stored file, the thumbnails and their cache, and the HTML.

The operator's extra link (``view_url``) is built in the worker while a DAG runs, so this module imports only the
standard library at import time; storage, Pillow and the results module are imported where they are used.

Why a stored file is served only when its bytes match the sha256 its task recorded: the paths come from XCom, and
anyone who may write a DAG's XCom (its tasks, or a user with XCom edit rights) could otherwise name any file the
api-server can read (its ``airflow.cfg``). With the check, the view only ever returns bytes whose hash the XCom's
writer already knew, so nothing is disclosed that they did not have.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import html
import json
import logging
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

log = logging.getLogger(__name__)

#: The view, below the plugin's ``/liangxin`` prefix; the task instance is named in the query string (run ids
#: hold ``:`` and ``+``, and a ``/`` in a path parameter would not survive routing).
RESULTS_ROUTE = "/v1/results"
FILE_ROUTE = "/v1/results/file"
#: XComs the view reads: the result (single task or batch list), a failed batch's items, a failed task's reason,
#: and the taskId pushed right after createTask.
XCOM_KEYS = ["return_value", "liangxin_batch_results", "liangxin_failure", "task_id"]
#: Longest side of a thumbnail in pixels: four columns of a grid on a laptop screen at 2x density.
THUMBNAIL_SIDE = 320
#: Images with more pixels than this get no thumbnail (the full image is served instead): decoding is the cost.
MAX_THUMBNAIL_SOURCE_PIXELS = 64_000_000
#: Thumbnails kept in memory per api-server process (about 15 KB each: some 4,000 thumbnails).
THUMBNAIL_CACHE_BYTES = 64 * 1024 * 1024
#: Thumbnails made at once per process; more requests wait (a grid of 200 asks for 200 at once).
THUMBNAIL_CONCURRENCY = 2
#: A stored file larger than this is not served (the operator's own default cap).
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Sidecars are a few KB; a bigger "sidecar" is not one.
MAX_SIDECAR_BYTES = 64 * 1024
#: LiangXin result URLs expire after about a day (docs/results.md).
RESULT_URL_LIFETIME = datetime.timedelta(hours=24)
_CHUNK = 256 * 1024
_SPOOL_MEMORY = 8 * 1024 * 1024


def view_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1, base_url: str | None = None) -> str:
    """The view's same-origin URL for one task instance (what the extra link opens).

    ``base_url`` is ``[api] base_url``: only its path is kept, for an api-server served below a prefix
    (``https://host/airflow`` gives ``/airflow/liangxin/...``); the UI draws same-origin links only.
    """
    prefix = urlsplit(base_url).path.rstrip("/") if base_url else ""
    query = urlencode({"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index})
    return f"{prefix}/liangxin{RESULTS_ROUTE}?{query}"


def media_type(path: str | None) -> str | None:
    """The type a stored file is served as, from its extension (the operator stores only these)."""
    if not path:
        return None
    from airflow_provider_liangxin.results import MEDIA_TYPES

    name = path.rsplit("/", 1)[-1].split("?", 1)[0]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return MEDIA_TYPES.get(ext)


# ------------------------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class ResultFile:
    """One image or video: stored (``path`` and its ``sha256``) or only at LiangXin (``url``)."""

    index: int
    path: str | None = None
    sha256: str | None = None
    sidecar: str | None = None
    url: str | None = None
    content_type: str | None = None
    size: int | None = None

    @property
    def kind(self) -> str:
        """``image``, ``video`` or ``file``: from the stored extension, else the URL's, else the content type."""
        mime = media_type(self.path) or media_type(self.url) or (self.content_type or "").split(";")[0].strip()
        return "video" if mime.startswith("video/") else "image" if mime.startswith("image/") else "file"


@dataclass(frozen=True)
class ResultItem:
    """One LiangXin task of the task instance (the only one, or one batch item)."""

    position: int
    task_id: str | None
    model: str | None
    state: str
    fail_code: str = ""
    fail_msg: str = ""
    prompt: str | None = None
    create_time: int | None = None
    complete_time: int | None = None
    cost_time: int | None = None
    files: list[ResultFile] = field(default_factory=list)

    def url_expired(self, now: datetime.datetime) -> bool:
        """Is LiangXin's result URL probably gone (a day after completion)?"""
        if not isinstance(self.complete_time, int | float) or isinstance(self.complete_time, bool):
            return False
        done = datetime.datetime.fromtimestamp(self.complete_time / 1000, datetime.UTC)
        return now - done > RESULT_URL_LIFETIME


@dataclass(frozen=True)
class ResultView:
    """What the view shows: ``single``, ``batch``, ``created`` (a taskId only) or ``none``."""

    kind: str
    items: list[ResultItem]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _files(entry: Mapping[str, Any]) -> list[ResultFile]:
    from airflow_provider_liangxin.results import is_web_url

    stored = entry.get("stored")
    if isinstance(stored, list) and stored:
        files = []
        for i, s in enumerate(stored):
            if not isinstance(s, Mapping):
                continue
            files.append(
                ResultFile(
                    index=_int(s.get("index")) if _int(s.get("index")) is not None else i,  # type: ignore[arg-type]
                    path=s.get("path") if isinstance(s.get("path"), str) else None,
                    sha256=s.get("sha256") if isinstance(s.get("sha256"), str) else None,
                    sidecar=s.get("sidecar") if isinstance(s.get("sidecar"), str) else None,
                    url=s.get("source_url") if is_web_url(s.get("source_url")) else None,
                    content_type=s.get("content_type") if isinstance(s.get("content_type"), str) else None,
                    size=_int(s.get("bytes")),
                )
            )
        return files
    urls = entry.get("result_urls")
    if not isinstance(urls, list):
        return []
    return [ResultFile(index=i, url=url) for i, url in enumerate(urls) if is_web_url(url)]


def _item(position: int, entry: Mapping[str, Any]) -> ResultItem:
    param = entry.get("param")
    raw_input = param.get("input") if isinstance(param, Mapping) else None
    prompt = raw_input.get("prompt") if isinstance(raw_input, Mapping) else entry.get("prompt")
    return ResultItem(
        position=position,
        task_id=_text(entry.get("task_id")) or None,
        model=_text(entry.get("model")) or None,
        state=_text(entry.get("state")) or "unknown",
        fail_code=_text(entry.get("fail_code")),
        fail_msg=_text(entry.get("fail_msg")),
        prompt=prompt if isinstance(prompt, str) else None,
        create_time=_int(entry.get("create_time")),
        complete_time=_int(entry.get("complete_time")),
        cost_time=_int(entry.get("cost_time")),
        files=_files(entry),
    )


def build_view(xcoms: Mapping[str, Any]) -> ResultView:
    """The view of a task instance from its XComs (see ``XCOM_KEYS``); anything malformed is left out."""
    value = xcoms.get("return_value")
    batch = value if isinstance(value, list) else xcoms.get("liangxin_batch_results")
    if isinstance(batch, list) and all(isinstance(e, Mapping) for e in batch) and batch:
        return ResultView("batch", [_item(i, e) for i, e in enumerate(batch)])
    if isinstance(value, Mapping) and value.get("task_id") and value.get("state"):
        return ResultView("single", [_item(0, value)])
    failure = xcoms.get("liangxin_failure")
    if isinstance(failure, Mapping) and failure.get("task_id"):
        return ResultView("single", [_item(0, {"state": "fail", **failure})])
    task_id = xcoms.get("task_id") or (value if isinstance(value, str) else None)
    if isinstance(task_id, str) and task_id:
        return ResultView("created", [ResultItem(0, task_id, None, "unknown")])
    return ResultView("none", [])


# ------------------------------------------------------------------------------------------------ storage


class FileRefused(Exception):
    """A stored file cannot be served: missing, too large, or not the bytes its task recorded."""


def open_verified(path: str, sha256: str | None, max_bytes: int = MAX_FILE_BYTES) -> IO[bytes]:
    """The stored file's bytes in a rewound spool (memory, then a temp file), only if they hash to ``sha256``."""
    from airflow_provider_liangxin.results import _storage_path

    if not sha256 or len(sha256) != 64:
        raise FileRefused("no sha256 recorded for this file")
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115 (returned open)
    digest = hashlib.sha256()
    size = 0
    try:
        with _storage_path(path).open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FileRefused(f"larger than {max_bytes} bytes")
                digest.update(chunk)
                spool.write(chunk)
    except FileRefused:
        spool.close()
        raise
    except Exception as exc:
        spool.close()
        raise FileRefused(f"cannot read it: {type(exc).__name__}") from exc
    if digest.hexdigest() != sha256.lower():
        spool.close()
        raise FileRefused("its bytes are not the ones the task stored")
    spool.seek(0)
    return spool  # type: ignore[return-value]


def iter_spool(spool: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := spool.read(_CHUNK):
            yield chunk
    finally:
        spool.close()


def read_sidecar(item: ResultItem, file: ResultFile) -> dict[str, Any] | None:
    """The file's JSON sidecar, if it is one: a small JSON object next to the file, naming the same taskId."""
    from airflow_provider_liangxin.results import _storage_path

    if not file.sidecar or not file.path or not item.task_id:
        return None
    if file.sidecar.rsplit("/", 1)[0] != file.path.rsplit("/", 1)[0] or not file.sidecar.endswith(".json"):
        return None
    try:
        with _storage_path(file.sidecar).open("rb") as fh:
            raw = fh.read(MAX_SIDECAR_BYTES + 1)
        data = json.loads(raw) if len(raw) <= MAX_SIDECAR_BYTES else None
    except Exception:
        return None
    if not isinstance(data, dict) or data.get("task_id") != item.task_id:
        return None
    return data


# ------------------------------------------------------------------------------------------------ thumbnails


_pillow_missing_logged = False


def make_thumbnail(spool: IO[bytes], side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A JPEG no larger than ``side`` on its longest side, or None (no Pillow, not an image, too many pixels)."""
    global _pillow_missing_logged
    try:
        from PIL import Image
    except ImportError:
        if not _pillow_missing_logged:
            _pillow_missing_logged = True
            log.warning(
                "LiangXin result view: Pillow is not installed, so grids load full images; "
                "install airflow-provider-liangxin[thumbnails]"
            )
        return None
    import io

    try:
        with Image.open(spool) as img:
            width, height = img.size
            if width * height > MAX_THUMBNAIL_SOURCE_PIXELS:
                return None
            img.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, the main saving
            img.thumbnail((side, side))
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                out_img = flat
            else:
                out_img = img.convert("RGB")
            out = io.BytesIO()
            out_img.save(out, "JPEG", quality=80, optimize=True)
            return out.getvalue()
    except Exception as exc:
        log.info("LiangXin result view: no thumbnail (%s: %s)", type(exc).__name__, exc)
        return None


class ThumbnailCache:
    """Thumbnails by the source's sha256 (its content, so never stale), least recently used out first."""

    def __init__(self, max_bytes: int = THUMBNAIL_CACHE_BYTES, concurrency: int = THUMBNAIL_CONCURRENCY) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.lock = threading.Lock()
        #: Bounds the decoding work: a grid of 200 makes at most this many at a time.
        self.slots = threading.BoundedSemaphore(concurrency)
        self.made = 0

    def get(self, key: str) -> bytes | None:
        with self.lock:
            data = self.entries.get(key)
            if data is not None:
                self.entries.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self.entries[key] = data
            self.size += len(data)
            while self.size > self.max_bytes:
                _, evicted = self.entries.popitem(last=False)
                self.size -= len(evicted)


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1a202c;background:#fff}
h1{font-size:18px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px}
.sub{color:#4a5568;margin-bottom:12px}
table.kv{border-collapse:collapse;margin:8px 0}table.kv td{padding:2px 12px 2px 0;vertical-align:top}
table.kv td:first-child{color:#4a5568;white-space:nowrap}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px;background:#e2e8f0}
.state-success{background:#c6f6d5;color:#22543d}.state-fail{background:#fed7d7;color:#822727}
.fail{border-left:4px solid #e53e3e;background:#fff5f5;padding:8px 12px;margin:10px 0}
.media img,.media video{max-width:100%;max-height:70vh;border:1px solid #e2e8f0;border-radius:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.cell{border:1px solid #e2e8f0;border-radius:6px;padding:6px;font-size:12px;overflow:hidden}
.cell img{width:100%;aspect-ratio:1/1;object-fit:cover;background:#f7fafc;border-radius:4px;display:block}
.cell .ph{width:100%;aspect-ratio:1/1;background:#f7fafc;border-radius:4px;display:flex;align-items:center;
justify-content:center;color:#a0aec0;text-align:center}
.cell-fail{border-color:#feb2b2;background:#fff5f5}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}pre{background:#f7fafc;padding:8px;overflow:auto}
.note{color:#744210;background:#fefcbf;padding:6px 10px;border-radius:4px;margin:8px 0}
a{color:#2b6cb0}
"""


def _ms(value: int | None) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(value: datetime.datetime | None) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _redact(url: str | None) -> str:
    if not url:
        return ""
    from airflow_provider_liangxin.results import redact_url

    return redact_url(url)


@dataclass(frozen=True)
class PageContext:
    """Who the page is about, and how its links are formed (relative to the view's own URL)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    ti_state: str | None = None
    operator: str | None = None
    try_number: int | None = None
    start_date: datetime.datetime | None = None
    end_date: datetime.datetime | None = None
    duration: float | None = None

    def query(self, **extra: Any) -> str:
        base = {"dag_id": self.dag_id, "run_id": self.run_id, "task_id": self.task_id, "map_index": self.map_index}
        return urlencode({**base, **extra})

    def file_href(self, item: int, index: int, thumb: bool = False) -> str:
        # Relative to .../liangxin/v1/results: resolves to .../liangxin/v1/results/file whatever the prefix.
        return "results/file?" + self.query(item=item, index=index, **({"thumb": 1} if thumb else {}))

    def item_href(self, item: int) -> str:
        return "results?" + self.query(item=item)


def _media(ctx: PageContext, item: ResultItem, file: ResultFile, now: datetime.datetime) -> str:
    src = _e(ctx.file_href(item.position, file.index))
    where = "" if file.path else "LiangXin's result URL"
    expired = not file.path and item.url_expired(now)
    note = (
        '<div class="note">Not stored (no <code>output_path</code>), and LiangXin\'s result URL has probably '
        "expired (a day after completion).</div>"
        if expired
        else ""
    )
    if file.kind == "video":
        body = f'<video controls preload="metadata" src="{src}"></video>'
    elif file.kind == "image" or not file.path:
        body = f'<a href="{src}"><img alt="result {file.index}" src="{src}"></a>'
    else:
        body = f'<a href="{src}">download</a>'
    source = f" ({where})" if where else ""
    return f'<div class="media">{note}{body}<div class="sub">result {file.index}{source}</div></div>'


def _item_table(item: ResultItem) -> str:
    rows = [
        ("LiangXin task", f"<code>{_e(item.task_id or '-')}</code>"),
        ("model", _e(item.model or "-")),
        ("state", f'<span class="state state-{_e(item.state)}">{_e(item.state)}</span>'),
    ]
    if item.prompt is not None:
        rows.append(("prompt", _e(item.prompt)))
    for name, when in (("created", item.create_time), ("completed", item.complete_time)):
        if when is not None:  # a failed task's XCom has no times
            rows.append((name, _ms(when)))
    if item.cost_time is not None:
        rows.append(("generation", f"{item.cost_time / 1000:.1f} s"))
    for file in item.files:
        if file.path:
            size = f" ({file.size:,} bytes)" if file.size else ""
            rows.append((f"stored {file.index}", f"<code>{_e(file.path)}</code>{size}"))
        elif file.url:
            rows.append((f"result URL {file.index}", f"<code>{_e(_redact(file.url))}</code>"))
    cells = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


def _failure(item: ResultItem) -> str:
    if item.state != "fail":
        return ""
    return (
        f'<div class="fail"><b>failCode</b> <code>{_e(item.fail_code or "-")}</code><br>'
        f"<b>failMsg</b> {_e(item.fail_msg or '-')}</div>"
    )


def _sidecars(sidecars: Mapping[int, Mapping[str, Any] | None]) -> str:
    parts = []
    for index, data in sorted(sidecars.items()):
        if data is None:
            parts.append(f"<h2>Sidecar {index}</h2><p>not readable</p>")
            continue
        shown = dict(data)
        if isinstance(shown.get("source_url"), str):
            shown["source_url"] = _redact(shown["source_url"])
        text = html.escape(json.dumps(shown, indent=2, ensure_ascii=False), quote=False)
        parts.append(f"<h2>Sidecar {index}</h2><pre>{text}</pre>")
    return "".join(parts)


def _cell(ctx: PageContext, item: ResultItem) -> str:
    file = item.files[0] if item.files else None
    href = _e(ctx.item_href(item.position))
    if file is not None and file.kind != "video":
        thumb = _e(ctx.file_href(item.position, file.index, thumb=True))
        picture = f'<img loading="lazy" decoding="async" alt="item {item.position}" src="{thumb}">'
    elif file is not None:
        picture = '<div class="ph">video</div>'
    else:
        picture = f'<div class="ph">{_e(item.fail_code or item.state)}</div>'
    css = " cell-fail" if item.state == "fail" else ""
    reason = f"<div>{_e(item.fail_msg[:120])}</div>" if item.state == "fail" else ""
    return (
        f'<div class="cell{css}"><a href="{href}">{picture}</a>'
        f'<div>#{item.position} <span class="state state-{_e(item.state)}">{_e(item.state)}</span></div>'
        f"<div><code>{_e(item.task_id or '-')}</code></div>{reason}</div>"
    )


def render_page(
    ctx: PageContext,
    view: ResultView,
    *,
    focus: int | None = None,
    sidecars: Mapping[int, Mapping[str, Any] | None] | None = None,
    now: datetime.datetime | None = None,
) -> str:
    """The whole page: one item in full (the single task, or ``focus`` of a batch), or the batch grid."""
    now = now or datetime.datetime.now(datetime.UTC)
    title = f"LiangXin result: {ctx.dag_id} / {ctx.task_id}"
    timing = f"try {ctx.try_number}" if ctx.try_number else ""
    duration = f", {ctx.duration:.1f} s" if ctx.duration is not None else ""
    header = (
        f"<h1>{_e(title)}</h1><div class=sub>run <code>{_e(ctx.run_id)}</code>"
        f"{'' if ctx.map_index < 0 else f', map index {ctx.map_index}'} · task instance "
        f'<span class="state state-{_e(ctx.ti_state)}">{_e(ctx.ti_state or "-")}</span> {_e(timing)} · '
        f"started {_when(ctx.start_date)}, ended {_when(ctx.end_date)}{duration}</div>"
    )
    body: list[str] = []
    if view.kind == "none":
        body.append("<p>No LiangXin task was created by this task instance (yet).</p>")
    elif view.kind == "created":
        item = view.items[0]
        body.append(
            f"<p>LiangXin task <code>{_e(item.task_id)}</code> was created; its result was not recorded here "
            "(a task with <code>wait_for_completion=False</code>, or one still running).</p>"
        )
    elif view.kind == "batch" and focus is None:
        ok = sum(1 for i in view.items if i.state == "success")
        body.append(f"<h2>{len(view.items)} items: {ok} succeeded, {len(view.items) - ok} not</h2>")
        body.append('<div class="grid">' + "".join(_cell(ctx, item) for item in view.items) + "</div>")
    else:
        position = focus or 0
        item = view.items[position]
        if view.kind == "batch":
            body.append(f'<p><a href="{_e("results?" + ctx.query())}">all items</a> · item {position}</p>')
        body.append(_failure(item))
        body.append(_item_table(item))
        body.extend(_media(ctx, item, f, now) for f in item.files)
        body.append(_sidecars(sidecars or {}))
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{header}{''.join(body)}</body></html>"
    )


def view_json(ctx: PageContext, view: ResultView) -> dict[str, Any]:
    """The same content as data (``?format=json``): for scripts and tests."""
    return {
        "dag_id": ctx.dag_id,
        "run_id": ctx.run_id,
        "task_id": ctx.task_id,
        "map_index": ctx.map_index,
        "task_instance_state": ctx.ti_state,
        "kind": view.kind,
        "items": [
            {
                "position": item.position,
                "task_id": item.task_id,
                "model": item.model,
                "state": item.state,
                "fail_code": item.fail_code,
                "fail_msg": item.fail_msg,
                "prompt": item.prompt,
                "create_time": item.create_time,
                "complete_time": item.complete_time,
                "files": [
                    {
                        "index": f.index,
                        "path": f.path,
                        "stored": f.path is not None,
                        "kind": f.kind,
                        "href": ctx.file_href(item.position, f.index),
                        "thumbnail": ctx.file_href(item.position, f.index, thumb=True),
                    }
                    for f in item.files
                ],
            }
            for item in view.items
        ],
    }


__all__: Sequence[str] = [
    "FILE_ROUTE",
    "RESULTS_ROUTE",
    "XCOM_KEYS",
    "FileRefused",
    "PageContext",
    "ResultFile",
    "ResultItem",
    "ResultView",
    "ThumbnailCache",
    "build_view",
    "make_thumbnail",
    "media_type",
    "open_verified",
    "read_sidecar",
    "render_page",
    "view_json",
    "view_url",
]
