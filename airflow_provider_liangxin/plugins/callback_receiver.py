"""The Airflow plugin that mounts the LiangXin callback receiver (``receiver.py``) in the api-server at ``/liangxin``.

Airflow loads plugins in every component; this module stays light (no FastAPI) unless ``[liangxin]
callback_receiver_enabled`` is set, which only the api-server needs. See docs/callbacks.md.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.common.compat.sdk import AirflowPlugin

from airflow_provider_liangxin._airflow_compat import load_internals
from airflow_provider_liangxin.callbacks import CALLBACK_ROUTE, URL_PREFIX, CallbackSettings

log = logging.getLogger(__name__)


def fastapi_apps(conf: Any = None) -> list[dict[str, Any]]:
    """The plugin's ``fastapi_apps``: the receiver when ``[liangxin] callback_receiver_enabled`` and this Airflow has
    what it needs; otherwise nothing (one log line saying why, when it was asked for)."""
    try:
        settings = CallbackSettings.from_conf(conf)
    except ValueError as exc:
        log.error("LiangXin callback receiver disabled: %s", exc)
        return []
    if not settings.receiver_enabled:
        return []
    internals = load_internals()
    if internals is None:
        return []
    log.info(
        "LiangXin callback receiver mounted at %s%s (settle %g s)", URL_PREFIX, CALLBACK_ROUTE, settings.settle_seconds
    )
    from airflow_provider_liangxin.plugins.receiver import CallbackReceiver, create_app

    app = create_app(CallbackReceiver(internals, settings))
    return [{"app": app, "url_prefix": URL_PREFIX, "name": "LiangXin callback receiver"}]


class LiangxinCallbackPlugin(AirflowPlugin):
    """Loaded through the ``airflow.plugins`` entry point (a provider-info plugin would load only with
    ``[core] lazy_discover_providers=False`` on Airflow 3.3)."""

    name = "liangxin_callbacks"
    fastapi_apps = fastapi_apps()


__all__ = ["LiangxinCallbackPlugin", "fastapi_apps"]
