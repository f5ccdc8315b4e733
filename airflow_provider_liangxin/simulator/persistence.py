"""Optional SQLite mirror of the task store, so a restarted simulator keeps its tasks (and its counters).

Only the createTask decisions are stored (and the callback delivery state); since lifecycle times are absolute
epoch ms, a restored task continues exactly where the clock says it is. WAL mode with synchronous=NORMAL keeps
an insert per createTask cheap enough for load tests. The request counters of ``/_sim/stats`` are written once,
when the server stops, and added back when it starts: a load test that restarts the simulator mid-run reads the
faults it injected over the whole run (a killed simulator loses the counts of its last run, not its tasks).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airflow_provider_liangxin.simulator.state import Task

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    param TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    lengths TEXT NOT NULL,
    outcome TEXT NOT NULL,
    fail_code TEXT NOT NULL,
    fail_msg TEXT NOT NULL,
    callback_url TEXT,
    slow INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    content_key TEXT NOT NULL,
    video INTEGER NOT NULL,
    callback_state TEXT NOT NULL,
    echo_auth INTEGER NOT NULL DEFAULT 0
)
"""
_STATS_SCHEMA = "CREATE TABLE IF NOT EXISTS stats (id INTEGER PRIMARY KEY CHECK (id = 1), snapshot TEXT NOT NULL)"
_COLUMNS = (
    "task_id, model, param, created_ms, lengths, outcome, fail_code, fail_msg, callback_url, slow, width, "
    "height, content_key, video, callback_state, echo_auth"
)


class TaskDB:
    """A single connection used only from the server's event loop thread (hence check_same_thread off)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)
        self._conn.execute(_STATS_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(tasks)")}
        if "echo_auth" not in columns:  # a database written before the column existed
            self._conn.execute("ALTER TABLE tasks ADD COLUMN echo_auth INTEGER NOT NULL DEFAULT 0")

    def insert(self, task: Task) -> None:
        self._conn.execute(
            f"INSERT OR REPLACE INTO tasks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.task_id,
                task.model,
                task.param,
                task.created_ms,
                json.dumps(list(task.lengths)),
                task.outcome,
                task.fail_code,
                task.fail_msg,
                task.callback_url,
                int(task.slow),
                task.width,
                task.height,
                task.content_key,
                int(task.video),
                task.callback_state,
                int(task.echo_auth),
            ),
        )

    def set_callback_state(self, task_id: str, state: str) -> None:
        self._conn.execute("UPDATE tasks SET callback_state = ? WHERE task_id = ?", (state, task_id))

    def load(self) -> Iterator[Task]:
        for row in self._conn.execute(f"SELECT {_COLUMNS} FROM tasks ORDER BY created_ms"):
            (task_id, model, param, created_ms, lengths, outcome, fail_code, fail_msg, callback_url, slow) = row[:10]
            width, height, content_key, video, callback_state, echo_auth = row[10:]
            yield Task(
                task_id=task_id,
                model=model,
                param=param,
                created_ms=created_ms,
                lengths=tuple(json.loads(lengths)),
                outcome=outcome,
                fail_code=fail_code,
                fail_msg=fail_msg,
                callback_url=callback_url,
                slow=bool(slow),
                width=width,
                height=height,
                content_key=content_key,
                video=bool(video),
                callback_state=callback_state,
                echo_auth=bool(echo_auth),
            )

    def save_stats(self, snapshot: dict[str, Any]) -> None:
        self._conn.execute("INSERT OR REPLACE INTO stats (id, snapshot) VALUES (1, ?)", (json.dumps(snapshot),))

    def load_stats(self) -> dict[str, Any]:
        """The counters saved by the last clean stop (empty when there was none)."""
        row = self._conn.execute("SELECT snapshot FROM stats WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else {}

    def clear(self) -> None:
        self._conn.execute("DELETE FROM tasks")
        self._conn.execute("DELETE FROM stats")

    def close(self) -> None:
        self._conn.close()
