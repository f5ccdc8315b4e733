"""Callback-driven completion vs polling on a real Airflow 3 (api-server with the receiver, scheduler, triggerer,
LocalExecutor, SQLite) against the simulator, which calls back over loopback.

Not a test: it prints numbers, ratios and PASS/MISS against the goals of issue 12, and exits 0.

Four DAGs, ``--runs`` runs each, all triggered at once (benchmarks/dags/bench_callbacks_dags.py):
  callback  ``callback_url="auto"``, fallback poll every 60 s;
  poll10    polling every 10 s (the operator's default);
  poll60    polling every 60 s;
  forged    like callback, but while each task waits the benchmark POSTs a wrong token, the right token with
            another taskId, and then the task's real capability URL (read from the simulator) long before LiangXin
            finishes: at most an early status check; the task must not end before LiangXin completes it.
Generation times are spread (``--generation``, 45 s by default, ± 50 %) so the polls' phase is random. Measured
per task: seconds from LiangXin completing the task (the simulator's ``completeTime``) to the task instance's
``end_date``; recordInfo calls (the simulator's count per taskId, minus the benchmark's own look-ups).

    .venv/bin/python benchmarks/bench_callbacks.py [--runs 8] [--generation 45]

Whole run on a 2-core machine: about 4 min (at 45 s generations).

The callback mode costs a fixed 2 recordInfo calls per task (the trigger's immediate first poll, the worker's
confirmation) plus one per fallback interval; polling costs about 2 + generation/interval. So the
saving grows with the generation time: compare runs with ``--generation 45`` and ``--generation 150``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.airflow_env import AirflowEnv, Simulator, liangxin_airflow  # noqa: E402

BENCH_DAGS = Path(__file__).resolve().parent / "dags"
MODES = ("callback", "poll10", "poll60", "forged")
GOAL_CALLBACK_MEDIAN_S = 2.0
GOAL_RECORDINFO_RATIO = 5.0


def ended_at(ti: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(ti["end_date"].replace("Z", "+00:00")).timestamp()


def the_ti(env: AirflowEnv, dag_id: str, run_id: str) -> dict[str, Any]:
    (ti,) = env.task_instances(dag_id, run_id)
    return ti


def forge(env: AirflowEnv, sim: Simulator, dag_id: str, run_id: str, report: dict[str, Any]) -> None:
    """Wrong token, right token with another taskId, then the real URL early: count the answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ti = the_ti(env, dag_id, run_id)
        if ti["state"] == "deferred":
            break
        time.sleep(0.5)
    else:
        report["not_deferred"] += 1
        return
    task_id = env.xcom(dag_id, run_id, "generate", key="task_id")
    real_url = sim.record(task_id)["param"]["callBackUrl"]  # one recordInfo of the benchmark's own
    report["own_lookups"][task_id] = 1
    body = json.dumps({"code": 200, "msg": "success", "data": {"taskId": task_id, "state": "success"}})
    wrong = httpx.post(real_url.rsplit("/", 1)[0] + "/forged-token", content=body, timeout=10)
    other = httpx.post(real_url, content=json.dumps({"data": {"taskId": "task_other"}}), timeout=10)
    early = httpx.post(real_url, content=body, timeout=10)
    report["answers"]["wrong token"].append(wrong.status_code)
    report["answers"]["right token, other taskId"].append(other.status_code)
    report["answers"]["right token, task not done"].append(early.status_code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="runs per mode (default %(default)s)")
    parser.add_argument(
        "--generation", type=float, default=45, help="mean generation time in s, spread ±50%% (default %(default)s)"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="liangxin-bench-callbacks-"))
    try:
        return measure(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the harness leaves a caller's home alone: it is ours


def measure(args: argparse.Namespace, home: Path) -> int:
    started = time.monotonic()
    with liangxin_airflow(
        output_dir=home / "output",
        home=home,
        dag_folders={"bench-dags": BENCH_DAGS},
        sim_durations=f"0.5,0.5,{args.generation - 1:g}",
        sim_args=["--jitter", "0.5", "--seed", "12"],
        callbacks=True,
    ) as (env, sim):
        assert sim is not None
        dag_ids = {mode: f"bench_cb_{mode}" for mode in MODES}
        env.wait_ready(dag_ids.values(), timeout=240)
        wait_limit = 3 * args.generation + 240
        print(
            f"Airflow ready in {time.monotonic() - started:.0f} s; {args.runs} runs per mode, "
            f"generations of {args.generation:g} s ± 50 %",
            flush=True,
        )
        runs = {
            mode: [env.trigger(dag_id, {"prompt": f"bench {mode} {i}"}) for i in range(args.runs)]
            for mode, dag_id in dag_ids.items()
        }
        forged: dict[str, Any] = {
            "answers": {"wrong token": [], "right token, other taskId": [], "right token, task not done": []},
            "own_lookups": {},
            "not_deferred": 0,
        }
        for run_id in runs["forged"]:
            forge(env, sim, dag_ids["forged"], run_id, forged)
        for mode, run_ids in runs.items():
            for run_id in run_ids:
                env.wait_for_run(dag_ids[mode], run_id, timeout=wait_limit)
        stats = sim.stats()["recordinfo_per_task"]  # before the look-ups below (they count too)
        rows: dict[str, dict[str, list[float]]] = {}
        early_ends = failed = 0
        for mode, run_ids in runs.items():
            delays, calls = [], []
            for run_id in run_ids:
                ti = the_ti(env, dag_ids[mode], run_id)
                if ti["state"] != "success":
                    failed += 1
                    continue
                task_id = env.xcom(dag_ids[mode], run_id, "generate", key="task_id")
                calls.append(stats.get(task_id, 0) - forged["own_lookups"].get(task_id, 0))
                completed = sim.record(task_id)["completeTime"] / 1000
                delay = ended_at(ti) - completed
                delays.append(delay)
                if delay < 0:
                    early_ends += 1
            rows[mode] = {"delay": delays, "calls": calls}
        deliveries = sim.callbacks()

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    print()
    print("LiangXin completing -> Airflow task success (s), and recordInfo calls per task")
    print(f"{'mode':<10}{'n':>4}{'median':>9}{'p10':>8}{'p90':>8}{'max':>8}{'recordInfo med':>16}{'mean':>7}")
    for mode in MODES:
        delays, calls = rows[mode]["delay"], rows[mode]["calls"]
        q = statistics.quantiles(delays, n=10) if len(delays) >= 2 else [float("nan")] * 9
        print(
            f"{mode:<10}{len(delays):>4}{med(delays):>9.2f}{q[0]:>8.2f}{q[-1]:>8.2f}"
            f"{max(delays, default=float('nan')):>8.2f}{med(calls):>16.1f}{statistics.fmean(calls or [0]):>7.2f}"
        )
    statuses: dict[str, int] = {}
    for delivery in deliveries:
        statuses[str(delivery["status"])] = statuses.get(str(delivery["status"]), 0) + 1
    print(f"callback deliveries by answer: {statuses}")
    print()
    print("Forged / replayed callbacks (forged mode):")
    for what, codes in forged["answers"].items():
        print(f"  {what:<30} answers {sorted(set(codes))} (x{len(codes)})")
    print(f"  tasks that ended before LiangXin completed them: {early_ends}; failed runs: {failed}")
    cb_median = med(rows["callback"]["delay"])
    ratio10 = statistics.fmean(rows["poll10"]["calls"] or [0]) / max(
        statistics.fmean(rows["callback"]["calls"] or [1]), 1e-9
    )
    ratio60 = statistics.fmean(rows["poll60"]["calls"] or [0]) / max(
        statistics.fmean(rows["callback"]["calls"] or [1]), 1e-9
    )
    print()
    print("Summary")
    verdict = "PASS" if cb_median < GOAL_CALLBACK_MEDIAN_S else "MISS"
    print(f"  callback median {cb_median:.2f} s (goal < {GOAL_CALLBACK_MEDIAN_S:g} s): {verdict}")
    p10, p60 = med(rows["poll10"]["delay"]), med(rows["poll60"]["delay"])
    print(
        f"  vs polling: median {p10:.2f} s at 10 s ({p10 / cb_median:.1f}x), "
        f"{p60:.2f} s at 60 s ({p60 / cb_median:.1f}x)"
    )
    verdict = "PASS" if ratio10 >= GOAL_RECORDINFO_RATIO else "MISS"
    print(
        f"  recordInfo per task: poll10/callback {ratio10:.1f}x (goal >= {GOAL_RECORDINFO_RATIO:g}x): {verdict}; "
        f"poll60/callback {ratio60:.1f}x"
    )
    forged_ok = early_ends == 0 and failed == 0 and set(forged["answers"]["wrong token"]) == {404}
    print(f"  forged callbacks never completed a task: {'PASS' if forged_ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
