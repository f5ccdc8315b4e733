"""``_airflow_compat`` against the real Airflow it runs on (./run compat runs this on every Airflow 3 minor): the
receiver's database work on a real metadata DB, and the ObjectStoragePath registry look-up."""

from __future__ import annotations

import uuid

from airflow_provider_liangxin._airflow_compat import WaitingTask, has_fs, load_internals


def test_locked_look_up_of_an_unknown_task_instance_runs_on_the_real_database(airflow_db):
    """The task instance id is bound as its column takes it (a UUID from Airflow 3.2, a string before: SQLite
    refused a ``uuid.UUID`` on 3.0 and 3.1, and every callback answered 503)."""
    internals = load_internals()
    assert internals is not None
    seen: list[WaitingTask] = []

    def decide(waiting: WaitingTask) -> tuple[str, None]:
        seen.append(waiting)
        return "looked", None

    assert internals.in_locked_transaction(str(uuid.uuid4()), decide) == "looked"
    assert seen == [WaitingTask(state=None)]
    internals.check_database()


def test_has_fs_finds_airflows_local_filesystem_and_no_made_up_scheme():
    assert has_fs("file") is True
    assert has_fs("liangxin-no-such-scheme") is False
