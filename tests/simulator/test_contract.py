"""Routes, statuses and body shapes, byte for byte as the API notes document them."""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from airflow_provider_liangxin._api import (
    CREATE_TASK_PATH,
    RECORD_INFO_PATH,
    TaskRecord,
    TaskState,
    build_create_task,
    parse_create_task,
    parse_response,
)
from airflow_provider_liangxin.simulator import DEV_API_KEY, SimulatorConfig, SimulatorServer, create_app
from tests.simulator.conftest import create, record

TASK_ID = re.compile(r"^task_seedream-v4-5_\d{13}$")
INVALID_TOKEN = b'{"error":{"message":"invalid token","type":"new_api_error","code":""}}'


def test_create_task_success_body_is_exact(client: httpx.Client) -> None:
    response = client.post(CREATE_TASK_PATH, json={"model": "seedream-v4-5", "input": {"prompt": "a red fox"}})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    task_id = response.json()["data"]["taskId"]
    assert TASK_ID.match(task_id)
    assert response.content == b'{"code":200,"msg":"success","data":{"taskId":"' + task_id.encode() + b'"}}'


def test_default_dev_key_is_accepted(sim: SimulatorServer) -> None:
    assert sim.api_key == DEV_API_KEY == "sk-liangxin-simulator-dev"


def test_record_info_shape_while_waiting(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [30, 30, 30]})
    body = {"model": "seedream-v4-5", "input": {"prompt": "a red fox", "seed": 7}}
    task_id = client.post(CREATE_TASK_PATH, json=body).json()["data"]["taskId"]

    response = client.get(RECORD_INFO_PATH, params={"taskId": task_id})

    assert response.status_code == 200
    envelope = response.json()
    assert envelope["code"] == 200
    assert envelope["msg"] == "success"
    data = envelope["data"]
    assert list(data) == [
        "taskId",
        "model",
        "state",
        "param",
        "resultJson",
        "failCode",
        "failMsg",
        "createTime",
        "updateTime",
        "completeTime",
    ]
    assert data["taskId"] == task_id
    assert data["model"] == "seedream-v4-5"
    assert data["state"] == "waiting"
    assert isinstance(data["param"], str)
    assert json.loads(data["param"]) == body
    assert data["resultJson"] == data["failCode"] == data["failMsg"] == ""
    assert data["createTime"] == data["updateTime"] == int(task_id.rsplit("_", 1)[1])
    assert data["completeTime"] is None
    assert TaskRecord.from_api(data).state is TaskState.WAITING


def test_task_ids_are_unique_when_created_in_the_same_millisecond(sim: SimulatorServer) -> None:
    async def create_many() -> list[str]:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        async with httpx.AsyncClient(base_url=sim.base_url, headers=headers) as http:
            body = {"model": "seedream-v4-5", "input": {"prompt": "same time"}}
            responses = await asyncio.gather(*(http.post(CREATE_TASK_PATH, json=body) for _ in range(40)))
        return [r.json()["data"]["taskId"] for r in responses]

    ids = asyncio.run(create_many())

    assert len(set(ids)) == 40
    assert all(TASK_ID.match(task_id) for task_id in ids)


def test_the_wire_protocol_module_parses_the_simulator(client: httpx.Client) -> None:
    request = build_create_task("z-image", {"prompt": "a lighthouse"})
    response = client.post(request.path, json=request.json_body)

    task_id = parse_create_task(parse_response(request, response.status_code, response.headers, response.content))

    assert task_id.startswith("task_z-image_")


# ------------------------------------------------------------------------------------------------ auth


def test_missing_key_is_401_gateway_shape(sim: SimulatorServer) -> None:
    response = httpx.post(f"{sim.base_url}{CREATE_TASK_PATH}", json={"model": "z-image", "input": {"prompt": "x"}})

    assert response.status_code == 401
    assert response.content == INVALID_TOKEN


def test_wrong_key_and_wrong_scheme_are_401(sim: SimulatorServer) -> None:
    url = f"{sim.base_url}{RECORD_INFO_PATH}?taskId=task_x_1"
    for header in (f"Bearer {sim.api_key}x", f"Basic {sim.api_key}", sim.api_key, "Bearer"):
        response = httpx.get(url, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.content == INVALID_TOKEN


def test_several_configured_keys_are_all_accepted() -> None:
    config = SimulatorConfig(api_keys=("sk-one", "sk-two"), durations=(0, 0, 0))
    with SimulatorServer(config) as server:
        for key, status in (("sk-one", 404), ("sk-two", 404), (DEV_API_KEY, 401)):
            response = httpx.get(
                f"{server.base_url}{RECORD_INFO_PATH}",
                params={"taskId": "task_nope_1"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == status, key


def test_result_files_need_no_auth_but_the_api_does(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0, 0, 0]})
    task_id = create(client)
    url = json.loads(record(client, task_id)["resultJson"])["resultUrls"][0]

    assert httpx.get(url).status_code == 200


# ---------------------------------------------------------------------------------------- 400 / 404 / 413


def _post(client: httpx.Client, body: object) -> httpx.Response:
    return client.post(CREATE_TASK_PATH, content=json.dumps(body), headers={"Content-Type": "application/json"})


def test_unknown_task_is_404_business_shape(client: httpx.Client) -> None:
    response = client.get(RECORD_INFO_PATH, params={"taskId": "task_seedream-v4-5_1000000000000"})

    assert response.status_code == 404
    assert response.content == b'{"code":404,"msg":"task not found","data":null}'


def test_missing_task_id_is_400(client: httpx.Client) -> None:
    for params in ({}, {"taskId": ""}):
        response = client.get(RECORD_INFO_PATH, params=params)
        assert response.status_code == 400
        assert response.content == b'{"code":400,"msg":"taskId is required","data":null}'


def test_model_is_required(client: httpx.Client) -> None:
    for body in ({"input": {"prompt": "x"}}, {"model": "", "input": {"prompt": "x"}}, {"model": "  "}):
        response = _post(client, body)
        assert response.status_code == 400
        assert response.content == b'{"code":400,"msg":"model is required","data":null}'


def test_input_must_be_an_object(client: httpx.Client) -> None:
    missing = _post(client, {"model": "z-image"})
    not_object = _post(client, {"model": "z-image", "input": "a prompt"})

    assert (missing.status_code, missing.json()) == (400, {"code": 400, "msg": "input is required", "data": None})
    assert not_object.status_code == 400
    assert not_object.json() == {"code": 400, "msg": "input must be a JSON object", "data": None}


def test_body_must_be_a_json_object(client: httpx.Client) -> None:
    broken = client.post(CREATE_TASK_PATH, content=b"{not json", headers={"Content-Type": "application/json"})
    array = _post(client, [1, 2])

    assert broken.status_code == array.status_code == 400
    assert broken.json()["msg"] == "request body must be valid JSON"
    assert array.json()["msg"] == "request body must be a JSON object"


def test_unknown_model_is_400_naming_it(client: httpx.Client) -> None:
    response = _post(client, {"model": "dall-e-9", "input": {"prompt": "x"}})

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400
    assert body["data"] is None
    assert "dall-e-9" in body["msg"]


def test_model_rules_are_enforced_with_every_problem(client: httpx.Client) -> None:
    bad_ratio = _post(client, {"model": "seedream-v4-5", "input": {"prompt": "x", "aspect_ratio": "5:7"}})
    flux_one_side = _post(client, {"model": "flux-2-pro", "input": {"prompt": "x", "width": 512}})
    short_prompt = _post(client, {"model": "nano-banana-pro", "input": {"prompt": "x"}})
    two_problems = _post(client, {"model": "seedream-v4-5", "input": {"prompt": "", "aspect_ratio": "5:7"}})

    for response in (bad_ratio, flux_one_side, short_prompt, two_problems):
        assert response.status_code == 400
        assert set(response.json()) == {"code", "msg", "data"}
        assert response.json()["code"] == 400
    assert "aspect_ratio" in bad_ratio.json()["msg"]
    assert "height" in flux_one_side.json()["msg"]
    assert "prompt" in short_prompt.json()["msg"]
    assert "; " in two_problems.json()["msg"]


def test_callback_url_must_be_https(client: httpx.Client) -> None:
    for url in ("http://example.com/hook", "ftp://example.com/x", "not a url", 42):
        response = _post(client, {"model": "z-image", "input": {"prompt": "x"}, "callBackUrl": url})
        assert response.status_code == 400, url
        assert response.json() == {"code": 400, "msg": "callBackUrl must be a public https URL", "data": None}
    ok = _post(client, {"model": "z-image", "input": {"prompt": "x"}, "callBackUrl": "https://example.com/hook"})
    assert ok.status_code == 200


def test_insecure_local_callbacks_need_the_flag() -> None:
    with SimulatorServer(SimulatorConfig(durations=(0, 0, 0))) as server:
        response = httpx.post(
            f"{server.base_url}{CREATE_TASK_PATH}",
            headers={"Authorization": f"Bearer {server.api_key}"},
            json={"model": "z-image", "input": {"prompt": "x"}, "callBackUrl": "http://127.0.0.1:9/hook"},
        )
    assert response.status_code == 400


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    body = {"model": "nano-banana-pro", "input": {"prompt": "x" * (1024 * 1024 + 1)}}

    response = _post(client, body)

    assert response.status_code == 413
    assert response.content == b'{"code":413,"msg":"request body too large","data":null}'


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    response = client.post(CREATE_TASK_PATH, content=chunks())

    assert response.status_code == 413


# -------------------------------------------------------------------------------------------- admin API


def test_stats_count_routes_statuses_and_tasks(client: httpx.Client, sim: SimulatorServer) -> None:
    first = create(client, model="z-image")
    second = create(client)
    client.get(RECORD_INFO_PATH, params={"taskId": first})
    client.get(RECORD_INFO_PATH, params={"taskId": "task_missing_1"})
    _post(client, {"model": "z-image"})

    stats = sim.stats()

    assert stats["requests"][f"POST {CREATE_TASK_PATH}"] == {"200": 2, "400": 1}
    assert stats["requests"][f"GET {RECORD_INFO_PATH}"] == {"200": 1, "404": 1}
    assert stats["created_per_model"] == {"z-image": 1, "seedream-v4-5": 1}
    assert stats["task_ids"] == [first, second]
    assert stats["task_count"] == 2


def test_reset_forgets_tasks_and_restores_startup_faults(client: httpx.Client, sim: SimulatorServer) -> None:
    task_id = create(client)
    sim.set_faults({"recordinfo_error_rate": 1.0})

    sim.reset()

    assert sim.stats()["task_ids"] == []
    assert sim.faults()["recordinfo_error_rate"] == 0
    assert client.get(RECORD_INFO_PATH, params={"taskId": task_id}).status_code == 404


def test_fault_config_with_unknown_keys_is_rejected(sim: SimulatorServer) -> None:
    response = httpx.post(f"{sim.base_url}/_sim/faults", json={"recordinfo_eror_rate": 0.5})
    out_of_range = httpx.post(f"{sim.base_url}/_sim/faults", json={"slow_rate": 2})

    assert response.status_code == out_of_range.status_code == 400
    assert "recordinfo_eror_rate" in response.json()["msg"]


async def test_admin_api_answers_loopback_clients_only() -> None:
    app = create_app(SimulatorConfig())
    remote = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    local = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))

    async with httpx.AsyncClient(transport=remote, base_url="http://sim") as http:
        assert (await http.get("/_sim/stats")).status_code == 403
        assert (await http.post("/_sim/reset")).status_code == 403
    async with httpx.AsyncClient(transport=local, base_url="http://sim") as http:
        assert (await http.get("/_sim/stats")).status_code == 200
