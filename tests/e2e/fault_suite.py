"""The fault suite: deferrable LiangXin tasks on a real Airflow while LiangXin and Airflow misbehave.

One Airflow 3 deployment of the e2e harness (api-server, scheduler, dag-processor and two triggerers; LocalExecutor,
SQLite) and the LiangXin simulator with SQLite persistence, answering recordInfo with the fault mix of issue 14:
20 % 5xx, 10 % 429 + Retry-After, 5 % dropped connections, and failing 10 % of tasks. Each scenario triggers
single-operator tasks, mapped task instances and batches (``tests/e2e/dags/e2e_faults.py``) and disrupts the stack
while they run:

* ``simulator restart``: the simulator is stopped and started again mid-run (its tasks survive in SQLite);
* ``triggerer kill -9``: the triggerer holding the most triggers is SIGKILLed; Airflow hands its
  triggers to the other once its heartbeat is older than ``[triggerer] triggerer_health_check_threshold`` (5 s
  here);
* ``scheduler + api-server restart``: the scheduler is stopped (its LocalExecutor lets running tasks finish) and
  started again, then the api-server (the Execution API every task process talks to).

Checked for every scenario (``ScenarioResult.problems``): every Airflow task instance ends in the state its LiangXin
task dictates (success for success, failed for fail; a batch fails when more items failed than it tolerates),
exactly one LiangXin task per prompt (a duplicate is a paid createTask too many), and the API key in no log file, no
XCom and no trigger row (kwargs decrypted with the deployment's Fernet key, sampled while the triggers exist).

``./run faults`` runs the full suite and prints the table; tests/e2e/test_faults.py runs a small scenario in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
from cryptography.fernet import Fernet, InvalidToken

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script (./run faults)
    sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.airflow_env import (  # noqa: E402
    E2E_DAGS,
    SQLITE_SETTINGS_MODULE,
    AirflowEnv,
    Progress,
    Simulator,
    install_signal_handlers,
    interrupt_signal,
    liangxin_airflow,
    tail,
)

DAG_SINGLE, DAG_MAPPED, DAG_BATCH = "e2e_faults_single", "e2e_faults_mapped", "e2e_faults_batch"
DAG_IDS = (DAG_SINGLE, DAG_MAPPED, DAG_BATCH)
SINGLE_TASKS = 5  # tasks of e2e_faults_single (tests/e2e/dags/e2e_faults.py)
BATCH_MAX_FAILED = 1  # MAX_FAILED of e2e_faults_batch
RECORD_INFO = "GET /api/v1/jobs/recordInfo"

#: The issue's mix as shares of all recordInfo calls. The simulator rolls drop, then 429, then 5xx, each on what
#: the earlier rolls left, so each rate below is the share divided by what is left for it.
DROP, RATE_LIMITED, SERVER_ERROR, TASK_FAIL = 0.05, 0.10, 0.20, 0.10
FAULTS: dict[str, Any] = {
    "seed": 14,
    "recordinfo_drop_rate": DROP,
    "recordinfo_rate_limit_rate": RATE_LIMITED / (1 - DROP),
    "recordinfo_error_rate": SERVER_ERROR / (1 - DROP - RATE_LIMITED),
    "retry_after": 1,
    "task_fail_rate": TASK_FAIL,
}
#: waiting, queuing, generating: several seconds, so a trigger does not fire within a few seconds of its deferral
#: (Airflow 3.3.2's deferral race, apache/airflow#72716, would be measured instead of the faults).
SIM_DURATIONS = "1,1,6"
TRIGGERER_HEALTH_CHECK_THRESHOLD = 5
#: The text of Airflow's deferral race (apache/airflow#72716) in a scheduler log.
#: The provider's log of a createTask whose connection closed without an answer (one line per lost call).
LOST_CREATE = re.compile(r"createTask[^\n]*?(?:Server disconnected without sending a response|RemoteProtocolError)")
LOST_ITEM = re.compile(r"item (\d+): createTask failed: [^\n]*?(?:Server disconnected|RemoteProtocolError)")
#: A trigger's log file, named after the triggerer job running it.
TRIGGER_LOG = re.compile(r"\.log\.trigger\.(\d+)\.log$")
RACE_SIGNS = re.compile(
    r"state changed externally|no longer running|but the task instance's state attribute is queued", re.IGNORECASE
)

SIM_RESTART, TRIGGERER_KILL, SCHEDULER_RESTART, API_RESTART = (
    "simulator restart",
    "triggerer kill -9",
    "scheduler restart",
    "api-server restart",
)


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    #: Runs of e2e_faults_single (SINGLE_TASKS tasks each).
    single_runs: int
    #: Task instances of one e2e_faults_mapped run.
    mapped: int
    batches: int
    batch_size: int
    disruptions: tuple[str, ...]

    @property
    def liangxin_tasks(self) -> int:
        return self.single_runs * SINGLE_TASKS + self.mapped + self.batches * self.batch_size


FULL = (
    Scenario("simulator faults + restart", 4, 40, 4, 20, (SIM_RESTART,)),
    Scenario("two triggerers, one killed", 4, 40, 4, 20, (TRIGGERER_KILL,)),
    Scenario("scheduler + api-server restart", 4, 40, 4, 20, (SCHEDULER_RESTART, API_RESTART)),
)
#: The CI subset (tests/e2e/test_faults.py): 21 LiangXin tasks, every disruption but the Airflow restarts.
QUICK = Scenario("quick: faults + sim restart + triggerer kill", 1, 6, 1, 10, (SIM_RESTART, TRIGGERER_KILL))


@dataclasses.dataclass
class ScenarioResult:
    scenario: Scenario
    task_instances: int = 0
    liangxin_tasks: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    right: int = 0
    wrong: list[str] = dataclasses.field(default_factory=list)
    duplicates: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)
    #: createTask calls lost when the simulator restarted (the connection closed without an answer): ambiguous, so
    #: the provider does not retry them (a retry could pay twice); the item or task then counts as failed.
    lost_creates: int = 0
    key_leaks: list[str] = dataclasses.field(default_factory=list)
    disruptions_done: list[str] = dataclasses.field(default_factory=list)
    #: Components that exited on their own (not killed or restarted by the suite), each started again.
    crashes: list[str] = dataclasses.field(default_factory=list)
    #: Triggerer kill: triggers the killed triggerer held; of those, seen owned by a live triggerer afterwards, and
    #: neither seen moved nor finished (deleted) by the end.
    orphaned_triggers: int = 0
    moved_triggers: int = 0
    stranded_triggers: int = 0
    race_lines: int = 0
    #: Seconds between the simulator's stop and its answering again.
    simulator_down: float = 0.0
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        found = [f"wrong final state: {w}" for w in self.wrong]
        found += [f"no LiangXin task for {m}" for m in self.missing]
        if self.duplicates:
            found.append(f"{self.duplicates} duplicate createTask")
        found += [f"API key found in {leak}" for leak in self.key_leaks]
        found += [f"airflow {crash} (started again)" for crash in self.crashes]
        for wanted in self.scenario.disruptions:
            if wanted not in self.disruptions_done:
                found.append(f"{wanted} never happened (the runs ended first)")
        if TRIGGERER_KILL in self.scenario.disruptions:
            if not self.orphaned_triggers:
                found.append("the killed triggerer held no trigger: the kill proved nothing")
            elif not self.moved_triggers:
                found.append("no trigger of the killed triggerer was seen on a live one")
            if self.stranded_triggers:
                found.append(f"{self.stranded_triggers} triggers of the killed triggerer still on it at the end")
        return found


# ------------------------------------------------------------------------------------------------ Airflow DB


class AirflowDB:
    """Read-only look-ups in the deployment's SQLite metadata DB, for what the REST API does not show: the trigger
    rows (owner, kwargs encrypted with the deployment's Fernet key) and the XCom values."""

    def __init__(self, env: AirflowEnv, fernet_key: str) -> None:
        self.path = env.home / "airflow.db"
        self.fernet = Fernet(fernet_key.encode())

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def triggers(self) -> list[tuple[int, int | None, str]]:
        """(trigger id, triggerer job id, kwargs decrypted) of every trigger row."""
        with self._connect() as conn:
            rows = conn.execute("SELECT id, triggerer_id, kwargs FROM trigger").fetchall()
        out = []
        for trigger_id, triggerer_id, kwargs in rows:
            try:
                text = self.fernet.decrypt(kwargs.encode()).decode()
            except InvalidToken:
                text = kwargs  # stored without encryption: read it as it is
            out.append((int(trigger_id), triggerer_id, text))
        return out

    def xcom_values(self) -> list[str]:
        with self._connect() as conn:
            return [str(value) for (value,) in conn.execute("SELECT value FROM xcom")]


# ------------------------------------------------------------------------------------------------ the runner


class FaultSuite:
    """Runs scenarios one after another on one deployment; ``run(scenario)`` returns its checked result."""

    def __init__(self, env: AirflowEnv, sim: Simulator, db: AirflowDB, say: Callable[[str], None]) -> None:
        self.env = env
        self.sim = sim
        self.db = db
        self.say = say
        self.client = httpx.Client(base_url=f"{env.base_url}/api/v2", timeout=60)
        #: Trigger kwargs seen while the triggers existed (a trigger row is deleted once its task resumed).
        self.trigger_kwargs: dict[int, str] = {}
        #: Triggerer kill: the killed job's id, the triggers it held, those seen owned by a live triggerer since.
        self._dead_job: int | None = None
        self._orphans: set[int] = set()
        self._moved: set[int] = set()

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- Airflow look-ups
    def _get(self, path: str, **params: Any) -> Any:
        """A REST read, tried again for up to 3 minutes: the api-server may be restarting (30-60 s under load)."""
        deadline = time.monotonic() + 180
        while True:
            try:
                response = self.client.get(path, params=params)
                if response.status_code < 500:
                    response.raise_for_status()
                    return response.json()
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET {path}: no answer for 3 minutes ({problem})")
            time.sleep(2)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:  # the REST API answers at most 100 per page
            page = self._get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100, offset=len(found))
            found += page["task_instances"]
            if len(found) >= page["total_entries"] or not page["task_instances"]:
                return found

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self._get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def sample_triggers(self) -> list[tuple[int, int | None, str]]:
        try:
            rows = self.db.triggers()
        except sqlite3.Error as exc:  # busy under load: the next sample will do
            self.say(f"trigger sample skipped: {exc}")
            return []
        for trigger_id, owner, kwargs in rows:
            self.trigger_kwargs[trigger_id] = kwargs
            if trigger_id in self._orphans and owner is not None and owner != self._dead_job:
                self._moved.add(trigger_id)
        return rows

    # ---------------------------------------------------------------- one scenario
    def run(self, scenario: Scenario, timeout: float = 900) -> ScenarioResult:
        result = ScenarioResult(scenario)
        tag = f"{re.sub(r'[^a-z0-9]+', '-', scenario.name.lower()).strip('-')[:24]}-{secrets.token_hex(3)}"
        self.say(f"== {scenario.name}: {scenario.liangxin_tasks} LiangXin tasks (tag {tag})")
        stats_before = self.sim.stats()
        race_before = self._race_lines()
        started = time.monotonic()
        runs = self._trigger(scenario, tag)
        self._watch(scenario, tag, runs, result, started + timeout)
        result.seconds = time.monotonic() - started
        self._check(scenario, tag, runs, result, stats_before)
        result.race_lines = self._race_lines() - race_before
        return result

    def _trigger(self, scenario: Scenario, tag: str) -> list[tuple[str, str, str]]:
        """(dag id, run id, tag of its prompts) of every run of the scenario."""
        runs = []
        for i in range(scenario.single_runs):
            run_tag = f"{tag}-s{i}"
            runs.append((DAG_SINGLE, self.env.trigger(DAG_SINGLE, {"tag": run_tag}), run_tag))
        if scenario.mapped:
            runs.append((DAG_MAPPED, self.env.trigger(DAG_MAPPED, {"tag": tag, "n": scenario.mapped}), tag))
        for i in range(scenario.batches):
            run_tag = f"{tag}-b{i}"
            conf = {"tag": run_tag, "n": scenario.batch_size}
            runs.append((DAG_BATCH, self.env.trigger(DAG_BATCH, conf), run_tag))
        self.say(f"triggered {len(runs)} DAG runs")
        return runs

    def _created(self, tag: str) -> int:
        return sum(1 for t in self.sim.tasks() if (t["prompt"] or "").startswith(f"faults {tag}"))

    def _watch(
        self, scenario: Scenario, tag: str, runs: list[tuple[str, str, str]], result: ScenarioResult, deadline: float
    ) -> None:
        """Wait for every run to end, disrupting the stack on the way (each disruption once, at its moment)."""
        pending = list(scenario.disruptions)
        last_report = 0.0
        while True:
            self._restart_crashed(result)
            self.sample_triggers()
            states = Counter(self.run_state(dag_id, run_id) for dag_id, run_id, _tag in runs)
            done = states["success"] + states["failed"]
            created = self._created(tag)
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                self.say(f"{done}/{len(runs)} runs ended, {created}/{scenario.liangxin_tasks} LiangXin tasks created")
            if done == len(runs):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{scenario.name}: {len(runs) - done} runs still running ({dict(states)})")
            if pending:
                self._disrupt(pending, created / scenario.liangxin_tasks, result)
            time.sleep(2)

    def _restart_crashed(self, result: ScenarioResult) -> None:
        """A component that exited on its own is a finding (reported), then started again so the runs can end."""
        for name, proc in list(self.env.procs.items()):
            if proc.poll() is not None:
                log = self.env.component_logs / f"{name}.log"
                errors = [line for line in tail(log, 200).splitlines() if "Error" in line]
                why = errors[-1][:200] if errors else "no error line"
                result.crashes.append(f"{name} exited with {proc.returncode}: {why}")
                self.say(f"airflow {name} exited with {proc.returncode} ({why}); starting it again")
                self.env.procs.pop(name)
                self.env.start_component(name)

    def _disrupt(self, pending: list[str], progress: float, result: ScenarioResult) -> None:
        """Each disruption once, when the runs are far enough along (share of the LiangXin tasks created)."""
        for what in list(pending):
            if what == SIM_RESTART and progress >= 0.5:
                self.say("restarting the simulator")
                began = time.monotonic()
                self.sim.restart(down=2)
                result.simulator_down = time.monotonic() - began
                self.say(f"simulator answering again after {result.simulator_down:.1f} s")
            elif what == TRIGGERER_KILL and progress >= 0.2:
                if not self._kill_a_triggerer(result):
                    continue
            elif what == SCHEDULER_RESTART and progress >= 0.3:
                self.say("restarting the scheduler (SIGTERM, it lets its running tasks finish)")
                self.env.restart_component("scheduler", leader_first=120)
            elif what == API_RESTART and progress >= 0.5 and SCHEDULER_RESTART not in pending:
                self.say("restarting the api-server")
                self.env.restart_component("api-server")
            else:
                continue
            pending.remove(what)
            result.disruptions_done.append(what)

    def _triggerer_jobs(self) -> dict[int, str]:
        """Triggerer job id -> component name. The job table keeps no pid, but a triggerer keeps each running
        trigger's log file open, and Airflow names it ``...attempt=N.log.trigger.<job id>.log``."""
        found: dict[int, str] = {}
        for name in self.env.triggerers:
            proc = self.env.procs.get(name)
            if proc is None:
                continue
            for member in self.env.session_members(proc):
                with contextlib.suppress(psutil.Error):
                    for opened in member.open_files():
                        match = TRIGGER_LOG.search(opened.path)
                        if match:
                            found[int(match.group(1))] = name
        return found

    def _kill_a_triggerer(self, result: ScenarioResult) -> bool:
        """SIGKILL the triggerer holding the most triggers (once it holds at least 2): its triggers are the orphans
        the other triggerer must take over."""
        rows = self.sample_triggers()
        jobs = self._triggerer_jobs()
        owners = Counter(owner for _id, owner, _kwargs in rows if owner in jobs)
        alive = [name for name in self.env.triggerers if name in self.env.procs]
        if len(alive) < 2 or not owners or owners.most_common(1)[0][1] < 2:
            return False
        job_id, held = owners.most_common(1)[0]
        self._dead_job, self._orphans, self._moved = job_id, {tid for tid, owner, _ in rows if owner == job_id}, set()
        killed = len(self.env.kill_component(jobs[job_id]))
        self.say(f"killed {jobs[job_id]} with SIGKILL ({killed} processes; job {job_id}, holding {held} triggers)")
        result.orphaned_triggers = len(self._orphans)
        return True

    def _follow_orphans(self, result: ScenarioResult) -> None:
        """The killed triggerer's triggers: seen owned by a live triggerer since the kill, and those still on the
        dead one at the end (a trigger row is deleted once its event resumed the task)."""
        rows = {tid: owner for tid, owner, _kwargs in self.sample_triggers()}
        result.moved_triggers = len(self._moved)
        result.stranded_triggers = sum(1 for tid in self._orphans if rows.get(tid, -1) == self._dead_job)
        self._orphans = set()

    # ---------------------------------------------------------------- the checks
    def _check(
        self,
        scenario: Scenario,
        tag: str,
        runs: list[tuple[str, str, str]],
        result: ScenarioResult,
        stats_before: dict[str, Any],
    ) -> None:
        if TRIGGERER_KILL in scenario.disruptions:
            self._follow_orphans(result)
        tasks = [t for t in self.sim.tasks() if (t["prompt"] or "").startswith(f"faults {tag}")]
        per_prompt = Counter(t["prompt"] for t in tasks)
        outcome = {t["prompt"]: t["outcome"] for t in tasks}
        result.liangxin_tasks = len(tasks)
        result.duplicates = sum(n - 1 for n in per_prompt.values() if n > 1)
        for dag_id, run_id, run_tag in runs:
            for ti in self.task_instances(dag_id, run_id):
                if ti["task_id"] == "plan":
                    continue
                result.task_instances += 1
                label = f"{dag_id}/{ti['task_id']}" + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
                prompts = self._prompts(dag_id, ti, run_tag, scenario)
                missing = [p for p in prompts if p not in outcome]
                if missing:
                    if not self._lost_creates(dag_id, run_id, ti, missing):
                        why = self._last_error(dag_id, run_id, ti)
                        result.missing.append(
                            f"{label} ({len(missing)} of {len(prompts)} prompts; {ti['state']}: {why})"
                        )
                        continue
                    result.lost_creates += len(missing)
                failed = sum(1 for p in prompts if outcome.get(p) != "success")
                tolerated = BATCH_MAX_FAILED if dag_id == DAG_BATCH else 0
                expected = "success" if failed <= tolerated else "failed"
                if ti["state"] == expected:
                    result.right += 1
                else:
                    why = self._race_line(dag_id, run_id, ti) or self._last_error(dag_id, run_id, ti)
                    result.wrong.append(f"{label} in {run_id}: {ti['state']}, LiangXin says {expected} ({why})")
        result.faults = self._faults(stats_before, self.sim.stats(), tasks)
        result.key_leaks = self._key_leaks()

    def _lost_creates(self, dag_id: str, run_id: str, ti: dict[str, Any], missing: list[str]) -> bool:
        """Whether the provider logged each missing prompt's createTask as ended without an answer: a batch item by
        its index, a single task by its one createTask."""
        text = self.env.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1), ti["map_index"])
        if dag_id == DAG_BATCH:
            lost = set(LOST_ITEM.findall(text))
            return all(prompt.rsplit(" ", 1)[1] in lost for prompt in missing)
        return len(missing) == 1 and LOST_CREATE.search(text) is not None

    def _last_error(self, dag_id: str, run_id: str, ti: dict[str, Any]) -> str:
        """The last error or warning of a task instance's worker log (why it ended as it did), shortened."""
        text = self.env.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1), ti["map_index"])
        last = "<no error in its log>"
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("level") in ("error", "warning"):
                    last = str(entry.get("event"))
        return last[:300]

    @staticmethod
    def _prompts(dag_id: str, ti: dict[str, Any], run_tag: str, scenario: Scenario) -> list[str]:
        if dag_id == DAG_SINGLE:
            return [f"faults {run_tag} single {ti['task_id'].removeprefix('single_')}"]
        if dag_id == DAG_MAPPED:
            return [f"faults {run_tag} mapped {ti['map_index']}"]
        return [f"faults {run_tag} batch {i}" for i in range(scenario.batch_size)]

    @staticmethod
    def _faults(before: dict[str, Any], after: dict[str, Any], tasks: list[dict[str, Any]]) -> dict[str, int]:
        def count(stats: dict[str, Any], status: str) -> int:
            return int(stats["requests"].get(RECORD_INFO, {}).get(status, 0))

        calls = {
            status: count(after, status) - count(before, status)
            for status in {*after["requests"].get(RECORD_INFO, {}), *before["requests"].get(RECORD_INFO, {})}
        }
        return {
            "recordInfo": sum(calls.values()),
            "5xx": sum(n for status, n in calls.items() if status.startswith("5")),
            "429": calls.get("429", 0),
            "dropped": calls.get("dropped", 0),
            "task fail": sum(1 for t in tasks if t["outcome"] == "fail"),
        }

    def _key_leaks(self) -> list[str]:
        key = self.sim.api_key
        leaks = []
        for path in sorted(self.env.home.rglob("*")):
            if path.is_file() and not path.name.startswith("simulator.db"):  # the simulator's own store
                with contextlib.suppress(OSError):
                    if key.encode() in path.read_bytes():
                        leaks.append(str(path.relative_to(self.env.home)))
        if any(key in value for value in self.db.xcom_values()):
            leaks.append("an XCom row")
        if any(key in kwargs for kwargs in self.trigger_kwargs.values()):
            leaks.append("a trigger row's kwargs")
        return leaks

    def _race_line(self, dag_id: str, run_id: str, ti: dict[str, Any]) -> str | None:
        """The scheduler's report of Airflow's deferral race (#72716) for this task instance, if there is one: the
        executor's late "success" for the deferred try, after the trigger had already resumed it."""
        label = f"<TaskInstance: {dag_id}.{ti['task_id']} {run_id}"
        if ti["map_index"] >= 0:
            label += f" map_index={ti['map_index']}"
        label += " ["
        with contextlib.suppress(OSError):
            for line in (self.env.component_logs / "scheduler.log").read_text(errors="replace").splitlines():
                if label in line and RACE_SIGNS.search(line):
                    return "Airflow's deferral race #72716: " + RACE_SIGNS.search(line).group(0)  # type: ignore[union-attr]
        return None

    def _race_lines(self) -> int:
        log = self.env.component_logs / "scheduler.log"
        with contextlib.suppress(OSError):
            return sum(1 for line in log.read_text(errors="replace").splitlines() if RACE_SIGNS.search(line))
        return 0


