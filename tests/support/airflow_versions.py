"""What differs between the Airflow 3 minors ``./run compat`` covers (docs/compatibility.md), for the tests."""

from __future__ import annotations

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

#: Before Airflow 3.3.2 common-compat's ``get_async_connection`` runs the sync ``get_connection`` in a worker
#: thread (``sync_to_async``): 3.0 has no ``aget_connection``, and until 3.3.2 it masks secrets with a sync call that
#: deadlocks when another async call is in flight. "The trigger never calls the sync API" holds from 3.3.2.
SYNC_CONNECTION_IN_THREAD = Version(airflow_version) < Version("3.3.2")

try:  # 3.1 moved DagBag out of airflow.models
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

needs_async_connection_api = pytest.mark.skipif(
    SYNC_CONNECTION_IN_THREAD, reason="before Airflow 3.3.2 connections are read with the sync API in a thread"
)

__all__ = ["SYNC_CONNECTION_IN_THREAD", "DagBag", "needs_async_connection_api"]
