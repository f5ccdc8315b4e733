"""An auth manager for the e2e tests: Airflow's SimpleAuthManager (logins, roles, JWTs, the UI's login page) plus
per-DAG read rules, as FAB or Keycloak deployments have them and SimpleAuthManager alone cannot express.

``LIANGXIN_TEST_DAG_SCOPES="reader=dag_a|dag_b;outsider=e2e_smoke"`` limits each named user to those DAGs; every
other user is as SimpleAuthManager decides. Used as ``[core] auth_manager`` by the result view's e2e tests and the
browser check (the api-server imports it, so the repository root is on its PYTHONPATH there).
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

SCOPES_ENV = "LIANGXIN_TEST_DAG_SCOPES"


def dag_scopes(raw: str | None = None) -> dict[str, set[str]]:
    raw = os.environ.get(SCOPES_ENV, "") if raw is None else raw
    scopes: dict[str, set[str]] = {}
    for part in filter(None, (p.strip() for p in raw.split(";"))):
        user, _, dags = part.partition("=")
        scopes[user.strip()] = {d.strip() for d in dags.split("|") if d.strip()}
    return scopes


class DagScopedAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        allowed = dag_scopes().get(user.get_name())
        if allowed is not None and (details is None or getattr(details, "id", None) not in allowed):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
