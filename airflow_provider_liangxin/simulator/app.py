"""FastAPI routes of the simulator: the two API routes, the result files and the ``/_sim`` admin API.

Routes take the raw :class:`Request` and return prebuilt bytes: no pydantic models on the hot path, because
the point of the simulator is byte-exact answers at four-digit request rates.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_liangxin import __version__
from airflow_provider_liangxin._api import CREATE_TASK_PATH, RECORD_INFO_PATH
from airflow_provider_liangxin.simulator.config import SimulatorConfig
from airflow_provider_liangxin.simulator.faults import FaultConfig
from airflow_provider_liangxin.simulator.gate import DROP_KEY, TASK_ID_KEY, SimulatorGate
from airflow_provider_liangxin.simulator.images import render_mp4_placeholder, render_png
from airflow_provider_liangxin.simulator.lifecycle import SUCCESS
from airflow_provider_liangxin.simulator.service import Simulator, reject_json_constant
from airflow_provider_liangxin.simulator.shapes import JSON_CONTENT_TYPE, Answer, business_error
from airflow_provider_liangxin.simulator.state import dumps, now_ms


def create_app(config: SimulatorConfig | None = None) -> FastAPI:
    """A fresh app with its own :class:`Simulator` (``app.state.simulator``); nothing is shared globally."""
    simulator = Simulator(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await simulator.start()
        try:
            yield
        finally:
            await simulator.stop()

    app = FastAPI(
        title="LiangXin Market API simulator",
        version=__version__,
        description="A local stand-in for the LiangXin Market API (createTask / recordInfo), with faults.",
        lifespan=lifespan,
    )
    app.state.simulator = simulator
    app.add_middleware(SimulatorGate, simulator=simulator)
    _add_error_handlers(app)
    _add_api_routes(app, simulator)
    _add_file_routes(app, simulator)
    _add_admin_routes(app, simulator)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Unknown routes, wrong methods and crashes answer in LiangXin's ``{code,msg,data}`` shape, not FastAPI's
    ``{"detail": ...}``: clients parse one shape for every error the API side can produce."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        body = business_error(exc.status_code, str(exc.detail).lower())
        return Response(body, exc.status_code, exc.headers, JSON_CONTENT_TYPE)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> Response:
        # Starlette re-raises after this answer is sent, so uvicorn still logs the traceback.
        return Response(business_error(500, "internal error"), 500, media_type=JSON_CONTENT_TYPE)


async def _respond(request: Request, answer: Answer) -> Response:
    if answer.task_id:
        request.scope[TASK_ID_KEY] = answer.task_id
    if answer.delay:
        await asyncio.sleep(answer.delay)
    if answer.drop:
        request.scope[DROP_KEY] = True  # the gate closes the connection instead of sending this
    return Response(answer.body, answer.status or 200, answer.headers, JSON_CONTENT_TYPE)


def _request_base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _add_api_routes(app: FastAPI, simulator: Simulator) -> None:
    @app.post(CREATE_TASK_PATH, tags=["api"], summary="Create a generation task")
    async def create_task(request: Request) -> Response:
        return await _respond(request, simulator.create_task(await request.body()))

    @app.get(RECORD_INFO_PATH, tags=["api"], summary="Get a task's record")
    async def record_info(request: Request) -> Response:
        base_url = None if simulator.store.base_url else _request_base_url(request)
        answer = simulator.record_info(
            request.query_params.get("taskId"), base_url, request.headers.get("authorization")
        )
        return await _respond(request, answer)


def _add_file_routes(app: FastAPI, simulator: Simulator) -> None:
    @app.get("/files/{task_id}/{name}", tags=["files"], summary="A result file (no auth, like a public CDN)")
    async def result_file(task_id: str, name: str) -> Response:
        task = simulator.store.get(task_id)
        if task is None or name != task.result_name or task.phase(now_ms()).state != SUCCESS:
            return Response(business_error(404, "file not found"), 404, media_type=JSON_CONTENT_TYPE)
        key = bytes.fromhex(task.content_key)
        if task.video:
            return Response(render_mp4_placeholder(key), media_type="video/mp4")
        return Response(render_png(task.width, task.height, key), media_type="image/png")


def _add_admin_routes(app: FastAPI, simulator: Simulator) -> None:
    def json_response(data: object, status: int = 200) -> Response:
        return Response(dumps(data), status, media_type=JSON_CONTENT_TYPE)

    @app.get("/_sim/health", tags=["admin"])
    async def health() -> Response:
        return json_response({"status": "ok", "tasks": len(simulator.store)})

    @app.get("/_sim/stats", tags=["admin"])
    async def stats() -> Response:
        return json_response(simulator.snapshot())

    @app.get("/_sim/tasks", tags=["admin"], summary="Every task: id, model, prompt, state, decided outcome")
    async def tasks() -> Response:
        return json_response({"tasks": simulator.task_list()})

    @app.get("/_sim/faults", tags=["admin"])
    async def get_faults() -> Response:
        return json_response(simulator.dice.config.to_dict())

    @app.post("/_sim/faults", tags=["admin"], summary="Replace the fault config (unknown keys are rejected)")
    async def set_faults(request: Request) -> Response:
        try:
            faults = FaultConfig.from_dict(
                json.loads(await request.body() or b"{}", parse_constant=reject_json_constant)
            )
        except RecursionError:
            return Response(business_error(400, "nested too deeply"), 400, media_type=JSON_CONTENT_TYPE)
        except (ValueError, TypeError) as exc:
            return Response(business_error(400, str(exc)), 400, media_type=JSON_CONTENT_TYPE)
        simulator.set_faults(faults)
        return json_response(faults.to_dict())

    @app.get("/_sim/callbacks", tags=["admin"], summary="Callback delivery log")
    async def callbacks() -> Response:
        return json_response({"deliveries": simulator.callbacks.log, **simulator.callbacks.summary()})

    @app.post("/_sim/reset", tags=["admin"], summary="Forget tasks, stats and deliveries; restore startup faults")
    async def reset() -> Response:
        simulator.reset()
        return json_response({"status": "ok"})
