"""``./run``, the project's entry point: its help, and what ``./run bench`` installs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [[], ["help"], ["no-such-command"]])
def test_help_is_the_header_comment_and_nothing_else(args):
    done = subprocess.run([str(REPO_ROOT / "run"), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    for command in ("./run demo", "./run tests", "./run bench"):
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
