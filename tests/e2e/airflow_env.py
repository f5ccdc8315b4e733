"""A real, throw-away Airflow 3 (and LiangXin simulator) on loopback, for the e2e tests and the demo.

``AirflowEnv`` runs the four Airflow components as separate processes (api-server, scheduler, dag-processor,
triggerer) with their own temporary ``AIRFLOW_HOME``, SQLite and LocalExecutor — the same shape as
``airflow standalone`` but with one log file per component, loopback-only sockets (no serve-logs servers on
0.0.0.0) and a process group per component so ``stop()`` also ends LocalExecutor workers and task processes.

``Simulator`` runs ``python -m airflow_provider_liangxin.simulator`` on a free loopback port (the simulator's own
``SimulatorProcess``) and adds the stats and record look-ups the tests need.

Demo (prints the path of a generated image)::

    python -m tests.e2e.airflow_env demo [--output-dir DIR] [--prompt TEXT]

With ``LIANGXIN_BASE_URL`` and ``LIANGXIN_API_KEY`` set, the demo talks to that server instead of starting the
simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import psutil

from airflow_provider_liangxin._api import RECORD_INFO_PATH
from airflow_provider_liangxin.simulator import SimulatorProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO_ROOT / "dags"
E2E_DAGS = Path(__file__).resolve().parent / "dags"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str:
    """The executable next to the running interpreter (the venv's), falling back to PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it after ``grace`` seconds."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # The leader may be gone while children (LocalExecutor workers, task processes) linger: kill the group anyway.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


class Simulator(SimulatorProcess):
    """The simulator's own subprocess runner plus the admin and record look-ups the e2e tests need."""

    def __init__(
        self, *, durations: str = "0.5,0.5,1.5", faults: Mapping[str, Any] | None = None, log_dir: Path | None = None
    ):
        args = ["--durations", durations, "--log-level", "warning"]
        if faults:
            args += ["--faults", json.dumps(faults)]
        log_path = Path(log_dir or tempfile.mkdtemp(prefix="liangxin-sim-")) / "simulator.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(args, log_path=log_path)

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/_sim/stats", timeout=10)
        response.raise_for_status()
        return response.json()

    def record(self, task_id: str) -> dict[str, Any]:
        """The ``recordInfo`` data of one task, as the provider sees it (``param`` decoded)."""
        response = httpx.get(
            f"{self.base_url}{RECORD_INFO_PATH}",
            params={"taskId": task_id},
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )
        response.raise_for_status()
        data = response.json()["data"]
        if isinstance(data.get("param"), str):  # LiangXin sends the original request as a JSON string
            data["param"] = json.loads(data["param"])
        return data

    def connection_json(self) -> str:
        return json.dumps({"conn_type": "liangxin", "host": self.base_url, "password": self.api_key})


class AirflowEnv:
    """One real Airflow 3 deployment in a temporary ``AIRFLOW_HOME``; see the module docstring."""

    def __init__(
        self,
        *,
        dag_folders: Mapping[str, Path] | None = None,
        env: Mapping[str, str] | None = None,
        home: Path | None = None,
    ) -> None:
        self.home = Path(home or tempfile.mkdtemp(prefix="liangxin-airflow-"))
        self.dag_folders = dict(dag_folders or {"dags-folder": EXAMPLE_DAGS})
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.component_logs = self.home / "component-logs"
        self.log_folder = self.home / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = self._environment(env or {})
        self.timings: dict[str, float] = {}
        self._client = httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=30)

    # ---------------------------------------------------------------- setup
    def _environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
        bundles = [
            {
                "name": name,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(path), "refresh_interval": 5},
            }
            for name, path in self.dag_folders.items()
        ]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(next(iter(self.dag_folders.values()))),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__PARALLELISM": "16",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_folder),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # Only manual runs: a @daily DAG must not start a scheduled run of its own when unpaused.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                # The task supervisor notices its task process exited only at its next wake-up (default 5 s). A
                # deferred task's "success" exit event then reaches the scheduler late, and if the resumed attempt
                # is already running the scheduler fails it as "state changed externally" (Airflow bug
                # apache/airflow#72716, 3.3.x). Waking every second keeps that window short.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        self.component_logs.mkdir(parents=True, exist_ok=True)
        with (self.component_logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [_bin("airflow"), *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                start_new_session=True,  # own process group: stop() ends workers and task processes too
            )

    def start(self) -> AirflowEnv:
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.component_logs.mkdir(parents=True, exist_ok=True)
        with (self.component_logs / "db-migrate.log").open("ab") as log:
            subprocess.run(
                [_bin("airflow"), "db", "migrate"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=240,
                cwd=self.home,
                start_new_session=True,
            )
        self.timings["db_migrate"] = time.monotonic() - t0
        self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"])
        self._spawn("scheduler", ["scheduler", "--skip-serve-logs"])
        self._spawn("dag-processor", ["dag-processor"])
        self._spawn("triggerer", ["triggerer", "--skip-serve-logs"])
        self._started_at = t0
        return self

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {proc.returncode}:\n{tail(self.component_logs / f'{name}.log')}"
                )

    def wait_ready(self, dag_ids: Iterable[str] = (), timeout: float = 180) -> None:
        """Wait for a healthy api-server, scheduler, triggerer and dag-processor, and for ``dag_ids`` to be parsed."""
        deadline = time.monotonic() + timeout
        wanted = set(dag_ids)
        last: object = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = self._client.get("/monitor/health").json()
                healthy = all(
                    (health.get(part) or {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                )
                dags = {d["dag_id"] for d in self.get("/dags", params={"limit": 1000})["dags"]} if wanted else set()
                last = (health, sorted(dags))
                if healthy and wanted <= dags:
                    self.timings["startup"] = time.monotonic() - self._started_at
                    return
                errors = self.get("/importErrors")["import_errors"]
                if errors:
                    raise RuntimeError(f"DAG import errors: {json.dumps(errors, indent=1)}")
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
            time.sleep(0.5)
        raise TimeoutError(f"Airflow not ready after {timeout}s; last seen: {last}\n{self.component_tails()}")

    # ---------------------------------------------------------------- REST
    def get(self, path: str, **kwargs: Any) -> Any:
        response = self._client.get(path, **kwargs)
        response.raise_for_status()
        return response.json()

    def unpause(self, dag_id: str) -> None:
        self._client.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, unpause: bool = True) -> str:
        if unpause:
            self.unpause(dag_id)
        response = self._client.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf or {})})
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            self._check_alive()
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                return state
            time.sleep(1)
        raise TimeoutError(f"{dag_id}/{run_id} still {state!r} after {timeout}s\n{self.failure_report(dag_id, run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        entry = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": "true"},
        )
        value = entry["value"]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    # ---------------------------------------------------------------- logs
    def _task_log_dir(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Path:
        path = self.log_folder / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return path / f"map_index={map_index}" if map_index >= 0 else path

    def task_log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int = 1,
        map_index: int = -1,
        *,
        triggers: bool = True,
    ) -> str:
        """The worker log of one attempt, with the attempt's trigger logs (``attempt=N.log.trigger.M.log``) appended
        unless ``triggers`` is False."""
        folder = self._task_log_dir(dag_id, run_id, task_id, map_index)
        trigger_logs = self.trigger_log_files(dag_id, run_id, task_id, try_number, map_index) if triggers else []
        parts = []
        for path in [folder / f"attempt={try_number}.log", *trigger_logs]:
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def trigger_log_files(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> list[Path]:
        folder = self._task_log_dir(dag_id, run_id, task_id, map_index)
        return sorted(folder.glob(f"attempt={try_number}.log.trigger.*.log"))

    def component_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"===== {name} (last {lines} lines)\n{tail(self.component_logs / f'{name}.log', lines)}"
            for name in ("db-migrate", *COMPONENTS)
            if (self.component_logs / f"{name}.log").exists()
        )

    def failure_report(self, dag_id: str, run_id: str, lines: int = 40) -> str:
        """Logs of every task instance of the run that did not succeed, plus scheduler and triggerer tails."""
        out = [f"##### {dag_id} / {run_id}"]
        try:
            tis = self.task_instances(dag_id, run_id)
        except httpx.HTTPError as exc:
            tis = []
            out.append(f"<cannot list task instances: {exc}>")
        for ti in tis:
            if ti["state"] == "success":
                continue
            label = f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]
            out.append(f"=== {label}: {ti['state']} (try {ti['try_number']})")
            for attempt in range(1, max(ti["try_number"], 1) + 1):
                out.append(self.task_log(dag_id, run_id, ti["task_id"], attempt, ti["map_index"]) or "<no log file>")
        for name in ("scheduler", "triggerer"):
            out.append(f"===== {name} (last {lines} lines)\n{tail(self.component_logs / f'{name}.log', lines)}")
        return "\n".join(out)

    # ---------------------------------------------------------------- processes
    def task_processes(self, ti_id: str) -> list[psutil.Process]:
        """Processes of one running task instance: the task runner titles itself ``airflow worker -- <ti id>``."""
        found = []
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if f"airflow worker -- {ti_id}" in " ".join(child.cmdline()):
                            found.append(child)
        return found

    # ---------------------------------------------------------------- teardown
    def stop(self) -> None:
        self._client.close()
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        for proc in self.procs.values():
            _kill_group(proc, grace=10)
        self.procs.clear()

    def __enter__(self) -> AirflowEnv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def liangxin_airflow(
    *,
    output_dir: Path,
    dag_folders: Mapping[str, Path] | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    sim_durations: str = "0.5,0.5,1.5",
    sim_faults: Mapping[str, Any] | None = None,
    home: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[AirflowEnv, Simulator | None]]:
    """A simulator (unless ``base_url`` is given) and an Airflow whose ``liangxin_default`` connection points at it."""
    sim = None
    try:
        if base_url is None:
            sim = Simulator(durations=sim_durations, faults=sim_faults, log_dir=home).start()
            conn = sim.connection_json()
        else:
            conn = json.dumps({"conn_type": "liangxin", "host": base_url, "password": api_key or ""})
        env = AirflowEnv(
            dag_folders=dag_folders,
            home=home,
            env={"AIRFLOW_CONN_LIANGXIN_DEFAULT": conn, "LIANGXIN_OUTPUT_DIR": str(output_dir), **(extra_env or {})},
        )
        try:
            env.start()
            yield env, sim
        finally:
            env.stop()
    finally:
        if sim is not None:
            sim.stop()


