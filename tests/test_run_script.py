"""``./run``, the project's entry point: its help, and what ``./run bench`` installs."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [[], ["help"], ["no-such-command"]])
def test_help_is_the_header_comment_and_nothing_else(args):
    done = subprocess.run([str(REPO_ROOT / "run"), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    for command in ("./run demo", "./run tests", "./run bench", "./run faults", "./run celery", "./run compat"):
        assert command in done.stdout
    assert "set -" not in done.stdout  # the shell's options were printed as help
    assert not re.search(r"^#", done.stdout, re.M), done.stdout


def _constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_bench_extra_holds_the_peer_and_is_pinned():
    """The trigger benchmark measures against HttpEventTrigger (the HTTP provider): ``./run bench`` installs the
    ``bench`` extra with constraints.txt, so the README's numbers are reproducible from a fresh clone."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    bench = project["optional-dependencies"]["bench"]
    assert any(req.startswith("apache-airflow-providers-http") for req in bench), bench
    assert "apache-airflow-providers-http" in _constraint_pins()
    run = (REPO_ROOT / "run").read_text()
    assert '-c constraints.txt -e ".[bench]"' in run
    assert "airflow.providers.http.triggers.http" in (REPO_ROOT / "benchmarks" / "bench_trigger.py").read_text()


def test_celery_command_installs_its_extra_and_redis_and_stays_out_of_the_tests():
    """``./run celery`` needs no manual step on a fresh machine: the ``celery`` extra (pinned) and Debian's
    redis-server are installed by the command itself; ``./run tests`` never runs it (a long suite of its own)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    celery = project["optional-dependencies"]["celery"]
    assert any(req.startswith("apache-airflow-providers-celery") for req in celery), celery
    pins = _constraint_pins()
    assert {"apache-airflow-providers-celery", "celery", "kombu", "redis"} <= set(pins)
    run = (REPO_ROOT / "run").read_text()
    branch = run[run.index("\n  celery)") : run.index("\n  *)")]
    assert '-c constraints.txt -e ".[celery]"' in branch
    assert "apt-get install -y -qq --no-install-recommends redis-server" in branch
    assert "command -v redis-server" in branch
    assert "LIANGXIN_E2E_EXECUTOR" not in run[: run.index("\n  celery)")]  # ./run tests: LocalExecutor


def test_every_extra_requirement_is_pinned():
    """``pip install -c constraints.txt`` resolves the same versions everywhere (CI, ./run, a contributor)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = _constraint_pins()
    requirements = [*project["dependencies"]]
    for reqs in project["optional-dependencies"].values():
        requirements += [r for r in reqs if not r.startswith(project["name"])]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0]).lower() for r in requirements}
    assert names - set(pins) == set(), sorted(names - set(pins))
    assert "time-machine" not in names  # unused: removed


def test_compat_covers_every_claimed_airflow_minor_with_a_pinned_world():
    """``./run compat`` runs one latest patch per Airflow 3 minor from pyproject's lower bound up to the version CI
    pins, each installed from a constraints file that pins exactly that Airflow (docs/compatibility.md)."""
    run = (REPO_ROOT / "run").read_text()
    versions = re.search(r"^COMPAT_VERSIONS=\(([^)]*)\)", run, re.M).group(1).split()  # type: ignore[union-attr]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    floor = next(r for r in project["dependencies"] if r.startswith("apache-airflow>="))
    low = tuple(int(n) for n in floor.split(">=")[1].split(".")[:2])
    high = tuple(int(n) for n in _constraint_pins()["apache-airflow"].split(".")[:2])
    minors = [tuple(int(n) for n in v.split(".")[:2]) for v in versions]
    assert minors == [(3, minor) for minor in range(low[1], high[1] + 1)], (versions, floor)
    assert _constraint_pins()["apache-airflow"] in versions
    for version in versions:
        if version == _constraint_pins()["apache-airflow"]:
            continue
        pins = REPO_ROOT / "constraints" / f"airflow-{version.rsplit('.', 1)[0]}.txt"
        assert f"\napache-airflow=={version}\n" in pins.read_text(), pins


STUB_RUN = """#!{python}
import signal, sys, time
def stop(signum, frame):
    print(f"stub got {{signal.Signals(signum).name}}", flush=True)
    time.sleep(0.5)  # a teardown that takes a moment: CI must wait for it
    print("stub teardown done", flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
print("stub ready " + " ".join(sys.argv[1:]), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_ci_entry_point_passes_a_stop_signal_on_and_waits_for_the_teardown(tmp_path, signum):
    """A CI timeout signals ``.ci/run``'s shell only; it must reach ``./run tests`` (pytest) and wait for it."""
    (tmp_path / ".ci").mkdir()
    ci = tmp_path / ".ci" / "run"
    ci.write_text((REPO_ROOT / ".ci" / "run").read_text())
    stub = tmp_path / "run"
    stub.write_text(STUB_RUN.format(python=sys.executable))
    stub.chmod(0o755)
    proc = subprocess.Popen(
        ["bash", str(ci)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "stub ready tests"
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=20)
    finally:  # the shell and the stub share its process group: nothing outlives a failing test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "stub got SIGTERM" in out
    assert "stub teardown done" in out  # the shell waited for the teardown
    assert "CI finished" in out
    assert proc.returncode == 128 + signal.SIGTERM, out
