"""DAG files import the operator and the sensor while being parsed: what only the triggerer or the simulator
needs (aiohttp, FastAPI, uvicorn) must not come with them. Checked in a fresh interpreter (sys.modules), with no
timing assertions; ``python -X importtime`` gives the numbers (see the hook module's docstring)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("aiohttp", "yarl", "fastapi", "starlette", "uvicorn")

_PROBE = """
import json, sys
import airflow.sdk
before = set(sys.modules)
for name in {modules!r}:
    __import__(name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r} and m not in before)
print(json.dumps(heavy))
"""


def _heavy_modules_loaded_by(*modules: str) -> list[str]:
    code = _PROBE.format(modules=modules, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module",
    [
        "airflow_provider_liangxin.operators.liangxin",
        "airflow_provider_liangxin.sensors.liangxin",
        "airflow_provider_liangxin.hooks.liangxin",
        "airflow_provider_liangxin.triggers.liangxin",
    ],
)
def test_dag_parse_time_imports_leave_out_aiohttp_fastapi_and_uvicorn(module):
    assert _heavy_modules_loaded_by(module) == []


def test_the_probe_would_see_aiohttp():
    """The check above cannot pass vacuously: the same probe reports aiohttp when something does import it."""
    assert "aiohttp" in _heavy_modules_loaded_by("aiohttp")


def test_the_async_path_imports_aiohttp_once_and_caches_it():
    from airflow_provider_liangxin.hooks import liangxin as hook_module

    first = hook_module._aiohttp()
    assert first is hook_module._aiohttp() is sys.modules["aiohttp"]