# ------------------------------------------------------------------------------------------------ the deployment


@contextlib.contextmanager
def fault_deployment(
    home: Path, progress: Callable[[str], None] | None = None, triggerers: int = 2
) -> Iterator[tuple[AirflowEnv, Simulator, AirflowDB]]:
    """The harness's Airflow with ``triggerers`` triggerers, a Fernet key of its own (so the suite can read the
    trigger rows' kwargs), a fresh non-dev API key (the dev key is public and printed by the simulator) and the
    simulator with ``--db`` (tasks and counters survive its restart)."""
    fernet_key = Fernet.generate_key().decode()
    with liangxin_airflow(
        output_dir=home / "output",
        home=home,
        dag_folders={"e2e-dags": E2E_DAGS},
        sim_durations=SIM_DURATIONS,
        sim_faults=FAULTS,
        sim_args=["--db", str(home / "simulator.db")],
        sim_api_key=f"sk-faults-{secrets.token_hex(16)}",
        triggerers=triggerers,
        progress=progress,
        extra_env={
            "AIRFLOW__CORE__FERNET_KEY": fernet_key,
            # A killed triggerer's triggers go to a live one once its heartbeat is this old (default 30 s).
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_CHECK_THRESHOLD),
            # The harness gives SQLite writers a minute (sync engine); the api-server's async engine too.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{SQLITE_SETTINGS_MODULE}.CONNECT_ARGS",
            # Task processes talk to the api-server (the Execution API). At that load it answered a task's start
            # call after more than the default 5 s, and the task failed before it ran; and while the api-server
            # restarts (30-60 s here) the default 5 tries are spent. Production-sized values for a loaded box:
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "15",
            # At that load the scheduler's own heartbeat stalled for 46 s, past the 30 s default: it took its own
            # running tasks for orphans and reset them to a new try, and those between createTask and recording
            # the taskId created a second LiangXin task (docs/faults.md, "What the runs found").
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "180",
        },
    ) as (env, sim):
        assert sim is not None
        env.wait_ready(DAG_IDS, timeout=300)
        yield env, sim, AirflowDB(env, fernet_key)


