"""The result view's routes, added to the plugin's FastAPI app at ``/liangxin`` (docs/result-view.md).

``GET /liangxin/v1/results?dag_id=&run_id=&task_id=&map_index=`` the page (``&item=N`` one batch item,
``&format=json`` the same as data); ``GET /liangxin/v1/results/file?...&item=N&index=I`` one image or video
(``&thumb=1`` a thumbnail). Both check the caller exactly as core's task instance and XCom routes do, through core's
own dependencies: no login, 401; no read access to that DAG, 403. A file is named by its position in the task
instance's XCom, never by a path; a stored file is served only if its bytes match the sha256 its task recorded (see
``result_view``); a file that was not stored is a redirect to LiangXin's result URL.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from airflow_provider_liangxin._airflow_compat import ResultViewInternals, TaskInstanceFacts
from airflow_provider_liangxin.result_view import (
    FILE_ROUTE,
    RESULTS_ROUTE,
    XCOM_KEYS,
    FileRefused,
    PageContext,
    ResultView,
    ThumbnailCache,
    build_view,
    iter_spool,
    make_thumbnail,
    media_type,
    open_verified,
    read_sidecar,
    render_page,
    view_json,
)

log = logging.getLogger(__name__)

#: The page loads images from itself and, for results that were not stored, from LiangXin's CDN (http(s)); it runs
#: no script, submits no form, and may be framed only by the Airflow UI (the task instance tab).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' http: https:; media-src 'self' http: https:; "
    "style-src 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: A file is addressed by its content (the sha256 in its ETag), so the browser may keep it; never rendered as a page.
FILE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, max-age=86400",
}
#: Full files read at once per process (each up to 200 MiB through a spool): more requests wait their turn.
READ_CONCURRENCY = 4
#: A grid of 200 thumbnails asks for the same task instance 200 times in a second or two: its row and XComs are
#: read once and kept this long for file requests (the page itself always reads them afresh; auth is per request).
VIEW_CACHE_SECONDS = 10.0
VIEW_CACHE_ENTRIES = 256


class ResultViewService:
    """The routes' logic over the compat internals, so tests can give it fakes."""

    def __init__(self, internals: ResultViewInternals, cache: ThumbnailCache | None = None) -> None:
        self.internals = internals
        self.cache = cache or ThumbnailCache()
        self.reads = asyncio.Semaphore(READ_CONCURRENCY)
        self.views: collections.OrderedDict[tuple[str, str, str, int], tuple[float, TaskInstanceFacts, ResultView]]
        self.views = collections.OrderedDict()
        self.loads = 0

    async def load(self, ctx: PageContext, *, cached: bool = False) -> tuple[TaskInstanceFacts, ResultView]:
        key = (ctx.dag_id, ctx.run_id, ctx.task_id, ctx.map_index)
        hit = self.views.get(key) if cached else None
        if hit is not None and hit[0] > time.monotonic():
            return hit[1], hit[2]
        facts, view = await self._read(ctx)
        self.views[key] = (time.monotonic() + VIEW_CACHE_SECONDS, facts, view)
        self.views.move_to_end(key)
        while len(self.views) > VIEW_CACHE_ENTRIES:
            self.views.popitem(last=False)
        return facts, view

    async def _read(self, ctx: PageContext) -> tuple[TaskInstanceFacts, ResultView]:
        self.loads += 1

        def read() -> tuple[TaskInstanceFacts | None, dict[str, Any]]:
            facts = self.internals.task_instance(ctx.dag_id, ctx.run_id, ctx.task_id, ctx.map_index)
            if facts is None:
                return None, {}
            return facts, self.internals.xcoms(ctx.dag_id, ctx.run_id, ctx.task_id, ctx.map_index, XCOM_KEYS)

        facts, xcoms = await asyncio.to_thread(read)
        if facts is None:
            raise HTTPException(404, "No such task instance")
        return facts, build_view(xcoms)

    async def page(self, ctx: PageContext, item: int | None, fmt: str) -> Response:
        facts, view = await self.load(ctx)
        ctx = PageContext(
            ctx.dag_id,
            ctx.run_id,
            ctx.task_id,
            ctx.map_index,
            ti_state=facts.state,
            operator=facts.operator,
            try_number=facts.try_number,
            start_date=facts.start_date,
            end_date=facts.end_date,
            duration=facts.duration,
        )
        if fmt == "json":
            return JSONResponse(view_json(ctx, view), headers={"Cache-Control": "no-store"})
        if item is not None and not (view.kind == "batch" and 0 <= item < len(view.items)):
            raise HTTPException(404, "No such item")
        focus = item if view.kind == "batch" else (0 if view.kind == "single" else None)
        sidecars: dict[int, Any] = {}
        if focus is not None:
            shown = view.items[focus]
            for file in shown.files:
                if file.sidecar:
                    sidecars[file.index] = await asyncio.to_thread(read_sidecar, shown, file)
        page = render_page(ctx, view, focus=item, sidecars=sidecars)
        return HTMLResponse(page, headers=PAGE_HEADERS)

    async def file(self, ctx: PageContext, item: int, index: int, thumb: bool, if_none_match: str | None) -> Response:
        _facts, view = await self.load(ctx, cached=True)
        if view.kind not in ("single", "batch") or not 0 <= item < len(view.items):
            raise HTTPException(404, "No such item")
        chosen = next((f for f in view.items[item].files if f.index == index), None)
        if chosen is None:
            raise HTTPException(404, "No such file")
        if not chosen.path:
            if not chosen.url:
                raise HTTPException(404, "No such file")
            # Not stored: the browser fetches LiangXin's result URL itself while it is valid (no proxying, so the
            # api-server never connects to a URL taken from XCom).
            return RedirectResponse(chosen.url, status_code=302, headers={"Referrer-Policy": "no-referrer"})
        sha = (chosen.sha256 or "").lower()
        etag = f'"{sha}{"-thumb" if thumb else ""}"'
        if sha and if_none_match == etag:
            return Response(status_code=304, headers={**FILE_HEADERS, "ETag": etag})
        if thumb:
            cached = self.cache.get(sha)
            if cached is not None:
                return Response(cached, media_type="image/jpeg", headers={**FILE_HEADERS, "ETag": etag})
        async with self.reads:
            try:
                spool = await asyncio.to_thread(open_verified, chosen.path, chosen.sha256)
            except FileRefused as exc:
                log.warning(
                    "LiangXin result view: %s.%s item %d file %d refused: %s", ctx.dag_id, ctx.task_id, item, index, exc
                )
                raise HTTPException(404, "File not available") from None
            if thumb and chosen.kind == "image":
                data = await asyncio.to_thread(self._thumbnail, sha, spool)
                if data is not None:
                    spool.close()
                    return Response(data, media_type="image/jpeg", headers={**FILE_HEADERS, "ETag": etag})
                spool.seek(0)  # no Pillow, or not decodable: the full image, as stored
        mime = media_type(chosen.path) or "application/octet-stream"
        headers = {**FILE_HEADERS, "ETag": f'"{sha}"'}
        if mime == "application/octet-stream":
            headers["Content-Disposition"] = "attachment"
        return StreamingResponse(iter_spool(spool), media_type=mime, headers=headers)

    def _thumbnail(self, sha: str, spool: Any) -> bytes | None:
        with self.cache.slots:
            cached = self.cache.get(sha)  # made by another request while this one waited
            if cached is not None:
                return cached
            data = make_thumbnail(spool)
            if data is not None:
                self.cache.put(sha, data)
                self.cache.made += 1
            return data


