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
