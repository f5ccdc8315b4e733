"""Batch vs mapped on a real Airflow: images/min, worker starts, triggerer CPU, and a fault run without duplicates.

Not a test: it prints tables (numbers, ratios, PASS/MISS against the goals of issue 13) and exits 0 unless a run
itself broke. One real Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite, 2
cores) and the LiangXin simulator, as in tests/e2e: 2.5 s generation, polls every 1 s, results stored to disk.

For each size (default 200 and 1,000), in the same run:
* ``mapped``: ``LiangxinCreateTaskOperator.partial(...).expand(input=...)``, one task instance per image;
* ``batch``: ``LiangxinBatchCreateTaskOperator`` (max_in_flight=1000), one task instance for all;
* ``batch/waves`` (1,000 only): the same with max_in_flight=100 (ten waves, the worker resumed per half-wave).

Measured per run: wall time from the DAG run's start to its end (Airflow's own dates), images/min, worker starts
(task-process starts: first run, each resume after a deferral, each retry; counted in the task logs), triggerer
CPU (the triggerer's process tree, user+system) per image, and correctness: every item ``success`` with a stored
PNG, one LiangXin task per image at the simulator.

The fault run: 20 % of createTask answered 429 (Retry-After 1 s) and 10 % of tasks failing at LiangXin; checks that
each item's state equals its LiangXin task's state and that the simulator holds exactly one task per prompt.

    .venv/bin/python benchmarks/bench_batch.py [--sizes 200,1000] [--fault-n 1000] [--skip-mapped-above N]

Whole run on a 2-core machine: ~12 min (the mapped 1,000 alone takes ~7 min).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.airflow_env import (  # noqa: E402
    AirflowEnv,
    Progress,
    Simulator,
    install_signal_handlers,
    liangxin_airflow,
    local_path,
)

BENCH_DAGS = Path(__file__).resolve().parent / "dags"
GOAL_IMAGES_PER_MIN = 2000
GOAL_RATIO = 10.0


def tree_cpu(pid: int) -> float:
    """User+system CPU seconds of a process and its live children."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Bench:
    def __init__(self, env: AirflowEnv, sim: Simulator, say: Progress) -> None:
        self.env = env
        self.sim = sim
        self.say = say
        self.client = httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"})
        self.known: set[str] = set(sim.stats()["task_ids"])
        #: The triggerer's own CPU per second with nothing deferred (heartbeats), subtracted per run.
        self.idle_cpu_per_s = 0.0

    def new_tasks(self) -> dict[str, dict[str, Any]]:
        """Records of the LiangXin tasks created since the last call (param decoded)."""
        import json

        ids = [t for t in self.sim.stats()["task_ids"] if t not in self.known]
        self.known.update(ids)
        records = {}
        for task_id in ids:
            data = self.client.get("/api/v1/jobs/recordInfo", params={"taskId": task_id}).json()["data"]
            data["param"] = json.loads(data["param"])
            records[task_id] = data
        return records

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run: the REST API pages them (100 at most per page by default)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.env.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100, "offset": len(found)}
            )["task_instances"]
            found += page
            if len(page) < 100:
                return found

    def run(self, dag_id: str, n: int, tag: str, timeout: float) -> dict[str, Any]:
        env = self.env
        triggerer = env.procs["triggerer"].pid
        creates_before = self.sim.stats()["requests"].get("POST /api/v1/jobs/createTask", {})
        cpu0 = tree_cpu(triggerer)
        run_id = env.trigger(dag_id, {"n": n, "tag": tag})
        self.say(f"{dag_id} n={n}: run {run_id}")
        try:
            state = env.wait_for_run(dag_id, run_id, timeout=timeout)
        except TimeoutError:
            self.say(f"{dag_id} n={n}: not finished after {timeout:.0f} s; marking the run failed")
            # Left running, it would load the scheduler and SQLite under the next runs.
            with contextlib.suppress(httpx.HTTPError):
                env._client.patch(f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
            return {"dag": dag_id, "n": n, "state": f"unfinished after {timeout:.0f} s"}
        cpu = tree_cpu(triggerer) - cpu0
        if state != "success":
            self.say(f"{dag_id} n={n} ended {state}\n{env.failure_report(dag_id, run_id)[-5000:]}")
            return {"dag": dag_id, "n": n, "state": state}
        dag_run = env.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        seconds = _ts(dag_run["end_date"]) - _ts(dag_run["start_date"])
        tis = [ti for ti in self.task_instances(dag_id, run_id) if ti["task_id"] == "generate"]
        retried = sum(1 for ti in tis if ti["try_number"] > 1)
        # Every start of a task process (first run, resume after a deferral, retry) opens a "Pre Execute" group in
        # its attempt's log; trigger log files are no measure (one trigger log may hold several deferrals).
        starts = 0
        for ti in tis:
            for attempt in range(1, ti["try_number"] + 1):
                log = env.task_log(dag_id, run_id, "generate", attempt, ti["map_index"], triggers=False)
                starts += log.count("::group::Pre Execute")
        if dag_id.startswith("bench_batch"):
            results = env.xcom(dag_id, run_id, "generate")
        else:
            results = [env.xcom(dag_id, run_id, "generate", map_index=ti["map_index"]) for ti in tis]
        records = self.new_tasks()
        per_prompt = Counter(r["param"]["input"]["prompt"] for r in records.values())
        prompts = {f"bench {tag} image {i}" for i in range(n)}
        creates_after = self.sim.stats()["requests"].get("POST /api/v1/jobs/createTask", {})
        throttled = creates_after.get("429", 0) - creates_before.get("429", 0)
        wrong_state = sum(1 for r in results if records.get(r["task_id"], {}).get("state") != r["state"])
        stored_ok = sum(
            1
            for r in results
            if r["state"] == "success" and r.get("stored") and local_path(r["stored"][0]["path"]).is_file()
        )
        row = {
            "dag": dag_id,
            "n": n,
            "state": state,
            "retried": retried,
            "seconds": seconds,
            "per_min": n / seconds * 60,
            "starts": starts,
            "trig_cpu_ms": cpu * 1000 / n,
            "trig_cpu_net_ms": max(0.0, cpu - self.idle_cpu_per_s * seconds) * 1000 / n,
            "success": sum(1 for r in results if r["state"] == "success"),
            "fail": sum(1 for r in results if r["state"] != "success"),
            "stored_ok": stored_ok,
            "items": len(results),
            "tasks": len(records),
            "duplicates": sum(c - 1 for c in per_prompt.values() if c > 1),
            "all_prompts": set(per_prompt) == prompts,
            "wrong_state": wrong_state,
            "throttled": throttled,
        }
        self.say(f"{dag_id} n={n}: {row}")  # each row as soon as it exists (a long run may be interrupted)
        return row


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,1000")
    parser.add_argument("--fault-n", type=int, default=1000)
    parser.add_argument("--skip-mapped-above", type=int, default=10**9, help="skip mapped runs larger than this")
    parser.add_argument("--mapped-timeout", type=float, default=None, help="seconds a mapped run may take")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    say = Progress()
    rows: list[dict[str, Any]] = []
    fault: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="liangxin-bench-batch-") as tmp:
        output = Path(tmp) / "output"
        output.mkdir()
        with liangxin_airflow(
            output_dir=output,
            dag_folders={"bench-dags": BENCH_DAGS},
            sim_durations="0,0,2.5",
            progress=say,
        ) as (env, sim):
            assert sim is not None
            env.wait_ready(["bench_batch", "bench_batch_waves", "bench_batch_faults", "bench_mapped"], timeout=240)
            env.progress = lambda _m: None  # per-task progress lines would drown the tables
            bench = Bench(env, sim, say)
            idle0, t0 = tree_cpu(env.procs["triggerer"].pid), time.monotonic()
            time.sleep(10)
            bench.idle_cpu_per_s = (tree_cpu(env.procs["triggerer"].pid) - idle0) / (time.monotonic() - t0)
            say(f"triggerer idle: {bench.idle_cpu_per_s * 1000:.1f} ms CPU per second")
            for n in sizes:
                timeout = 120 + n * 1.5
                rows.append(bench.run("bench_batch", n, f"b{n}", timeout))
                say(f"batch n={n}: {rows[-1].get('seconds', 0):.1f} s")
                if n >= 1000:
                    rows.append(bench.run("bench_batch_waves", n, f"w{n}", timeout))
                    say(f"batch/waves n={n}: {rows[-1].get('seconds', 0):.1f} s")
                if n <= args.skip_mapped_above:
                    rows.append(bench.run("bench_mapped", n, f"m{n}", args.mapped_timeout or timeout))
                    say(f"mapped n={n}: {rows[-1].get('seconds', 0):.1f} s")
            if args.fault_n:
                httpx.post(
                    f"{sim.base_url}/_sim/faults",
                    json={"rate_limit_rate": 0.2, "task_fail_rate": 0.1, "retry_after": 1, "seed": 13},
                    timeout=10,
                ).raise_for_status()
                fault = bench.run("bench_batch_faults", args.fault_n, f"f{args.fault_n}", 120 + args.fault_n * 2)
                say(f"fault run n={args.fault_n}: {fault.get('seconds', 0):.1f} s")
    report(rows, fault)
    return 0


