"""Every fault mode: prompt markers, fractions, per-model rules, and their exact answers."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from airflow_provider_liangxin._api import (
    CREATE_TASK_PATH,
    RECORD_INFO_PATH,
    LiangxinForbiddenError,
    LiangxinRateLimitError,
    build_create_task,
    parse_response,
)
from airflow_provider_liangxin.simulator import FaultConfig, SimulatorServer
from airflow_provider_liangxin.simulator.faults import PromptMarkers, parse_markers
from tests.simulator.conftest import create, record, wait_for_state


def _create(client: httpx.Client, prompt: str, model: str = "seedream-v4-5") -> httpx.Response:
    return client.post(CREATE_TASK_PATH, json={"model": model, "input": {"prompt": prompt}})


def test_fail_marker_ends_in_fail_with_default_code(client: httpx.Client) -> None:
    task_id = create(client, "a castle [sim:fail]")

    data = wait_for_state(client, task_id, "success", "fail")

    assert data["state"] == "fail"
    assert (data["failCode"], data["failMsg"]) == ("500", "simulated generation failure")
    assert data["resultJson"] == ""
    assert data["completeTime"] is not None


def test_fail_marker_with_code_and_message(client: httpx.Client) -> None:
    task_id = create(client, "a castle [sim:fail:501:content policy violation]")

    data = wait_for_state(client, task_id, "success", "fail")

    assert (data["state"], data["failCode"], data["failMsg"]) == ("fail", "501", "content policy violation")


def test_403_marker_is_quota_gateway_shape(client: httpx.Client) -> None:
    response = _create(client, "a castle [sim:403]")

    assert response.status_code == 403
    error = response.json()["error"]
    assert list(response.json()) == ["error"]
    assert error["type"] == "new_api_error"
    assert error["code"] == "insufficient_user_quota"
    assert re.fullmatch(r"user quota is not enough \(request id: sim-[0-9a-f]+\)", error["message"])
    with pytest.raises(LiangxinForbiddenError) as raised:
        parse_response(build_create_task("x", {}), 403, response.headers, response.content)
    assert raised.value.request_id.startswith("sim-")


def test_422_marker_is_business_shape(client: httpx.Client) -> None:
    response = _create(client, "a castle [sim:422]")

    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"code", "msg", "data"}
    assert body["code"] == 422
    assert body["data"] is None
    assert body["msg"]


def test_429_marker_has_retry_after_and_gateway_shape(client: httpx.Client) -> None:
    response = _create(client, "a castle [sim:429]")

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["type"] == "new_api_error"
    with pytest.raises(LiangxinRateLimitError) as raised:
        parse_response(build_create_task("x", {}), 429, response.headers, response.content)
    assert raised.value.retry_after == 1.0


def test_500_marker_is_business_shape(client: httpx.Client, sim: SimulatorServer) -> None:
    response = _create(client, "a castle [sim:500]")

    assert response.status_code == 500
    assert response.content == b'{"code":500,"msg":"simulated internal error","data":null}'
    assert sim.stats()["task_count"] == 0


def test_slow_marker_delays_create_and_record_info(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"slow_seconds": 0.3})
    started = time.monotonic()
    task_id = create(client, "a castle [sim:slow]")
    create_time = time.monotonic() - started
    started = time.monotonic()
    record(client, task_id)
    record_time = time.monotonic() - started

    assert create_time >= 0.3
    assert record_time >= 0.3


def test_drop_marker_closes_the_connection_without_a_response(client: httpx.Client, sim: SimulatorServer) -> None:
    with pytest.raises(httpx.TransportError):
        _create(client, "a castle [sim:drop]")

    assert sim.stats()["task_count"] == 0
    assert sim.stats()["requests"][f"POST {CREATE_TASK_PATH}"] == {"dropped": 1}
    assert _create(client, "a castle").status_code == 200  # the server is fine afterwards


def test_never_marker_stays_generating(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0, 0, 0.05]})
    task_id = create(client, "a castle [sim:never]")
    time.sleep(0.3)

    data = record(client, task_id)

    assert data["state"] == "generating"
    assert data["completeTime"] is None
    assert data["progress"] == 99


def test_record_info_error_rate_is_a_seeded_fraction(client: httpx.Client, sim: SimulatorServer) -> None:
    task_id = create(client)

    def count_errors() -> tuple[int, set[bytes]]:
        sim.set_faults({"recordinfo_error_rate": 0.2, "seed": 7})
        responses = [client.get(RECORD_INFO_PATH, params={"taskId": task_id}) for _ in range(300)]
        errors = [r for r in responses if r.status_code == 500]
        assert all(r.status_code in (200, 500) for r in responses)
        return len(errors), {r.content for r in errors}

    first, bodies = count_errors()
    again, _ = count_errors()

    assert 30 <= first <= 90
    assert first == again  # same seed, same order: same faults
    assert bodies == {b'{"code":500,"msg":"simulated internal error","data":null}'}


def test_fractions_for_create_task(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"rate_limit_rate": 1.0})
    limited = _create(client, "a castle")
    sim.set_faults({"quota_error_rate": 1.0})
    quota = _create(client, "a castle")
    sim.set_faults({"upstream_error_rate": 1.0})
    upstream = _create(client, "a castle")
    sim.set_faults({"create_error_rate": 1.0})
    internal = _create(client, "a castle")

    assert [r.status_code for r in (limited, quota, upstream, internal)] == [429, 403, 422, 500]
    assert limited.headers["Retry-After"] == "1"


def test_record_info_drop_and_rate_limit_fractions(client: httpx.Client, sim: SimulatorServer) -> None:
    task_id = create(client)
    sim.set_faults({"recordinfo_drop_rate": 1.0})
    with pytest.raises(httpx.TransportError):
        client.get(RECORD_INFO_PATH, params={"taskId": task_id})
    sim.set_faults({"recordinfo_rate_limit_rate": 1.0, "retry_after": 3})
    response = client.get(RECORD_INFO_PATH, params={"taskId": task_id})

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_task_fail_and_never_rates(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"task_fail_rate": 1.0, "fail_code": "501", "fail_msg": "upstream exploded", "durations": [0, 0, 0]})
    failed = record(client, create(client))
    sim.set_faults({"never_rate": 1.0, "durations": [0, 0, 0]})
    stuck = record(client, create(client))

    assert (failed["state"], failed["failCode"], failed["failMsg"]) == ("fail", "501", "upstream exploded")
    assert stuck["state"] == "generating"


def test_task_list_shows_each_prompt_and_decided_outcome_without_rolling_dice(
    client: httpx.Client, sim: SimulatorServer
) -> None:
    """What a load test compares its Airflow tasks with: the outcome LiangXin decided for each prompt, read without
    a recordInfo call (which the fault dice could answer with a 500, and which would count as a poll)."""
    sim.set_faults({"task_fail_rate": 0.5, "seed": 3, "durations": [0, 0, 0]})
    ids = [create(client, f"listed {i}") for i in range(20)]
    sim.set_faults({"recordinfo_error_rate": 1.0})
    requests_before = sim.stats()["requests"]

    listed = sim.tasks()

    requests_after = sim.stats()["requests"]
    assert [t["taskId"] for t in listed] == ids
    assert [t["prompt"] for t in listed] == [f"listed {i}" for i in range(20)]
    assert {t["outcome"] for t in listed} == {"success", "fail"}  # a seeded half each way: both occur
    assert [t["state"] for t in listed] == [t["outcome"] for t in listed]  # zero durations: already done
    assert requests_after.get("GET /api/v1/jobs/recordInfo") == requests_before.get("GET /api/v1/jobs/recordInfo")
    assert requests_after["GET /_sim/tasks"] == {"200": 1}
    assert sim.stats()["recordinfo_per_task"] == {}
    sim.set_faults({})
    assert [record(client, task_id)["state"] for task_id in ids] == [t["outcome"] for t in listed]


def test_per_model_rules_override_run_wide_settings(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0, 0, 0], "models": {"flux-2-pro": {"task_fail_rate": 1.0}}})

    flux = record(client, create(client, model="flux-2-pro"))
    seedream = record(client, create(client))

    assert flux["state"] == "fail"
    assert seedream["state"] == "success"


def test_unpriced_models_are_rejected(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"unpriced_models": ["imagen4-ultra"]})

    response = _create(client, "a castle", model="imagen4-ultra")

    assert response.status_code == 400
    assert response.json() == {"code": 400, "msg": "no price configured for model imagen4-ultra", "data": None}


def test_fault_config_round_trips_through_the_admin_api(sim: SimulatorServer) -> None:
    faults = FaultConfig(recordinfo_error_rate=0.25, seed=3, models={"z-image": {"slow_rate": 1.0}})

    echoed = sim.set_faults(faults)

    assert echoed == faults.to_dict() == sim.faults()
    assert FaultConfig.from_dict(echoed) == faults


def test_marker_parsing() -> None:
    assert parse_markers("plain prompt") == PromptMarkers()
    assert parse_markers(None) == PromptMarkers()
    assert parse_markers("x [sim:fail:422:bad words here] y").fail == ("422", "bad words here")
    assert parse_markers("[SIM:429]").status == 429
    combined = parse_markers("[sim:slow] and [sim:never] and [sim:unknown]")
    assert (combined.slow, combined.never, combined.drop, combined.status) == (True, True, False, None)


def test_fault_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault config keys"):
        FaultConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="drop_rate"):
        FaultConfig(drop_rate=1.5)
    with pytest.raises(ValueError, match="unknown keys"):
        FaultConfig(models={"z-image": {"seed": 1}})
    assert FaultConfig(models={"z-image": {"never_rate": 1}}).for_model("z-image").never_rate == 1
