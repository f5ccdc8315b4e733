"""Apache Airflow provider for the LiangXin Market API.

Kept import-light on purpose: Airflow imports this module (through the provider entry point) while parsing
DAGs and listing providers, so nothing here may touch the network, the database or heavy dependencies.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_HOOK = "airflow_provider_liangxin.hooks.liangxin.LiangxinHook"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata for Airflow's ProvidersManager (validated against provider_info.schema.json)."""
    integration = "LiangXin"
    return {
        "package-name": "airflow-provider-liangxin",
        "name": "LiangXin",
        "description": "Drive the LiangXin Market API (Seedream, Z-Image, Nano Banana, Imagen 4, Flux 2, Kling...) "
        "from Airflow: create generation tasks, wait for them deferrably, collect the results.",
        "state": "ready",
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
        "extra-links": ["airflow_provider_liangxin.operators.liangxin.LiangxinResultLink"],
        "hooks": [{"integration-name": integration, "python-modules": ["airflow_provider_liangxin.hooks.liangxin"]}],
        "connection-types": [
            {
                "connection-type": "liangxin",
                "hook-class-name": _HOOK,
                "hook-name": "LiangXin",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "API base URL", "password": "API key"},
                    "placeholders": {"host": "https://your-liangxin-host.example", "password": "sk-..."},
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": "Per-request timeout in seconds (connect and read).",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": 30},
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "description": "Turn off only for a private gateway with a self-signed certificate.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                },
            }
        ],
    }