def report(rows: list[dict[str, Any]], fault: dict[str, Any] | None) -> None:
    label = {"bench_batch": "batch", "bench_batch_waves": "batch/waves", "bench_mapped": "mapped"}
    print()
    print(
        "| variant | images | seconds | images/min | worker starts | starts/1000 img | triggerer CPU ms/img |"
        " success | stored | LiangXin tasks | duplicates |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    failed = [r for r in rows if r["state"] != "success"]
    rows = [r for r in rows if r["state"] == "success"]
    for r in failed:
        print(f"| {label[r['dag']]} | {r['n']} | run {r['state']} (see the log above) | | | | | | | | |")
    for r in rows:
        print(
            f"| {label[r['dag']]} | {r['n']} | {r['seconds']:.1f} | {r['per_min']:.0f} | {r['starts']} |"
            f" {r['starts'] * 1000 / r['n']:.0f} | {r['trig_cpu_ms']:.2f} ({r['trig_cpu_net_ms']:.2f}) |"
            f" {r['success']}/{r['items']} |"
            f" {r['stored_ok']} | {r['tasks']} | {r['duplicates']} |"
            + (f" ({r['retried']} task instances needed an Airflow retry)" if r["retried"] else "")
        )
    print()
    for n in sorted({r["n"] for r in rows}):
        batch = next((r for r in rows if r["n"] == n and r["dag"] == "bench_batch"), None)
        mapped = next((r for r in rows if r["n"] == n and r["dag"] == "bench_mapped"), None)
        if batch and mapped:
            ratio = batch["per_min"] / mapped["per_min"]
            print(f"n={n}: batch {batch['per_min']:.0f} images/min vs mapped {mapped['per_min']:.0f}: {ratio:.1f}x")
            if n >= 1000:
                ok = batch["per_min"] >= GOAL_IMAGES_PER_MIN and ratio >= GOAL_RATIO
                print(
                    f"  goal >= {GOAL_IMAGES_PER_MIN} images/min and >= {GOAL_RATIO:g}x at 1,000: "
                    f"{'PASS' if ok else 'MISS'}"
                )
    correct = not failed and all(
        r["success"] == r["items"] == r["n"] == r["stored_ok"] == r["tasks"]
        and not r["duplicates"]
        and r["all_prompts"]
        and not r["wrong_state"]
        for r in rows
    )
    print(f"every item succeeded, stored, one LiangXin task per image: {'PASS' if correct else 'MISS'}")
    if fault is not None and fault["state"] != "success":
        print(f"fault run: the run ended {fault['state']}")
    elif fault is not None:
        print()
        print(
            f"fault run (20% createTask 429, 10% tasks fail), {fault['n']} images: {fault['seconds']:.1f} s,"
            f" {fault['throttled']} createTask answered 429, {fault['success']} success / {fault['fail']} fail,"
            f" {fault['tasks']} LiangXin tasks, {fault['duplicates']} duplicates,"
            f" {fault['wrong_state']} items whose state differs from their LiangXin task's"
        )
        ok = (
            fault["duplicates"] == 0
            and fault["wrong_state"] == 0
            and fault["tasks"] == fault["n"]
            and fault["all_prompts"]
            and fault["throttled"] > 0
        )
        print(f"  every item in the right state, zero duplicate paid tasks: {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    raise SystemExit(main())
