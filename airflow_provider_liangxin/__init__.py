"""Apache Airflow provider for the LiangXin Market API.

Kept import-light on purpose: Airflow imports this module (through the provider entry point) while parsing
DAGs and listing providers, so nothing here may touch the network, the database or heavy dependencies.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_HOOK = "airflow_provider_liangxin.hooks.liangxin.LiangxinHook"

#: The project's home; its docs folder is what the Providers page links to (pyproject's [project.urls]
#: Documentation, which Airflow reads from the package metadata, names the same URL).
HOME_URL = "https://github.com/airflow-provider-liangxin/airflow-provider-liangxin"
DOCS_URL = f"{HOME_URL}/tree/main/docs"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata for Airflow's ProvidersManager (validated against provider_info.schema.json)."""
    integration = "LiangXin"
    return {
        "package-name": "airflow-provider-liangxin",
        "name": "LiangXin",
        "description": "Drive the LiangXin Market API (Seedream, Z-Image, Nano Banana, Imagen 4, Flux 2, Kling...) "
        "from Airflow: create generation tasks, wait for them deferrably, collect the results.",
        "state": "ready",
        "documentation-url": DOCS_URL,
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": integration,
                "external-doc-url": "https://docs.liangxin.ai/market",
                "tags": ["service"],
            }
        ],
        "operators": [
            {"integration-name": integration, "python-modules": ["airflow_provider_liangxin.operators.liangxin"]}
        ],
        "sensors": [
            {"integration-name": integration, "python-modules": ["airflow_provider_liangxin.sensors.liangxin"]}
        ],
        "triggers": [
            {"integration-name": integration, "python-modules": ["airflow_provider_liangxin.triggers.liangxin"]}
        ],
        "config": _config(),
        "extra-links": ["airflow_provider_liangxin.operators.liangxin.LiangxinResultLink"],
        "hooks": [{"integration-name": integration, "python-modules": ["airflow_provider_liangxin.hooks.liangxin"]}],
        "connection-types": [
            {
                "connection-type": "liangxin",
                "hook-class-name": _HOOK,
                "hook-name": "LiangXin",
                "ui-field-behaviour": {
                    # Port stays visible: Airflow 3.3.2's Test button sends port 0 for a connection stored without
                    # one and then refuses the test (apache/airflow#73298); a stored port avoids that.
                    "hidden-fields": ["schema", "login"],
                    "relabeling": {"host": "API base URL", "password": "API key", "port": "Port (optional)"},
                    "placeholders": {
                        "host": "https://your-liangxin-host.example",
                        "password": "sk-...",
                        "port": "443 (set it for the UI's Test button on Airflow 3.3)",
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": "Whole-request timeout in seconds: connect, send and the whole answer. "
                        "Any value above 0; default 30.",
                        # No "minimum": the UI clamps to it; the hook rejects 0, negatives, NaN and inf itself.
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 30},
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "description": "Turn off only for a private gateway with a self-signed certificate.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "allow_private_result_hosts": {
                        "label": "Allow private result hosts",
                        "description": "Let result downloads go to loopback or private addresses (a private object "
                        "store). Off: only public hosts and the API's own host. Link-local addresses (cloud "
                        "metadata) are always refused.",
                        "schema": {"type": ["boolean", "null"], "default": False},
                    },
                },
            }
        ],
    }


def _config() -> dict[str, Any]:
    """The ``[liangxin]`` section (callbacks, docs/callbacks.md), as Airflow's config reference shows it."""

    def option(description: str, type_: str, default: str, example: str | None = None) -> dict[str, Any]:
        return {
            "description": description,
            "version_added": "0.2.0",
            "type": type_,
            "example": example,
            "default": default,
        }

    return {
        "liangxin": {
            "description": "LiangXin provider settings. Callbacks: the api-server receives LiangXin's webhook under "
            "/liangxin and wakes the waiting task; polling stays as a slow fallback. Deferral: how long a trigger "
            "holds its event after it starts.",
            "options": {
                "callback_receiver_enabled": option(
                    "Mount the callback receiver in the api-server (under /liangxin).", "boolean", "False"
                ),
                "callback_base_url": option(
                    "Public base URL of the api-server as LiangXin reaches it, without /liangxin (often not "
                    "[api] base_url). Empty: callback_url='auto' waits by polling. https, or http for loopback.",
                    "string",
                    "",
                    "https://airflow.example.com",
                ),
                "callback_fallback_poll_interval": option(
                    "Seconds between the trigger's fallback polls when a callback is expected (first poll immediate).",
                    "float",
                    "60",
                ),
                "callback_settle_seconds": option(
                    "A callback for a task that deferred less than this many seconds ago is applied when the "
                    "time is up (Airflow 3.3 fails tasks resumed too soon after deferring).",
                    "float",
                    "15",
                ),
                "deferral_settle_seconds": option(
                    "A trigger's event lands no sooner than this many seconds after the trigger started, so "
                    "Airflow 3.3 never sees a task resumed before its deferral has settled (apache/airflow#72716). "
                    "0 turns the hold off; at most 60.",
                    "float",
                    "15",
                ),
                "callback_max_wakeups": option(
                    "Callbacks per task try that may wake a task LiangXin reports unfinished; then polling only.",
                    "integer",
                    "3",
                ),
                "callback_max_requests_per_second": option(
                    "Callback requests per second one api-server accepts in all (429 beyond).", "float", "200"
                ),
            },
        }
    }
