"""Input a strict server rejects with 400 in LiangXin's shape (never a 500), FastAPI's own errors in that shape
too, fault configs that could break every later request, and the ``[sim:echo-auth]`` hostile-server marker.
All over real HTTP."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from airflow_provider_liangxin._api import (
    CREATE_TASK_PATH,
    RECORD_INFO_PATH,
    LiangxinAuthError,
    build_record_info,
    parse_response,
)
from airflow_provider_liangxin.simulator import SimulatorConfig, SimulatorServer, run_simulator
from airflow_provider_liangxin.simulator.faults import parse_markers
from tests.simulator.conftest import create, record


def business(response: httpx.Response, status: int) -> str:
    """Assert the ``{code,msg,data:null}`` shape with ``code`` equal to the status; return ``msg``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["code", "msg", "data"]
    assert (body["code"], body["data"]) == (status, None)
    assert isinstance(body["msg"], str)
    assert body["msg"]
    return body["msg"]


def post_raw(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post(CREATE_TASK_PATH, content=body, headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------------------------------- createTask


@pytest.mark.parametrize("depth", [1000, 5000, 100_000])
def test_deeply_nested_json_is_400_not_500(client: httpx.Client, depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    body = b'{"model":"z-image","input":{"prompt":"x","extra":' + nested + b"}}"

    msg = business(post_raw(client, body), 400)

    assert "nested" in msg


def test_moderately_nested_json_that_parses_is_still_refused_before_it_is_walked(client: httpx.Client) -> None:
    body = b'{"model":"z-image","input":{"prompt":"x","extra":' + b'{"a":' * 200 + b"1" + b"}" * 200 + b"}}"
    assert "nested deeper than" in business(post_raw(client, body), 400)


def test_a_lone_surrogate_in_the_prompt_is_400_not_500(client: httpx.Client, sim: SimulatorServer) -> None:
    body = b'{"model":"z-image","input":{"prompt":"a cat \\ud800 on a mat"}}'

    msg = business(post_raw(client, body), 400)

    assert "surrogate" in msg
    assert sim.stats()["task_count"] == 0


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_number_literals_are_400(client: httpx.Client, literal: bytes) -> None:
    body = b'{"model":"z-image","input":{"prompt":"x","seed":' + literal + b"}}"
    assert business(post_raw(client, body), 400) == "request body must be valid JSON"


def test_invalid_utf8_is_400(client: httpx.Client) -> None:
    assert business(post_raw(client, b'{"model":"z-image","input":{"prompt":"\xff\xfe"}}'), 400)


def test_the_server_still_works_after_hostile_bodies(client: httpx.Client) -> None:
    post_raw(client, b"[" * 10_000)
    post_raw(client, b'{"model":"z-image","input":{"prompt":"\\udfff"}}')
    task_id = create(client, "an ordinary prompt", model="z-image")
    assert record(client, task_id)["taskId"] == task_id


# ------------------------------------------------------------------------------- FastAPI's own errors


def test_unknown_route_is_404_in_liangxin_shape(client: httpx.Client) -> None:
    assert business(client.get("/no/such/route"), 404) == "not found"
    assert business(client.get("/api/v1/jobs/nope"), 404) == "not found"


def test_wrong_method_is_405_in_liangxin_shape_with_allow(client: httpx.Client) -> None:
    response = client.delete(CREATE_TASK_PATH)
    assert business(response, 405) == "method not allowed"
    assert response.headers["allow"] == "POST"
    assert business(client.post(RECORD_INFO_PATH), 405) == "method not allowed"


# ---------------------------------------------------------------------------------------- /_sim/faults


@pytest.mark.parametrize(
    "payload",
    [
        b'{"durations": [NaN, 0, 0]}',
        b'{"durations": [1e999, 0, 0]}',  # parses as inf
        b'{"durations": "nan,0,0"}',
        b'{"durations": "0,inf,0"}',
        b'{"slow_seconds": Infinity}',
        b'{"slow_seconds": 1e999}',
        b'{"slow_rate": NaN}',
        b'{"retry_after": 1.5}',
        b'{"seed": "seven"}',
        b'{"fail_msg": 5}',
        b'{"unpriced_models": "z-image"}',
        b'{"models": {"z-image": {"durations": [0, 0, NaN]}}}',
        b'{"models": {"z-image": {"durations": [0, 0, 1e999]}}}',
        b'{"models": []}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_fault_configs_that_would_break_later_requests_are_400(
    client: httpx.Client, sim: SimulatorServer, payload: bytes
) -> None:
    before = sim.faults()

    business(client.post("/_sim/faults", content=payload), 400)

    assert sim.faults() == before
    task_id = create(client, "still works", model="z-image")  # no createTask turned into a 500
    assert record(client, task_id)["state"] in ("waiting", "queuing", "generating", "success")


def test_durations_at_the_limit_are_accepted_and_over_it_refused(sim: SimulatorServer) -> None:
    year = 365 * 86400
    assert sim.set_faults({"durations": [year, 0, 0]})["durations"] == [year, 0, 0]
    with pytest.raises(httpx.HTTPStatusError):
        sim.set_faults({"durations": [year + 1, 0, 0]})


def test_nan_durations_are_refused_by_the_config_and_cli_too() -> None:
    with pytest.raises(ValueError, match="finite"):
        SimulatorConfig(durations=(float("nan"), 0, 0))
    with pytest.raises(ValueError, match="finite"):
        SimulatorConfig(durations="inf,0,0")


# ------------------------------------------------------------------------------------- [sim:echo-auth]


def test_echo_auth_marker_makes_record_info_echo_the_authorization_header(
    client: httpx.Client, sim: SimulatorServer
) -> None:
    task_id = create(client, "a hostile server [sim:echo-auth]", model="z-image")

    response = client.get(RECORD_INFO_PATH, params={"taskId": task_id})

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "new_api_error"
    assert f"Authorization: Bearer {sim.api_key}" in error["message"]
    with pytest.raises(LiangxinAuthError) as raised:
        parse_response(build_record_info(task_id), 401, response.headers, response.content)
    assert sim.api_key in str(raised.value)  # what a client must mask before it logs


def test_echo_auth_does_not_touch_create_task_or_other_tasks(client: httpx.Client) -> None:
    hostile = create(client, "[sim:echo-auth] first", model="z-image")
    normal = create(client, "second", model="z-image")
    assert client.get(RECORD_INFO_PATH, params={"taskId": hostile}).status_code == 401
    assert record(client, normal)["taskId"] == normal


def test_echo_auth_marker_parses() -> None:
    assert parse_markers("x [SIM:ECHO-AUTH] y").echo_auth
    assert not parse_markers("x [sim:echo] y").echo_auth


def test_echo_auth_survives_a_restart_and_an_old_database_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "sim.db"
    old = sqlite3.connect(db)  # the table as written before the echo_auth column existed
    old.execute(
        "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, model TEXT NOT NULL, param TEXT NOT NULL, created_ms INTEGER "
        "NOT NULL, lengths TEXT NOT NULL, outcome TEXT NOT NULL, fail_code TEXT NOT NULL, fail_msg TEXT NOT NULL, "
        "callback_url TEXT, slow INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, content_key TEXT "
        "NOT NULL, video INTEGER NOT NULL, callback_state TEXT NOT NULL)"
    )
    old.commit()
    old.close()
    config = SimulatorConfig(durations=(0, 0, 0), db_path=str(db))
    with run_simulator(config) as first:
        headers = {"Authorization": f"Bearer {first.api_key}"}
        body = {"model": "z-image", "input": {"prompt": "[sim:echo-auth]"}}
        task_id = httpx.post(f"{first.base_url}{CREATE_TASK_PATH}", json=body, headers=headers).json()["data"]["taskId"]
    with run_simulator(config) as second:
        response = httpx.get(f"{second.base_url}{RECORD_INFO_PATH}", params={"taskId": task_id}, headers=headers)
    assert response.status_code == 401