# ------------------------------------------------------------------------------------------------ the table

COLUMNS = ("scenario", "tasks", "faults injected", "right/wrong", "duplicates", "key leaks", "time")


def table(results: list[ScenarioResult]) -> str:
    rows = []
    for r in results:
        f = r.faults
        faults = (
            f"{f.get('5xx', 0)} 5xx, {f.get('429', 0)} 429, {f.get('dropped', 0)} drops of {f.get('recordInfo', 0)}"
            f" recordInfo; {f.get('task fail', 0)} tasks failed"
        )
        if r.lost_creates:
            faults += f"; {r.lost_creates} createTask lost in the restart"
        extra = []
        if r.scenario.disruptions:
            extra.append(" + ".join(r.disruptions_done) or "no disruption")
        if SIM_RESTART in r.disruptions_done:
            extra.append(f"simulator down {r.simulator_down:.0f} s")
        if TRIGGERER_KILL in r.scenario.disruptions:
            extra.append(f"{r.moved_triggers} of its {r.orphaned_triggers} triggers seen moved")
        if extra:
            faults += "; " + "; ".join(extra)
        tasks = f"{r.task_instances} TIs / {r.liangxin_tasks} LX"
        rows.append(
            (
                r.scenario.name,
                tasks,
                faults,
                f"{r.right}/{len(r.wrong) + len(r.missing)}",
                str(r.duplicates),
                str(len(r.key_leaks)),
                f"{r.seconds:.0f} s",
            )
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS)]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join([line, sep, *body])


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    parser = argparse.ArgumentParser(prog="./run faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the CI subset's scenario")
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home (logs) when something is wrong")
    args = parser.parse_args(argv)
    say = Progress()
    scenarios = (QUICK,) if args.quick else FULL
    home = Path(tempfile.mkdtemp(prefix="liangxin-faults-"))
    results: list[ScenarioResult] = []
    problems: list[str] = []
    code = 0
    try:
        with fault_deployment(home, progress=say) as (env, sim, db):
            suite = FaultSuite(env, sim, db, say)
            try:
                for scenario in scenarios:
                    result = suite.run(scenario)
                    results.append(result)
                    problems += [f"{scenario.name}: {p}" for p in result.problems]
                    say(f"{scenario.name}: {result.right} right, {len(result.problems)} problems")
                    if result.race_lines:
                        say(f"{result.race_lines} scheduler log lines of Airflow's deferral race (#72716)")
                    if TRIGGERER_KILL in scenario.disruptions:  # the next scenario has two triggerers again
                        for name in env.triggerers:
                            if name not in env.procs:
                                env.start_component(name)
            finally:
                suite.close()
    except KeyboardInterrupt as exc:
        code = 128 + interrupt_signal(exc)
        problems.append(f"interrupted by {interrupt_signal(exc).name}")
    except Exception as exc:  # a run that never ended, a component that would not start: reported, not raised
        code = 1
        problems.append(f"{type(exc).__name__}: {str(exc)[:2000]}")
    finally:
        if args.keep and problems:
            say(f"kept for inspection: {home}")
        elif home.exists():
            shutil.rmtree(home, ignore_errors=True)
    print(table(results), flush=True)
    for problem in problems:
        print(f"PROBLEM: {problem}", flush=True)
    if len(results) < len(scenarios):
        print(f"PROBLEM: {len(scenarios) - len(results)} of {len(scenarios)} scenarios did not finish", flush=True)
        return code or 1
    print("all invariants held" if not problems else f"{len(problems)} problems", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
