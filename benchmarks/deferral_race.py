"""Airflow 3.3's deferral race (apache/airflow#72716) on a real Airflow: mapped deferrable tasks with ``retries=0``.

Not a test (it takes minutes): it prints a table and exits 1 when a run with the provider's hold on lost a task.
One real Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite) and the LiangXin
simulator per configuration, as in tests/e2e, running ``e2e_liangxin_mapped_race`` (tests/e2e/dags): N mapped
``LiangxinCreateTaskOperator`` tasks, deferrable, 1 s polls, ``retries=0``, each LiangXin task done 2.5 s (or
``--generation``) after createTask: after the worker's own first check (so the task defers, even under load),
and within a poll or two of the deferral, the race's window.

Configurations (``--runs``, ``name:settle:heartbeat:n`` each):
* ``hold``: the provider's default hold (15 s) and the harness's Airflow setting ``[workers]
  min_heartbeat_interval = 1`` (the documented mitigation, a second line of defence);
* ``hold-off``: ``[liangxin] deferral_settle_seconds = 0`` (the provider before the fix) with Airflow's own
  default ``min_heartbeat_interval`` (5 s);
* ``hold/airflow-defaults``: the default hold with Airflow's default ``min_heartbeat_interval``.

Counted per run: task instances by final state; those failed by the race (the scheduler's "finished with state
..., but the task instance's state attribute is ..." line, or the worker's 409 / "no longer running"); Airflow
state vs the LiangXin task's state; LiangXin tasks per prompt (duplicates); wall time.

    .venv/bin/python benchmarks/deferral_race.py [--runs hold-off:0:1:200,hold:10:1:1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.airflow_env import E2E_DAGS, Progress, install_signal_handlers, liangxin_airflow  # noqa: E402

DAG_ID = "e2e_liangxin_mapped_race"
MODEL = "imagen4-ultra"  # tests/e2e/dags/e2e_liangxin_race.py
SCHEDULER_SYMPTOM = "but the task instance's state attribute is"
WORKER_SYMPTOMS = ("409", "no longer running", "not in the running state", "changed externally")
DEFAULT_RUNS = "hold:15:1:1000,hold-off:0:5:200,hold/airflow-defaults:15:5:200"


def parse_runs(text: str) -> list[tuple[str, float, float, int]]:
    runs = []
    for part in text.split(","):
        name, settle, heartbeat, n = part.split(":")
        runs.append((name, float(settle), float(heartbeat), int(n)))
    return runs


def all_task_instances(env: Any, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = env.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100, "offset": len(found)})[
            "task_instances"
        ]
        found += page
        if len(page) < 100:
            return [ti for ti in found if ti["task_id"] == "generate"]


def wait_for_run(env: Any, run_id: str, timeout: float) -> str:
    """The run's final state; an api-server slow to answer under this load (30 s) is asked again, not fatal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        env._check_alive()  # a component that died (SQLite "database is locked" under load) ends the run here
        with contextlib.suppress(httpx.HTTPError):
            state = env.run_state(DAG_ID, run_id)
            if state in ("success", "failed"):
                return str(state)
        time.sleep(3)
    return "unfinished"


def one_run(name: str, settle: float, heartbeat: float, n: int, generation: float, say: Progress) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="liangxin-race-") as tmp,
        liangxin_airflow(
            output_dir=Path(tmp),
            dag_folders={"e2e-dags": E2E_DAGS},
            sim_durations="0.5,0.5,3",
            sim_faults={"models": {MODEL: {"durations": [0, 0, generation]}}},
            extra_env={
                "AIRFLOW__LIANGXIN__DEFERRAL_SETTLE_SECONDS": f"{settle:g}",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": f"{heartbeat:g}",
            },
            progress=say,
        ) as (env, sim),
    ):
        assert sim is not None
        env.wait_ready([DAG_ID], timeout=300)
        env.progress = lambda _m: None
        started = time.monotonic()
        run_id = env.trigger(DAG_ID, {"n": n, "tag": name})
        say(f"{name}: {n} mapped tasks, run {run_id}")
        state = wait_for_run(env, run_id, timeout=300 + n * 2)
        if state == "unfinished":
            with contextlib.suppress(httpx.HTTPError):
                env._client.patch(f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
        seconds = time.monotonic() - started
        tis = all_task_instances(env, run_id)
        deferred = sum(1 for ti in tis if env.trigger_log_files(DAG_ID, run_id, "generate", 1, ti["map_index"]))
        states = Counter(ti["state"] for ti in tis)
        scheduler_log = (env.component_logs / "scheduler.log").read_text(errors="replace")
        raced_scheduler = sum(1 for line in scheduler_log.splitlines() if SCHEDULER_SYMPTOM in line and DAG_ID in line)
        raced = wrong = 0
        for ti in tis:
            task_id = None
            with contextlib.suppress(httpx.HTTPError):
                task_id = env.xcom(DAG_ID, run_id, "generate", key="task_id", map_index=ti["map_index"])
            liangxin_state = sim.record(task_id)["state"] if task_id else None
            if (liangxin_state == "success") != (ti["state"] == "success"):
                wrong += 1
            if ti["state"] != "success":
                log = env.task_log(DAG_ID, run_id, "generate", 1, ti["map_index"], triggers=False)
                if any(symptom in log for symptom in WORKER_SYMPTOMS):
                    raced += 1
        stats = sim.stats()
        per_prompt = Counter()
        for task_id in stats["task_ids"]:
            with contextlib.suppress(Exception):
                per_prompt[json.dumps(sim.record(task_id)["param"]["input"], sort_keys=True)] += 1
        row = {
            "name": name,
            "settle": settle,
            "heartbeat": heartbeat,
            "n": n,
            "run": state,
            "tis": len(tis),
            "deferred": deferred,
            "success": states.get("success", 0),
            "failed": states.get("failed", 0),
            "other": sum(v for k, v in states.items() if k not in ("success", "failed")),
            "raced_scheduler": raced_scheduler,
            "raced_worker": raced,
            "wrong": wrong,
            "created": stats["task_count"],
            "duplicates": sum(c - 1 for c in per_prompt.values() if c > 1),
            "seconds": seconds,
        }
        say(f"{name}: {row}")
        return row


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="name:settle_seconds:min_heartbeat_interval:n,...")
    parser.add_argument("--generation", type=float, default=2.5, help="seconds from createTask to success")
    args = parser.parse_args(argv)
    say = Progress()
    rows = [one_run(*spec, args.generation, say) for spec in parse_runs(args.runs)]
    print()
    print(
        "| configuration | deferral_settle_seconds | min_heartbeat_interval | tasks | deferred | success | failed |"
        " other |"
        " failed by the race (scheduler / worker log) | Airflow vs LiangXin state wrong | LiangXin tasks |"
        " duplicates | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['settle']:g} | {r['heartbeat']:g} | {r['tis']} | {r['deferred']} | {r['success']} |"
            f" {r['failed']} |"
            f" {r['other']} | {r['raced_scheduler']} / {r['raced_worker']} | {r['wrong']} | {r['created']} |"
            f" {r['duplicates']} | {r['seconds']:.0f} |"
        )
    held = [r for r in rows if r["settle"] > 0]
    ok = all(r["success"] == r["tis"] == r["n"] and not r["duplicates"] and not r["wrong"] for r in held)
    print(f"\nevery task with the hold on succeeded on its only try, none paid twice: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
