"""Callback delivery on terminal states: the recordInfo shape, retries on non-2xx, and giving up."""

from __future__ import annotations

import httpx

from airflow_provider_liangxin.simulator import SimulatorServer, free_port
from tests.simulator.conftest import CallbackReceiver, create, record, wait_until


def test_success_is_posted_with_the_record_info_shape(
    client: httpx.Client, sim: SimulatorServer, receiver: CallbackReceiver
) -> None:
    task_id = create(client, callBackUrl=f"{receiver.base_url}/ok")

    wait_until(lambda: receiver.bodies("/ok"))

    (body,) = receiver.bodies("/ok")
    assert body == {"code": 200, "msg": "success", "data": record(client, task_id)}
    assert body["data"]["state"] == "success"
    (delivery,) = sim.callbacks()
    assert delivery["taskId"] == task_id
    assert delivery["url"] == f"{receiver.base_url}/ok"
    assert (delivery["attempt"], delivery["status"], delivery["ok"], delivery["error"]) == (1, 200, True, None)
    assert isinstance(delivery["time"], int)
    assert sim.stats()["callbacks"]["delivered"] == 1


def test_fail_is_posted_too(client: httpx.Client, receiver: CallbackReceiver) -> None:
    create(client, "a castle [sim:fail:503:busy]", callBackUrl=f"{receiver.base_url}/ok")

    wait_until(lambda: receiver.bodies("/ok"))

    data = receiver.bodies("/ok")[0]["data"]
    assert (data["state"], data["failCode"], data["failMsg"]) == ("fail", "503", "busy")


def test_retried_after_500_then_delivered(
    client: httpx.Client, sim: SimulatorServer, receiver: CallbackReceiver
) -> None:
    task_id = create(client, callBackUrl=f"{receiver.base_url}/flaky/1")

    wait_until(lambda: any(d["ok"] for d in sim.callbacks()))

    deliveries = sim.callbacks()
    assert [(d["attempt"], d["status"], d["ok"]) for d in deliveries] == [(1, 500, False), (2, 200, True)]
    assert all(d["taskId"] == task_id for d in deliveries)
    assert deliveries[1]["time"] >= deliveries[0]["time"] + 40  # callback_backoff=0.05 s
    assert len(receiver.bodies("/flaky/1")) == 2


def test_gives_up_after_the_configured_attempts(
    client: httpx.Client, sim: SimulatorServer, receiver: CallbackReceiver
) -> None:
    create(client, callBackUrl=f"{receiver.base_url}/down")
    create(client, callBackUrl=f"http://127.0.0.1:{free_port()}/closed")

    wait_until(lambda: sum(d["final"] for d in sim.callbacks()) == 2)

    deliveries = sim.callbacks()
    down = [d for d in deliveries if d["url"].endswith("/down")]
    closed = [d for d in deliveries if d["url"].endswith("/closed")]
    assert [(d["attempt"], d["status"]) for d in down] == [(1, 500), (2, 500), (3, 500)]
    assert [d["attempt"] for d in closed] == [1, 2, 3]
    assert all(d["status"] is None and d["error"] for d in closed)
    assert [d["final"] for d in down] == [False, False, True]
    assert sim.stats()["callbacks"]["gave_up"] == 2


def test_never_ending_tasks_send_no_callback(
    client: httpx.Client, sim: SimulatorServer, receiver: CallbackReceiver
) -> None:
    create(client, "[sim:never]", callBackUrl=f"{receiver.base_url}/ok")
    done = create(client, callBackUrl=f"{receiver.base_url}/ok")

    wait_until(lambda: receiver.bodies("/ok"))

    assert [b["data"]["taskId"] for b in receiver.bodies("/ok")] == [done]
