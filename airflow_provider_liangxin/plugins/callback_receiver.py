"""The Airflow plugin that mounts the provider's FastAPI app in the api-server at ``/liangxin``: the LiangXin
callback receiver (``receiver.py``, off unless ``[liangxin] callback_receiver_enabled``) and the result view
(``result_routes.py``, on unless ``[liangxin] result_view_enabled = False``), plus the result view's tab on the task
instance page where this Airflow draws plugin views there (3.1+).

Airflow loads plugins in every component; this module stays light: the result view's app is built on its first
request (so FastAPI and core's security module load in the api-server only), the receiver only when enabled. See
docs/callbacks.md and docs/result-view.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from airflow.providers.common.compat.sdk import AirflowPlugin

from airflow_provider_liangxin._airflow_compat import (
    load_internals,
    load_result_view_internals,
    supports_task_instance_views,
)
from airflow_provider_liangxin.callbacks import (
    CALLBACK_ROUTE,
    CONFIG_SECTION,
    URL_PREFIX,
    CallbackSettings,
    airflow_conf,
)
from airflow_provider_liangxin.result_view import RESULTS_ROUTE

log = logging.getLogger(__name__)


def result_view_enabled(conf: Any = None) -> bool:
    try:
        return airflow_conf(conf).getboolean(CONFIG_SECTION, "result_view_enabled", fallback=True)
    except ValueError as exc:
        log.error("LiangXin result view disabled: [%s] result_view_enabled: %s", CONFIG_SECTION, exc)
        return False


class LazyApp:
    """An ASGI app built on its first request: plugins are imported by every Airflow component, and only the
    api-server ever calls this."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._app: Any = None
        self._lock = threading.Lock()

    def app(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._build()
        return self._app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app()(scope, receive, send)


def _view_routes() -> Callable[[Any], None] | None:
    """Adds the result view's routes, or None (one log line from the compat module) without the internals."""
    internals = load_result_view_internals()
    if internals is None:
        return None
    from airflow_provider_liangxin.plugins.result_routes import ResultViewService, add_result_routes

    service = ResultViewService(internals)
    auth = internals.auth_dependencies()
    log.info("LiangXin result view mounted at %s%s", URL_PREFIX, RESULTS_ROUTE)
    return lambda app: add_result_routes(app, service, auth)


def fastapi_apps(conf: Any = None) -> list[dict[str, Any]]:
    """The plugin's ``fastapi_apps``: one app at ``/liangxin`` with the receiver (when enabled and this Airflow
    has what it needs) and the result view (unless switched off); nothing when neither is on."""
    receiver = None
    try:
        settings = CallbackSettings.from_conf(conf)
    except ValueError as exc:
        log.error("LiangXin callback receiver disabled: %s", exc)
        settings = None
    if settings is not None and settings.receiver_enabled:
        internals = load_internals()
        if internals is not None:
            from airflow_provider_liangxin.plugins.receiver import CallbackReceiver

            receiver = CallbackReceiver(internals, settings)
            log.info(
                "LiangXin callback receiver mounted at %s%s (settle %g s)",
                URL_PREFIX,
                CALLBACK_ROUTE,
                settings.settle_seconds,
            )
    view = result_view_enabled(conf)
    if receiver is None and not view:
        return []

    def build() -> Any:
        from airflow_provider_liangxin.plugins.receiver import create_app

        return create_app(receiver, _view_routes() if view else None)

    names = [name for name, on in (("callback receiver", receiver is not None), ("result view", view)) if on]
    return [{"app": LazyApp(build), "url_prefix": URL_PREFIX, "name": f"LiangXin {' and '.join(names)}"}]


def external_views(conf: Any = None) -> list[dict[str, Any]]:
    """The "LiangXin" tab on every task instance page (Airflow fills in the placeholders; the view says so when a
    task made no LiangXin task)."""
    if not result_view_enabled(conf):
        return []
    query = "dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"
    return [
        {
            "name": "LiangXin",
            "href": f"{URL_PREFIX}{RESULTS_ROUTE}?{query}",
            "destination": "task_instance",
            "url_route": "liangxin-result",
        }
    ]


class LiangxinCallbackPlugin(AirflowPlugin):
    """Loaded through the ``airflow.plugins`` entry point (a provider-info plugin would load only with
    ``[core] lazy_discover_providers=False`` on Airflow 3.3)."""

    name = "liangxin_callbacks"
    fastapi_apps = fastapi_apps()
    if supports_task_instance_views(AirflowPlugin):
        external_views = external_views()


__all__ = ["LazyApp", "LiangxinCallbackPlugin", "external_views", "fastapi_apps", "result_view_enabled"]
