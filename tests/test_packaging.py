"""The package can be published: ``python -m build`` gives a wheel and a complete sdist, and a fresh venv installs
the wheel with its licence.

Offline and quick: no build isolation (setuptools and build are pinned test dependencies), the wheel is built from
the sdist (as an index's installer would), and the fresh venv installs it with ``--no-deps``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_sdist_is_a_complete_source_distribution(dist):
    """Everything ``./run tests``, ``./run demo`` and ``./run bench`` need from the unpacked folder, and the docs."""
    with tarfile.open(dist["sdist"]) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
    names = set(members)
    for required in [
        "LICENSE",
        "README.md",
        "constraints.txt",
        "constraints/airflow-3.0.txt",
        "run",
        ".ci/run",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/support/scripted_server.py",
        "tests/e2e/airflow_env.py",
        "tests/e2e/dags/e2e_smoke.py",
        "docs/index.md",
        "docs/result-view.md",
        "docs/images/result-view-single.png",
        "dags/liangxin_seedream_single.py",
        "benchmarks/bench_trigger.py",
        "airflow_provider_liangxin/py.typed",
        "airflow_provider_liangxin/LiangxinRunFacet.json",
    ]:
        assert required in names, f"{required} missing from the sdist"
    # Every test module ships with the package it tests.
    tests = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").rglob("*.py")}
    assert tests <= names, sorted(tests - names)
    assert members["run"].mode & 0o111, "run lost its executable bit"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_wheel_carries_the_licence_and_no_tests(dist):
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = whl.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = whl.read(metadata).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert "License-Expression: Apache-2.0" in text
    assert "License-File: LICENSE" in text
    assert "Project-URL: Homepage, https://github.com/airflow-provider-liangxin/airflow-provider-liangxin" in text
    assert not [n for n in names if n.startswith(("tests/", "dags/", "docs/", "benchmarks/"))]
    # lineage.py's facet names its schema, which ships beside it.
    assert "airflow_provider_liangxin/LiangxinRunFacet.json" in names


def test_a_fresh_venv_installs_the_wheel(dist, tmp_path):
    """A plain venv (no system site-packages), ``pip install --no-deps``: the metadata, licence file and entry
    points are there, as Airflow's provider discovery reads them."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--no-index",
         str(dist["wheel"])],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    probe = (
        "import importlib.metadata as m, pathlib\n"
        "d = m.distribution('airflow-provider-liangxin')\n"
        "lic = [f for f in d.files if f.name == 'LICENSE']\n"
        "assert lic, d.files\n"
        "text = pathlib.Path(d.locate_file(lic[0])).read_text()\n"
        "assert 'Apache License' in text and 'Version 2.0' in text\n"
        "assert d.metadata['License-Expression'] == 'Apache-2.0'\n"
        "eps = {e.group for e in d.entry_points}\n"
        "assert 'apache_airflow_provider' in eps, eps\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('airflow') is None, 'not a fresh venv: Airflow is importable'\n"
        "print(d.version)\n"
    )
    check = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == dist["wheel"].name.split("-")[1]


def test_readme_links_work_on_a_package_index():
    """The README is the package's long description: on an index a relative link (``dags/``, ``docs/``) points
    at the index itself, so every link is absolute (or an in-page anchor)."""
    readme = (REPO_ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets, "no links found: the pattern is broken"
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == []
