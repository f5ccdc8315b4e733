"""LiangxinHook over real loopback HTTP (scripted server) for both transports, plus respx for the sync path."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
import time

import pytest
import respx

from airflow_provider_liangxin import _api
from airflow_provider_liangxin._api import (
    LiangxinAuthError,
    LiangxinBadRequestError,
    LiangxinConfigError,
    LiangxinConnectError,
    LiangxinForbiddenError,
    LiangxinRateLimitError,
    LiangxinServerError,
    LiangxinTaskNotFoundError,
    LiangxinTimeoutError,
    TaskState,
)
from airflow_provider_liangxin.hooks import liangxin as hook_module
from airflow_provider_liangxin.hooks.liangxin import SESSION_POOL, LiangxinHook
from tests.conftest import TEST_API_KEY, liangxin_conn_json
from tests.support.airflow_versions import needs_async_connection_api
from tests.support.scripted_server import Reply, ok, record

#: The taskId of scripted_server.record(): recordInfo answers must name the task asked for.
RID = "task_seedream-v4-5_1"
FAST_RETRY = {"max_attempts": 4, "backoff_initial": 0.0, "backoff_max": 0.0, "max_wait_total": 60}


class RecordingHook(LiangxinHook):
    """Records retry waits instead of sleeping them (class-level sleep hooks are the seam for this)."""

    waits: list[float]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waits = []
        self._sleep = self.waits.append

        async def asleep(seconds: float) -> None:
            self.waits.append(seconds)

        self._asleep = asleep


def run(mode: str, hook: LiangxinHook, method: str, *args):
    """Call a hook method on the sync path, or its async twin inside ``async with hook``."""
    if mode == "sync":
        return getattr(hook, method)(*args)

    async def go():
        async with hook:
            return await getattr(hook, "a" + method)(*args)

    return asyncio.run(go())


MODES = ["sync", "async"]


# ---------------------------------------------------------------------------------------------- settings


class TestSettings:
    def test_init_does_no_io(self, monkeypatch):
        def boom(*a, **k):
            raise AssertionError("connection looked up in __init__")

        monkeypatch.setattr(LiangxinHook, "get_connection", boom)
        hook = LiangxinHook("anything", timeout=3, retry={"max_attempts": 2})
        assert hook.retry_policy.max_attempts == 2

    @pytest.mark.parametrize(
        ("conn", "message"),
        [
            ({"conn_type": "liangxin", "password": "k"}, "no host"),
            ({"conn_type": "liangxin", "host": "http://h"}, "no password"),
        ],
    )
    @pytest.mark.parametrize("mode", MODES)
    def test_missing_host_or_key_names_the_connection(self, monkeypatch, conn, message, mode, scripted_server):
        monkeypatch.setenv("AIRFLOW_CONN_MY_LX", json.dumps(conn))
        with pytest.raises(LiangxinConfigError, match=f"'my_lx' has {message}"):
            run(mode, LiangxinHook("my_lx"), "get_task", "t1")
        assert scripted_server.requests == []

    def test_host_forms(self, monkeypatch):
        cases = {
            '{"conn_type":"liangxin","host":"api.example.com","password":"k"}': "https://api.example.com",
            '{"conn_type":"liangxin","host":"http://127.0.0.1:8765/","password":"k"}': "http://127.0.0.1:8765",
            '{"conn_type":"liangxin","host":"gw.local","port":8080,"schema":"http","password":"k"}': (
                "http://gw.local:8080"
            ),
            '{"conn_type":"liangxin","host":"https://gw/prefix","password":"k"}': "https://gw/prefix",
            '{"conn_type":"liangxin","host":"https://gw/prefix","port":8443,"password":"k"}': "https://gw:8443/prefix",
            # The port the UI's Test-button workaround stores: the scheme's default adds nothing.
            '{"conn_type":"liangxin","host":"https://gw","port":443,"password":"k"}': "https://gw",
            '{"conn_type":"liangxin","host":"gw","schema":"http","port":80,"password":"k"}': "http://gw",
            '{"conn_type":"liangxin","host":"http://127.0.0.1:8765","port":8765,"password":"k"}': "http://127.0.0.1:8765",
        }
        for conn, expected in cases.items():
            monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", conn)
            assert LiangxinHook().settings.base_url == expected

    def test_uri_form_connection(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", "liangxin://:sk-uri@127.0.0.1:8765?timeout=7")
        settings = LiangxinHook().settings
        assert (settings.base_url, settings.api_key, settings.timeout) == ("https://127.0.0.1:8765", "sk-uri", 7.0)

    def test_extras(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json("http://h", timeout="12.5", verify_ssl="false")
        )
        settings = LiangxinHook().settings
        assert (settings.timeout, settings.verify_ssl) == (12.5, False)
        assert LiangxinHook(timeout=3).settings.timeout == 3

    @pytest.mark.parametrize(
        ("extra", "message"), [({"timeout": "soon"}, "timeout"), ({"verify_ssl": "maybe"}, "verify_ssl")]
    )
    def test_bad_extras(self, monkeypatch, extra, message):
        monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json("http://h", **extra))
        with pytest.raises(LiangxinConfigError, match=message):
            LiangxinHook().settings  # noqa: B018

    @pytest.mark.parametrize("mode", MODES)
    def test_key_with_a_line_break_is_rejected_without_echoing_it(self, monkeypatch, mode, scripted_server):
        monkeypatch.setenv(
            "AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(scripted_server.base_url, "sk-SECRET1\nSECRET2")
        )
        with pytest.raises(LiangxinConfigError, match="paste it again as one line") as info:
            run(mode, LiangxinHook(), "get_task", "t1")
        assert "SECRET" not in str(info.value)
        assert scripted_server.requests == []

    @pytest.mark.parametrize("mode", MODES)
    def test_both_paths_honour_proxy_environment(self, sim_conn, monkeypatch, mode):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            dead_proxy = f"http://127.0.0.1:{sock.getsockname()[1]}"
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, dead_proxy)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(LiangxinConnectError):
            run(mode, LiangxinHook(retry={"max_attempts": 1}), "get_task", "task_x_1")

    def test_key_never_in_reprs(self, scripted_conn):
        hook = LiangxinHook()
        assert TEST_API_KEY not in repr(hook)
        assert TEST_API_KEY not in repr(hook.settings)
        assert hook.settings.api_key == TEST_API_KEY

    def test_ui_field_behaviour_mirrors_provider_info(self):
        from airflow_provider_liangxin import get_provider_info

        yaml_form = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
        form = LiangxinHook.get_ui_field_behaviour()
        assert form["hidden_fields"] == yaml_form["hidden-fields"] == ["schema", "login"]
        assert form["relabeling"] == {"host": "API base URL", "password": "API key", "port": "Port (optional)"}
        assert form["placeholders"] == yaml_form["placeholders"]


# ------------------------------------------------------------------------------------------ requests sent


@pytest.mark.parametrize("mode", MODES)
class TestRequests:
    def test_create_task_sends_documented_body_and_headers(self, scripted_conn, mode):
        scripted_conn.script(ok({"taskId": "task_seedream-v4-5_1777600000000"}))
        hook = LiangxinHook()
        task_id = run(mode, hook, "create_task", "seedream-v4-5", {"prompt": "a cat"}, "https://cb.example/x")
        assert task_id == "task_seedream-v4-5_1777600000000"
        seen = scripted_conn.requests[0]
        assert (seen.method, seen.path) == ("POST", "/api/v1/jobs/createTask")
        assert json.loads(seen.body) == {
            "model": "seedream-v4-5",
            "input": {"prompt": "a cat"},
            "callBackUrl": "https://cb.example/x",
        }
        headers = {k.lower(): v for k, v in seen.headers.items()}
        assert headers["authorization"] == f"Bearer {TEST_API_KEY}"
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("airflow-provider-liangxin/0.1.0 airflow/3.")
        assert " python/3." in headers["user-agent"]

    def test_get_task_parses_record(self, scripted_conn, mode):
        scripted_conn.script(ok(record("task_a", state="success")))
        rec = run(mode, LiangxinHook(), "get_task", "task_a")
        assert rec.state is TaskState.SUCCESS
        assert rec.result_urls == ["https://cdn.example/a.png"]
        assert scripted_conn.requests[0].path == "/api/v1/jobs/recordInfo?taskId=task_a"

    def test_error_carries_message_status_and_request_id_never_key(self, scripted_conn, mode, caplog, capfd):
        caplog.set_level(logging.DEBUG)
        body = {
            "error": {"message": "user quota is not enough (request id: rq-9)", "type": "new_api_error", "code": ""}
        }
        scripted_conn.script(Reply(403, body))
        with pytest.raises(LiangxinForbiddenError) as info:
            run(mode, LiangxinHook(retry=FAST_RETRY), "create_task", "seedream-v4-5", {"prompt": "x"})
        text = str(info.value)
        assert "user quota is not enough" in text
        assert "HTTP 403" in text
        assert "rq-9" in text
        assert TEST_API_KEY not in text
        assert TEST_API_KEY not in caplog.text
        assert TEST_API_KEY not in "".join(capfd.readouterr())
        assert len(scripted_conn.requests) == 1


# ---------------------------------------------------------------------------------------------- retries


@pytest.mark.parametrize("mode", MODES)
class TestRetries:
    def test_get_retries_5xx_then_succeeds(self, scripted_conn, mode, capfd):
        scripted_conn.script(Reply(500, {"code": 500, "msg": "upstream"}), Reply(502, b"<html>bad gw</html>"))
        scripted_conn.script(ok(record()))
        hook = RecordingHook(retry=FAST_RETRY)
        assert run(mode, hook, "get_task", RID).state is TaskState.GENERATING
        assert len(scripted_conn.requests) == 3
        assert len(hook.waits) == 2
        logs = "".join(capfd.readouterr())
        assert "recordInfo attempt 1/4 failed" in logs
        assert "HTTP 502" in logs
        assert TEST_API_KEY not in logs

    def test_retry_after_seconds_is_honoured(self, scripted_conn, mode):
        scripted_conn.script(Reply(429, {"error": {"message": "busy", "type": "t", "code": ""}}, {"Retry-After": "2"}))
        scripted_conn.script(ok(record()))
        hook = RecordingHook(retry=FAST_RETRY)
        run(mode, hook, "get_task", RID)
        assert hook.waits == [2.0]

    def test_retry_after_http_date_is_honoured(self, scripted_conn, mode):
        when = email.utils.formatdate(time.time() + 5, usegmt=True)
        scripted_conn.script(Reply(429, {"code": 429, "msg": "busy"}, {"Retry-After": when}), ok(record()))
        hook = RecordingHook(retry=FAST_RETRY)
        run(mode, hook, "get_task", RID)
        assert len(hook.waits) == 1
        assert 3 < hook.waits[0] <= 5

    def test_retry_after_beyond_budget_stops_at_once(self, scripted_conn, mode):
        scripted_conn.script(Reply(429, {"code": 429, "msg": "busy"}, {"Retry-After": "600"}))
        hook = RecordingHook(retry={**FAST_RETRY, "max_wait_total": 30})
        with pytest.raises(LiangxinRateLimitError) as info:
            run(mode, hook, "get_task", RID)
        assert info.value.retry_after == 600
        assert hook.waits == []
        assert len(scripted_conn.requests) == 1

    def test_attempts_are_capped(self, scripted_conn, mode):
        scripted_conn.script(*[Reply(503, {"code": 503, "msg": "down"}) for _ in range(10)])
        hook = RecordingHook(retry={**FAST_RETRY, "max_attempts": 3})
        with pytest.raises(LiangxinServerError, match="down"):
            run(mode, hook, "get_task", RID)
        assert len(scripted_conn.requests) == 3

    def test_backoff_grows_exponentially_within_cap(self, scripted_conn, mode, monkeypatch):
        monkeypatch.setattr(_api.random, "uniform", lambda low, high: high)
        scripted_conn.script(*[Reply(500, {"code": 500, "msg": "x"}) for _ in range(4)], ok(record()))
        hook = RecordingHook(retry={"max_attempts": 5, "backoff_initial": 1, "backoff_max": 5, "max_wait_total": 60})
        run(mode, hook, "get_task", RID)
        assert hook.waits == [1, 2, 4, 5]

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
    def test_client_errors_are_not_retried(self, scripted_conn, mode, status):
        scripted_conn.script(Reply(status, {"code": status, "msg": "nope"}), ok(record()))
        with pytest.raises(_api.error_class_for_status(status)):
            run(mode, RecordingHook(retry=FAST_RETRY), "get_task", RID)
        assert len(scripted_conn.requests) == 1

    def test_get_timeout_is_retried(self, scripted_conn, mode):
        scripted_conn.script(Reply(delay=0.6, body={"code": 200, "msg": "success", "data": record()}), ok(record()))
        hook = RecordingHook(timeout=0.25, retry=FAST_RETRY)
        assert run(mode, hook, "get_task", RID).task_id == "task_seedream-v4-5_1"
        assert len(scripted_conn.requests) == 2

    def test_dropped_connection_on_get_is_retried(self, scripted_conn, mode):
        scripted_conn.script(Reply(drop=True), ok(record()))
        assert run(mode, RecordingHook(retry=FAST_RETRY), "get_task", RID).model == "seedream-v4-5"
        assert len(scripted_conn.requests) == 2

    def test_create_not_retried_on_5xx(self, scripted_conn, mode):
        scripted_conn.script(Reply(500, {"code": 500, "msg": "internal"}), ok({"taskId": "t2"}))
        with pytest.raises(LiangxinServerError):
            run(mode, RecordingHook(retry=FAST_RETRY), "create_task", "seedream-v4-5", {"prompt": "x"})
        assert len(scripted_conn.requests) == 1

    def test_create_not_retried_on_read_timeout(self, scripted_conn, mode):
        scripted_conn.script(Reply(delay=0.6, body={"code": 200, "msg": "success", "data": {"taskId": "t1"}}))
        scripted_conn.script(ok({"taskId": "t2"}))
        with pytest.raises(LiangxinTimeoutError):
            run(mode, RecordingHook(timeout=0.25, retry=FAST_RETRY), "create_task", "seedream-v4-5", {"prompt": "x"})
        assert len(scripted_conn.requests) == 1

    def test_create_not_retried_on_dropped_connection(self, scripted_conn, mode):
        scripted_conn.script(Reply(drop=True), ok({"taskId": "t2"}))
        with pytest.raises(_api.LiangxinTransportError):
            run(mode, RecordingHook(retry=FAST_RETRY), "create_task", "seedream-v4-5", {"prompt": "x"})
        assert len(scripted_conn.requests) == 1

    def test_create_retried_on_429(self, scripted_conn, mode):
        scripted_conn.script(Reply(429, {"code": 429, "msg": "saturated"}, {"Retry-After": "1"}), ok({"taskId": "t2"}))
        hook = RecordingHook(retry=FAST_RETRY)
        assert run(mode, hook, "create_task", "seedream-v4-5", {"prompt": "x"}) == "t2"
        assert hook.waits == [1.0]

    def test_create_retried_on_connect_error(self, monkeypatch, mode):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(f"http://127.0.0.1:{port}"))
        hook = RecordingHook(retry={**FAST_RETRY, "max_attempts": 3})
        with pytest.raises(LiangxinConnectError, match="cannot connect"):
            run(mode, hook, "create_task", "seedream-v4-5", {"prompt": "x"})
        assert len(hook.waits) == 2


# --------------------------------------------------------------------------------- sync path with respx


class TestRespx:
    @pytest.fixture
    def mocked(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json("https://lx.example"))
        with respx.mock(base_url="https://lx.example", assert_all_called=False) as router:
            yield router

    def test_message_key_and_numeric_fail_code(self, mocked):
        mocked.get("/api/v1/jobs/recordInfo").respond(
            200, json={"code": 200, "message": "success", "data": record(state="fail", failCode=501, failMsg="x")}
        )
        rec = LiangxinHook().get_task(RID)
        assert (rec.state, rec.fail_code) == (TaskState.FAIL, "501")

    def test_gateway_401(self, mocked):
        mocked.post("/api/v1/jobs/createTask").respond(
            401, json={"error": {"message": "invalid token", "type": "new_api_error", "code": ""}}
        )
        with pytest.raises(LiangxinAuthError, match=r"invalid token \(HTTP 401\)"):
            LiangxinHook().create_task("z-image", {"prompt": "x"})

    def test_200_with_error_code_in_body(self, mocked):
        mocked.post("/api/v1/jobs/createTask").respond(200, json={"code": 400, "msg": "bad ratio", "data": None})
        with pytest.raises(LiangxinBadRequestError, match="bad ratio"):
            LiangxinHook().create_task("z-image", {"prompt": "x"})

    def test_missing_task_id_in_create_answer(self, mocked):
        mocked.post("/api/v1/jobs/createTask").respond(200, json={"code": 200, "msg": "success", "data": {}})
        with pytest.raises(_api.LiangxinResponseError, match=r"without data\.taskId"):
            LiangxinHook().create_task("z-image", {"prompt": "x"})

    def test_unknown_state_is_an_error(self, mocked):
        mocked.get("/api/v1/jobs/recordInfo").respond(
            200, json={"code": 200, "msg": "ok", "data": record(state="done")}
        )
        with pytest.raises(_api.LiangxinResponseError, match="unknown task state 'done'"):
            LiangxinHook().get_task(RID)

    def test_client_is_reused_and_closed(self, mocked):
        route = mocked.get("/api/v1/jobs/recordInfo").respond(200, json={"code": 200, "msg": "ok", "data": record()})
        hook = LiangxinHook()
        hook.get_task(RID)
        client = hook.get_conn()
        hook.get_task(RID)
        assert hook.get_conn() is client
        assert route.call_count == 2
        hook.close()
        assert client.is_closed


# ------------------------------------------------------------------------------------------ test_connection


class TestTestConnection:
    def test_404_means_key_works(self, scripted_conn):
        scripted_conn.script(Reply(404, {"code": 404, "msg": "task not found", "data": None}))
        good, message = LiangxinHook().test_connection()
        assert good, message
        assert "API key was accepted" in message
        assert "/api/v1/jobs/recordInfo?taskId=airflow-connection-test-" in scripted_conn.requests[0].path

    def test_bare_404_means_wrong_base_url_not_a_working_key(self, scripted_conn):
        scripted_conn.script(Reply(404, b"<html>Not Found</html>", {"Content-Type": "text/html"}))
        good, message = LiangxinHook().test_connection()
        assert not good
        assert "does not look like the LiangXin API" in message

    def test_gateway_404_for_an_unknown_route_is_not_a_working_key(self, scripted_conn):
        body = {"error": {"message": "Invalid URL (GET /api/v1/jobs/recordInfo)", "type": "invalid_request_error"}}
        scripted_conn.script(Reply(404, body))
        good, message = LiangxinHook().test_connection()
        assert not good
        assert "does not look like the LiangXin API" in message

    def test_401_means_it_does_not(self, scripted_conn):
        scripted_conn.script(Reply(401, {"error": {"message": "invalid token", "type": "new_api_error", "code": ""}}))
        good, message = LiangxinHook().test_connection()
        assert not good
        assert "rejected" in message
        assert "invalid token" in message
        assert TEST_API_KEY not in message

    def test_server_error_is_reported_without_retrying(self, scripted_conn):
        scripted_conn.script(Reply(500, {"code": 500, "msg": "down"}), Reply(500, {"code": 500, "msg": "down"}))
        good, message = LiangxinHook().test_connection()
        assert (good, len(scripted_conn.requests)) == (False, 1)
        assert "HTTP 500" in message

    def test_never_raises_on_bad_connection(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", '{"conn_type":"liangxin","password":"k"}')
        good, message = LiangxinHook().test_connection()
        assert not good
        assert "no host" in message


# ------------------------------------------------------------------------------------------ the async path


class TestAsyncPath:
    @needs_async_connection_api
    async def test_async_path_never_uses_sync_connection_api(self, scripted_conn, monkeypatch):
        from airflow.providers.common.compat.sdk import BaseHook

        def forbidden(*args, **kwargs):
            raise AssertionError("sync get_connection called on the event loop")

        monkeypatch.setattr(BaseHook, "get_connection", forbidden)
        monkeypatch.setattr(LiangxinHook, "get_connection", forbidden)
        scripted_conn.script(ok(record()))
        async with LiangxinHook() as hook:
            assert (await hook.aget_task(RID)).state is TaskState.GENERATING

    async def test_hooks_on_one_loop_share_one_session_closed_by_the_last(self, scripted_conn):
        scripted_conn.script(ok(record()), ok(record()))
        first, second = LiangxinHook(), LiangxinHook()
        async with first:
            async with second:
                assert first._session is second._session
                assert SESSION_POOL.users(verify_ssl=True) == 2
                await asyncio.gather(first.aget_task(RID), second.aget_task(RID))
            session = first._session
            assert SESSION_POOL.users(verify_ssl=True) == 1
            assert not session.closed
        assert session.closed
        assert SESSION_POOL.users(verify_ssl=True) == 0

    async def test_netrc_entry_for_the_api_host_does_not_break_requests(self, sim_conn, tmp_path, monkeypatch):
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login someone password something\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        async with LiangxinHook() as hook:
            with pytest.raises(LiangxinTaskNotFoundError):  # a real answer from the simulator, not a client error
                await hook.aget_task("task_nope_1")

    async def test_a_successful_poll_leaves_no_cyclic_garbage(self, sim_conn):
        """Cyclic garbage per poll drives full GCs of the triggerer's heap (loop stalls): the happy path has none."""
        import gc

        task_id = LiangxinHook().create_task("z-image", {"prompt": "gc probe"})
        async with LiangxinHook() as hook:
            await hook.aget_task(task_id)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(50):
                    await hook.aget_task(task_id)
                gc.collect()
                # Only what the provider's call path can create: the process also holds the in-process simulator.
                ours = [
                    f"{type(o).__module__}.{type(o).__qualname__}"
                    for o in gc.garbage
                    if type(o).__module__.startswith(("tenacity", "airflow_provider_liangxin"))
                ]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
        assert ours == [], ours[:20]

    async def test_call_outside_context_is_a_clear_error(self, scripted_conn):
        hook = LiangxinHook()
        await hook._asettings()
        with pytest.raises(LiangxinConfigError, match="async with hook"):
            await hook.aget_task("t")

    def test_no_ssl_context_per_hook(self, monkeypatch):
        import ssl

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(f"https://127.0.0.1:{port}"))
        created = []
        real_init = ssl.SSLContext.__new__
        monkeypatch.setattr(
            ssl.SSLContext, "__new__", lambda cls, *a, **k: created.append(1) or real_init(cls, *a, **k)
        )
        hook_module.shared_ssl_context.cache_clear()

        async def many():
            for _ in range(20):
                async with LiangxinHook(retry={"max_attempts": 1}) as hook:
                    with pytest.raises(LiangxinConnectError):
                        await hook.aget_task("t")

        asyncio.run(many())
        assert created == [], "the async path built an SSL context of its own"