def parse_map_index(raw: str) -> int:
    """``map_index`` as the task instance tab sends it: the UI leaves ``{MAP_INDEX}`` unreplaced for a task that is
    not mapped (Airflow 3.3), which means -1; anything else must be an integer >= -1 (else 422)."""
    if raw in ("", "{MAP_INDEX}"):
        return -1
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(422, "map_index must be an integer >= -1") from None
    if value < -1:
        raise HTTPException(422, "map_index must be an integer >= -1")
    return value


def add_result_routes(app: FastAPI, service: ResultViewService, auth: list[Callable[..., Any]]) -> None:
    """The two routes, behind ``auth`` (core's dependencies; tests pass their own)."""
    dependencies = [Depends(dependency) for dependency in auth]

    def context(dag_id: str, run_id: str, task_id: str, map_index: str) -> PageContext:
        return PageContext(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=parse_map_index(map_index))

    @app.get(RESULTS_ROUTE, dependencies=dependencies)
    async def results_page(
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str = "-1",
        item: int | None = Query(None, ge=0),
        format: str = Query("html", pattern="^(html|json)$"),
    ) -> Response:
        return await service.page(context(dag_id, run_id, task_id, map_index), item, format)

    @app.get(FILE_ROUTE, dependencies=dependencies)
    async def result_file(
        request: Request,
        dag_id: str,
        run_id: str,
        task_id: str,
        item: int = Query(..., ge=0),
        index: int = Query(..., ge=0),
        map_index: str = "-1",
        thumb: bool = False,
    ) -> Response:
        ctx = context(dag_id, run_id, task_id, map_index)
        return await service.file(ctx, item, index, thumb, request.headers.get("if-none-match"))


__all__ = ["FILE_HEADERS", "PAGE_HEADERS", "ResultViewService", "add_result_routes", "parse_map_index"]
