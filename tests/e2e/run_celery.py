"""``./run celery``: the real-Airflow e2e suite (tests/e2e) on the CeleryExecutor, then a table of what it showed.

Every e2e stack of the session runs on a Redis broker and separate ``airflow celery worker`` processes
(``LIANGXIN_E2E_EXECUTOR=celery``, see ``AirflowEnv``); test_celery.py adds the Celery-only case, ``kill -9`` of a
whole worker mid-generation. ``./run celery`` installs what this needs first (the ``celery`` extra, Debian's
``redis-server``). Arguments are passed to pytest (``./run celery -k kill``); test paths among them replace
``tests/e2e``. Exit code: pytest's.

    python -m tests.e2e.run_celery [PYTEST ARGS...]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import pytest

#: tests.e2e.airflow_env.EXECUTOR_ENV (not imported here: conftest.py must set AIRFLOW_HOME before Airflow loads).
EXECUTOR_ENV = "LIANGXIN_E2E_EXECUTOR"


class Outcomes:
    """A pytest plugin that keeps each test's outcome, skip reason and recorded properties."""

    def __init__(self) -> None:
        self.by_module: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.skips: dict[str, str] = {}
        self.failed: list[str] = []
        self.properties: dict[str, Any] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        module = report.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        for name, value in report.user_properties:
            self.properties[name] = value
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if report.skipped:
                self.by_module[module]["skipped"] += 1
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                self.skips[report.nodeid] = reason.removeprefix("Skipped: ")
            elif report.failed:
                self.by_module[module]["failed" if report.when == "call" else "errors"] += 1
                self.failed.append(report.nodeid)
            else:
                self.by_module[module]["passed"] += 1
        elif report.when == "teardown" and report.failed:
            self.by_module[module]["errors"] += 1
            self.failed.append(f"{report.nodeid} (teardown)")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    return "\n".join(
        [line.format(*header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        + [line.format(*map(str, row)) for row in rows]
    )


def _redis_version() -> str:
    found = shutil.which("redis-server")
    if found is None:
        return "redis-server missing"
    out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
    return next((part.removeprefix("v=") for part in out.split() if part.startswith("v=")), out.strip())


def report(outcomes: Outcomes, seconds: float, code: int) -> str:
    from importlib.metadata import version

    lines = [
        "",
        f"== ./run celery: the e2e suite on the CeleryExecutor (apache-airflow {version('apache-airflow')}, "
        f"apache-airflow-providers-celery {version('apache-airflow-providers-celery')}, celery {version('celery')}, "
        f"Redis {_redis_version()})",
    ]
    rows = []
    total: dict[str, int] = defaultdict(int)
    for module in sorted(outcomes.by_module):
        counts = outcomes.by_module[module]
        rows.append([module, *(counts[key] for key in ("passed", "failed", "errors", "skipped"))])
        for key, value in counts.items():
            total[key] += value
    rows.append(["total", *(total[key] for key in ("passed", "failed", "errors", "skipped"))])
    lines.append(_table(["module", "passed", "failed", "errors", "skipped"], rows))
    for nodeid, reason in outcomes.skips.items():
        lines.append(f"skipped: {nodeid}: {reason}")
    for nodeid in outcomes.failed:
        lines.append(f"FAILED: {nodeid}")
    kill = outcomes.properties.get("celery_kill")
    if kill:
        k = json.loads(kill)
        lines.append("")
        lines.append(
            f"kill -9 of a whole Celery worker ({k['killed_worker']}, {k['killed_processes']} processes) while its "
            f"LiangXin task was generating; heartbeat timeout {k['heartbeat_timeout_s']} s:"
        )
        lines.append(
            _table(
                ["createTask calls", "same LiangXin taskId", "final state", "tries", "kill -> retry running", "total"],
                [
                    [
                        k["create_task_calls"],
                        "yes" if k["same_task_id"] else "NO",
                        k["final_state"],
                        k["try_number"],
                        f"{k['kill_to_retry_s']} s on {k['retry_worker']}" if k["kill_to_retry_s"] else "never",
                        f"{k['total_s']} s",
                    ]
                ],
            )
        )
    else:
        lines.append("kill -9 of a Celery worker: not run (deselected, or its stack did not start)")
    lines.append(f"runtime: {seconds:.0f} s ({seconds / 60:.1f} min), pytest exit code {code}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ[EXECUTOR_ENV] = "celery"
    outcomes = Outcomes()
    started = time.monotonic()
    args = list(argv or [])
    # Test paths given (./run celery tests/e2e/test_celery.py) replace the whole suite; options add to it.
    paths = [] if any(arg.startswith("tests") for arg in args) else ["tests/e2e"]
    code = int(pytest.main([*paths, "-p", "no:cacheprovider", "-rfEs", *args], plugins=[outcomes]))
    print(report(outcomes, time.monotonic() - started, code), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