def run_demo(
    output_dir: str | Path,
    prompt: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 300,
) -> Path:
    """Run ``liangxin_seedream_single`` on a real Airflow and return the path of the stored image.

    Starts the simulator unless ``base_url`` is given. The temporary ``AIRFLOW_HOME`` is removed on success and
    kept (its path is in the error) on failure.
    """
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="liangxin-demo-airflow-"))
    dag_id = "liangxin_seedream_single"
    # The simulator finishes in seconds: poll it often. A real LiangXin task takes longer; keep the DAG default.
    extra_env = {"LIANGXIN_POLL_INTERVAL": "1"} if base_url is None else {}
    with liangxin_airflow(output_dir=output, base_url=base_url, api_key=api_key, home=home, extra_env=extra_env) as (
        env,
        _sim,
    ):
        env.wait_ready([dag_id], timeout=timeout)
        run_id = env.trigger(dag_id, {"prompt": prompt} if prompt else None)
        state = env.wait_for_run(dag_id, run_id, timeout=timeout)
        if state != "success":
            raise RuntimeError(
                f"{dag_id} run {run_id} ended {state} (Airflow home kept: {home})\n{env.failure_report(dag_id, run_id)}"
            )
        image = local_path(env.xcom(dag_id, run_id, "report_image"))
    shutil.rmtree(home, ignore_errors=True)
    return image


def local_path(stored: str) -> Path:
    """A stored result's path as a local ``Path`` (the provider reports ``file://`` URLs for local folders)."""
    return Path(url2pathname(urlsplit(stored).path)) if stored.startswith("file://") else Path(stored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.airflow_env", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run liangxin_seedream_single on a real Airflow and print the image path")
    demo.add_argument("--output-dir", default=os.environ.get("LIANGXIN_OUTPUT_DIR", "/tmp/liangxin-output"))
    demo.add_argument("--prompt", default=None)
    args = parser.parse_args(argv)
    base_url = os.environ.get("LIANGXIN_BASE_URL") or None
    api_key = os.environ.get("LIANGXIN_API_KEY") or None
    started = time.monotonic()
    path = run_demo(args.output_dir, args.prompt, base_url=base_url, api_key=api_key)
    where = "the real LiangXin API" if base_url else "the embedded simulator"
    print(f"Generated by {where} through a real Airflow in {time.monotonic() - started:.0f} s.", file=sys.stderr)
    print(f"Your image: {path}  (its JSON sidecar: {path.with_suffix('.json')})", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
