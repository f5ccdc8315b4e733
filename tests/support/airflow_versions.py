"""What differs between the Airflow 3 minors ``./run compat`` covers (docs/compatibility.md), for the tests."""

from __future__ import annotations

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

AIRFLOW_3_0 = Version(airflow_version).release[:2] == (3, 0)

try:  # 3.1 moved DagBag out of airflow.models
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

#: Airflow 3.0 has no async connection look-up: common-compat's ``get_async_connection`` runs the sync
#: ``get_connection`` in a thread (``sync_to_async``), so "the trigger never calls the sync API" holds from 3.1.
needs_async_connection_api = pytest.mark.skipif(
    AIRFLOW_3_0, reason="Airflow 3.0: connections are read with the sync API in a thread (common-compat)"
)

__all__ = ["AIRFLOW_3_0", "DagBag", "needs_async_connection_api"]
