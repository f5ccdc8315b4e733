"""Provider registration: the metadata validates against Airflow's own schemas and resolves as users see it."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import airflow
import jsonschema
import pytest

import airflow_provider_liangxin
from airflow_provider_liangxin import get_provider_info

AIRFLOW_DIR = Path(airflow.__file__).parent


def _schema(name: str) -> dict:
    return json.loads((AIRFLOW_DIR / name).read_text())


def test_validates_against_runtime_provider_info_schema():
    jsonschema.validate(get_provider_info(), _schema("provider_info.schema.json"))


def test_connection_type_validates_against_provider_yaml_schema():
    schema = _schema("provider.yaml.schema.json")["properties"]["connection-types"]
    jsonschema.validate(get_provider_info()["connection-types"], schema)


def test_connection_type_has_no_hyphen_and_matches_hook():
    from airflow_provider_liangxin.hooks.liangxin import LiangxinHook

    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == LiangxinHook.conn_type == "liangxin"
    assert conn["hook-name"] == LiangxinHook.hook_name == "LiangXin"
    assert conn["conn-fields"].keys() == {"timeout", "verify_ssl"}


def test_every_listed_class_and_module_imports():
    info = get_provider_info()
    module, _, cls = info["connection-types"][0]["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module), cls)
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(section, []):
            for mod in entry["python-modules"]:
                importlib.import_module(mod)
    for link in info.get("extra-links", []):
        module, _, cls = link.rpartition(".")
        assert getattr(importlib.import_module(module), cls)
    assert info["versions"] == [airflow_provider_liangxin.__version__]


def test_entry_point_resolves_via_importlib_metadata():
    (ep,) = [
        e
        for e in importlib.metadata.entry_points(group="apache_airflow_provider")
        if e.value.startswith("airflow_provider_liangxin")
    ]
    assert ep.load()()["package-name"] == "airflow-provider-liangxin"
    assert importlib.metadata.version("airflow-provider-liangxin") == airflow_provider_liangxin.__version__


@pytest.mark.parametrize(
    "uri_or_json",
    [
        "liangxin://:sk-abc@lx.example.com:443",
        '{"conn_type": "liangxin", "host": "https://lx.example.com", "password": "sk-abc"}',
    ],
)
def test_conn_type_survives_uri_and_json(uri_or_json):
    from airflow.sdk import Connection

    conn = (
        Connection.from_json(uri_or_json, conn_id="lx")
        if uri_or_json.startswith("{")
        else Connection.from_uri(uri_or_json, conn_id="lx")
    )
    assert conn.conn_type == "liangxin"
    assert conn.password == "sk-abc"


def test_airflow_providers_list_shows_the_provider():
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=True,
    ).stdout
    (listing,) = [line for line in out.splitlines() if line.startswith("[{")]
    packages = {p["package_name"]: p for p in json.loads(listing)}
    assert packages["airflow-provider-liangxin"]["version"] == airflow_provider_liangxin.__version__


def test_importing_the_package_is_light():
    code = (
        "import sys, airflow_provider_liangxin; "
        "print(sorted(m for m in sys.modules if m.startswith(('airflow.', 'httpx', 'aiohttp'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
