"""The hook against the running simulator over real HTTP: the happy path and every error class, both paths."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from airflow_provider_liangxin._api import (
    LiangxinAuthError,
    LiangxinBadRequestError,
    LiangxinConnectError,
    LiangxinForbiddenError,
    LiangxinPayloadTooLargeError,
    LiangxinRateLimitError,
    LiangxinServerError,
    LiangxinTaskNotFoundError,
    LiangxinTimeoutError,
    LiangxinTransportError,
    LiangxinUpstreamValidationError,
    TaskState,
)
from airflow_provider_liangxin.hooks.liangxin import LiangxinHook
from tests.conftest import liangxin_conn_json

ONCE = {"max_attempts": 1}


def call(mode: str, hook: LiangxinHook, method: str, *args):
    if mode == "sync":
        try:
            return getattr(hook, method)(*args)
        finally:
            hook.close()

    async def go():
        async with hook:
            return await getattr(hook, "a" + method)(*args)

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_create_poll_success(sim_conn, mode):
    task_id = call(mode, LiangxinHook(), "create_task", "seedream-v4-5", {"prompt": "a kite", "aspect_ratio": "21:9"})
    states = []
    deadline = time.time() + 10
    while time.time() < deadline:
        record = call(mode, LiangxinHook(), "get_task", task_id)
        states.append(record.state)
        if record.state.is_terminal:
            break
        time.sleep(0.05)
    assert states[-1] is TaskState.SUCCESS
    assert TaskState.FAIL not in states
    assert record.result_urls[0].startswith(sim_conn.base_url)
    assert record.param == {"model": "seedream-v4-5", "input": {"prompt": "a kite", "aspect_ratio": "21:9"}}
    assert record.complete_time >= record.create_time


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("model", "input_", "error", "fragment"),
    [
        ("seedream-v4-5", {"prompt": "x", "aspect_ratio": "17:9"}, LiangxinBadRequestError, "17:9"),
        ("no-such-model", {"prompt": "x"}, LiangxinBadRequestError, "no-such-model"),
        ("seedream-v4-5", {"prompt": "x [sim:403]"}, LiangxinForbiddenError, "quota"),
        ("seedream-v4-5", {"prompt": "x " + "y" * 1_100_000}, LiangxinPayloadTooLargeError, "too large"),
        ("seedream-v4-5", {"prompt": "x [sim:422]"}, LiangxinUpstreamValidationError, "HTTP 422"),
        ("seedream-v4-5", {"prompt": "x [sim:429]"}, LiangxinRateLimitError, "HTTP 429"),
        ("seedream-v4-5", {"prompt": "x [sim:500]"}, LiangxinServerError, "HTTP 500"),
        ("seedream-v4-5", {"prompt": "x [sim:drop]"}, LiangxinTransportError, "createTask"),
    ],
)
def test_every_create_error_class_from_a_real_response(sim_conn, mode, model, input_, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        call(mode, LiangxinHook(retry=ONCE), "create_task", model, input_)
    assert sim_conn.api_key not in str(info.value)
    if error is LiangxinRateLimitError:
        assert info.value.retry_after == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_read_timeout_on_a_slow_server(sim_conn, mode):
    with pytest.raises(LiangxinTimeoutError, match=r"no answer within 0\.3 s"):
        call(mode, LiangxinHook(timeout=0.3, retry=ONCE), "create_task", "z-image", {"prompt": "x [sim:slow]"})


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_unknown_task_and_bad_key(simulator, monkeypatch, mode):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(simulator.base_url, simulator.api_key))
    with pytest.raises(LiangxinTaskNotFoundError, match="task not found"):
        call(mode, LiangxinHook(retry=ONCE), "get_task", "task_seedream-v4-5_0000000000000")
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(simulator.base_url, "sk-wrong-key"))
    with pytest.raises(LiangxinAuthError, match="invalid token") as info:
        call(mode, LiangxinHook(retry=ONCE), "get_task", "task_x_1")
    assert "sk-wrong-key" not in str(info.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_connect_error_when_nothing_listens(monkeypatch, mode):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(f"http://127.0.0.1:{port}"))
    with pytest.raises(LiangxinConnectError, match="cannot connect"):
        call(mode, LiangxinHook(retry=ONCE), "get_task", "task_x_1")


def test_test_connection_against_the_simulator(simulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(simulator.base_url, simulator.api_key))
    assert LiangxinHook().test_connection()[0] is True
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(simulator.base_url, "sk-wrong-key"))
    good, message = LiangxinHook().test_connection()
    assert not good
    assert "invalid token" in message
