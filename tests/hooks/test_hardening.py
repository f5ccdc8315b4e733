"""The hook against a broken, slow or hostile endpoint (issue 10), over real loopback sockets, sync and async.

Huge answers, answers trickled a byte at a time, records of another task, redirects, bad gzip, odd Retry-After
values, bad connection settings and a dead host next to a healthy one.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest

from airflow_provider_liangxin import _api
from airflow_provider_liangxin._api import (
    MAX_API_RESPONSE_BYTES,
    LiangxinConfigError,
    LiangxinHTTPError,
    LiangxinResponseError,
    LiangxinTimeoutError,
    TaskState,
)
from airflow_provider_liangxin.hooks.liangxin import ASYNC_CONNECTION_LIMIT, SESSION_POOL, LiangxinHook
from tests.conftest import TEST_API_KEY, liangxin_conn_json
from tests.hooks.test_liangxin import MODES, RID, RecordingHook, run
from tests.support.scripted_server import HoldingServer, Reply, ScriptedServer, ok, record

MB = 1024 * 1024
ONCE = {"max_attempts": 1}
#: Retries with no waits: only a deadline or the attempt cap can stop them.
EAGER = {"max_attempts": 5, "backoff_initial": 0.0, "backoff_max": 0.0, "max_wait_total": 600}


def timed(mode: str, hook: LiangxinHook, method: str, *args, **kwargs) -> tuple[BaseException | None, float]:
    """(the error raised, seconds taken) of a hook call on either path."""
    started = time.monotonic()
    try:
        if mode == "sync":
            try:
                getattr(hook, method)(*args, **kwargs)
            finally:
                hook.close()
        else:

            async def go():
                async with hook:
                    await getattr(hook, "a" + method)(*args, **kwargs)

            asyncio.run(go())
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# ------------------------------------------------------------------------------------- 1. bounded reads


@pytest.mark.parametrize("mode", MODES)
class TestResponseCap:
    @pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
    def test_a_50_mb_answer_fails_fast_and_typed_without_being_read(self, scripted_conn, mode, declared):
        scripted_conn.script(Reply(200, b'{"code":200,"msg":"', filler=50 * MB, declare_length=declared))
        err, took = timed(mode, LiangxinHook(retry=EAGER), "get_task", RID)
        assert isinstance(err, LiangxinResponseError), err
        assert f"more than {MAX_API_RESPONSE_BYTES} bytes" in str(err)
        assert took < 10
        assert len(scripted_conn.requests) == 1  # a response error is not retried
        # The server could write little more than the cap (plus socket buffers) before the client hung up.
        _wait_for(lambda: scripted_conn.sent)
        assert scripted_conn.sent[0] < 20 * MB

    def test_a_compressed_bomb_is_capped_after_decoding(self, scripted_conn, mode):
        bomb = gzip.compress(b" " * (40 * MB), compresslevel=9)
        assert len(bomb) < MAX_API_RESPONSE_BYTES
        scripted_conn.script(Reply(200, bomb, {"Content-Encoding": "gzip"}))
        err, _ = timed(mode, LiangxinHook(retry=ONCE), "get_task", RID)
        assert isinstance(err, LiangxinResponseError), err
        assert "more than" in str(err)

    def test_an_answer_just_under_the_cap_is_read(self, scripted_conn, mode):
        body = json.dumps(
            {"code": 200, "msg": "success", "data": record(RID), "pad": "x" * (MAX_API_RESPONSE_BYTES - 2000)}
        )
        assert len(body) <= MAX_API_RESPONSE_BYTES
        scripted_conn.script(Reply(200, body))
        assert run(mode, LiangxinHook(retry=ONCE), "get_task", RID).task_id == RID

    def test_api_text_is_capped_before_it_reaches_the_error(self, scripted_conn, mode):
        scripted_conn.script(Reply(400, {"code": 400, "msg": "m" * (3 * MB), "data": None}))
        err, _ = timed(mode, LiangxinHook(retry=ONCE), "create_task", "z-image", {"prompt": "x"})
        assert isinstance(err, _api.LiangxinBadRequestError), err
        assert len(str(err)) < _api.API_TEXT_MAX_CHARS + 200
        assert "chars in all]" in str(err)

    def test_fail_msg_is_capped_in_the_record_and_its_event_form(self, scripted_conn, mode):
        scripted_conn.script(ok(record(RID, state="fail", failCode="500", failMsg="f" * (3 * MB))))
        rec = run(mode, LiangxinHook(retry=ONCE), "get_task", RID)
        assert rec.state is TaskState.FAIL
        assert len(rec.fail_msg) == _api.API_TEXT_MAX_CHARS
        assert len(json.dumps(rec.to_dict())) < 5000


def _wait_for(condition, timeout: float = 5.0) -> None:
    ends = time.monotonic() + timeout
    while not condition() and time.monotonic() < ends:
        time.sleep(0.02)


# ------------------------------------------------------------------------------ 2. whole-request deadline


@pytest.mark.parametrize("mode", MODES)
class TestWholeRequestDeadline:
    @pytest.mark.parametrize("headers_too", [True, False], ids=["trickled-headers", "trickled-body"])
    def test_a_trickling_server_cannot_hold_a_request_past_the_timeout(self, scripted_conn, mode, headers_too):
        # A byte every 0.2 s never trips a per-read timeout of 1 s; the ~300-byte answer would take a minute.
        scripted_conn.script(Reply(200, ok(record(RID)).body, trickle=0.2, trickle_headers=headers_too))
        err, took = timed(mode, LiangxinHook(timeout=1, retry=ONCE), "get_task", RID)
        assert isinstance(err, LiangxinTimeoutError), err
        assert "no answer within 1 s" in str(err)
        assert took < 3

    def test_create_task_is_bounded_too_and_not_resent(self, scripted_conn, mode):
        scripted_conn.script(Reply(200, ok({"taskId": "t1"}).body, trickle=0.2), ok({"taskId": "t2"}))
        err, took = timed(mode, LiangxinHook(timeout=1, retry=EAGER), "create_task", "z-image", {"prompt": "x"})
        assert isinstance(err, LiangxinTimeoutError), err
        assert took < 3
        assert len(scripted_conn.requests) == 1

    def test_the_callers_deadline_bounds_the_request_and_its_retries(self, scripted_conn, mode):
        scripted_conn.script(*[Reply(200, ok(record(RID)).body, trickle=0.2) for _ in range(5)])
        deadline = time.time() + 1.0
        err, took = timed(mode, LiangxinHook(timeout=30, retry=EAGER), "get_task", RID, deadline=deadline)
        assert isinstance(err, LiangxinTimeoutError), err
        assert took < 2.5
        assert len(scripted_conn.requests) == 1  # no retry starts at or past the deadline

    def test_a_passed_deadline_sends_nothing(self, scripted_conn, mode):
        err, _ = timed(mode, LiangxinHook(retry=EAGER), "get_task", RID, deadline=time.time() - 1)
        assert isinstance(err, LiangxinTimeoutError), err
        assert "deadline has passed" in str(err)
        assert scripted_conn.requests == []

    def test_a_deadline_further_than_the_timeout_changes_nothing(self, scripted_conn, mode):
        scripted_conn.script(ok(record(RID)))
        hook = LiangxinHook(retry=ONCE)
        if mode == "sync":
            rec = hook.get_task(RID, deadline=time.time() + 3600)
        else:

            async def go():
                async with hook:
                    return await hook.aget_task(RID, deadline=time.time() + 3600)

            rec = asyncio.run(go())
        assert rec.task_id == RID


def test_sync_requests_through_an_env_proxy_are_bounded_too(scripted_server, monkeypatch):
    """The deadline sits under every httpx transport, the proxy mounts from HTTP_PROXY included."""
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json("http://lx.invalid", timeout=1))
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, scripted_server.base_url)  # the "proxy" is the trickling server itself
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    scripted_server.script(Reply(200, ok(record(RID)).body, trickle=0.2))
    err, took = timed("sync", LiangxinHook(retry=ONCE), "get_task", RID)
    assert isinstance(err, LiangxinTimeoutError), err
    assert took < 3
    assert scripted_server.requests[0].path.startswith("http://lx.invalid/")


# --------------------------------------------------------------------------------- 3. the record asked for


@pytest.mark.parametrize("mode", MODES)
def test_a_record_of_another_task_is_refused(scripted_conn, mode):
    scripted_conn.script(ok(record("task_someone_else_1", state="success")))
    err, _ = timed(mode, LiangxinHook(retry=EAGER), "get_task", "task_mine_1")
    assert isinstance(err, LiangxinResponseError), err
    assert "answered for task 'task_someone_else_1' when 'task_mine_1' was asked" in str(err)
    assert len(scripted_conn.requests) == 1


# --------------------------------------------------------------------------------- 10. the smaller ones


@pytest.mark.parametrize("mode", MODES)
def test_bad_gzip_is_a_typed_response_error(scripted_conn, mode):
    scripted_conn.script(Reply(200, b"this is not gzip at all", {"Content-Encoding": "gzip"}))
    err, _ = timed(mode, LiangxinHook(retry=ONCE), "get_task", RID)
    assert isinstance(err, LiangxinResponseError), err


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_refused_and_create_task_is_never_resent(scripted_conn, mode, status):
    with ScriptedServer() as elsewhere:
        elsewhere.script(ok({"taskId": "t-elsewhere"}))
        location = f"{elsewhere.base_url}/api/v1/jobs/createTask"
        scripted_conn.script(Reply(status, b"", {"Location": location}))
        err, _ = timed(mode, LiangxinHook(retry=EAGER), "create_task", "z-image", {"prompt": "x"})
        assert type(err) is LiangxinHTTPError, err
        assert "redirect" in str(err)
        assert err.status_code == status
        assert elsewhere.requests == []  # the key never travelled to the other origin
    assert len(scripted_conn.requests) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", ["nan", "-5", "inf", "-inf"])
def test_odd_retry_after_values_fall_back_to_the_backoff(scripted_conn, mode, value, monkeypatch):
    monkeypatch.setattr(_api.random, "uniform", lambda low, high: high)
    scripted_conn.script(Reply(429, {"code": 429, "msg": "busy"}, {"Retry-After": value}), ok(record(RID)))
    hook = RecordingHook(retry={"max_attempts": 3, "backoff_initial": 1.5, "backoff_max": 1.5, "max_wait_total": 60})
    assert run(mode, hook, "get_task", RID).task_id == RID
    assert hook.waits == [1.5]


SECRET_PW = "hunter2-very-secret-pw"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "host",
    [f"https://user:{SECRET_PW}@lx.example", f"user:{SECRET_PW}@lx.example", f"http://:{SECRET_PW}@127.0.0.1:1"],
)
def test_userinfo_in_the_host_is_a_config_error_that_never_echoes_it(monkeypatch, mode, host):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(host))
    hook = RecordingHook(retry=EAGER)
    err, _ = timed(mode, hook, "get_task", RID)
    assert isinstance(err, LiangxinConfigError), err
    assert "user name or password" in str(err)
    chain = [err, err.__cause__, err.__context__]
    assert not any(SECRET_PW in repr(e) or SECRET_PW in str(e) for e in chain if e is not None)
    assert hook.waits == []
    good, message = LiangxinHook().test_connection()
    assert not good
    assert SECRET_PW not in message


@pytest.mark.parametrize("mode", MODES)
def test_a_key_with_an_inner_space_is_rejected_unechoed(scripted_server, monkeypatch, mode):
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(scripted_server.base_url, "sk-abc SECRETPART")
    )
    err, _ = timed(mode, LiangxinHook(), "get_task", RID)
    assert isinstance(err, LiangxinConfigError), err
    assert "SECRETPART" not in str(err)
    assert scripted_server.requests == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("http://exa mple.com", "no valid host name"),
        ("http://lx.example:99999", "invalid port"),
        ("http://lx.example:abc", "invalid port"),
        ("http://lx.example:0", "invalid port"),
        ("ftp://lx.example", "unsupported scheme"),
        ("http://[::1", "not a valid URL"),
        ("http://lx.example/?a=1", "query"),
        ("http://", "no valid host name"),
        ("http://bad_host!.example", "no valid host name"),
    ],
)
def test_an_invalid_host_is_a_config_error_not_retried(monkeypatch, mode, host, why):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json(host))
    hook = RecordingHook(retry=EAGER)
    err, took = timed(mode, hook, "get_task", RID)
    assert isinstance(err, LiangxinConfigError), err
    assert why in str(err)
    assert hook.waits == []
    assert took < 2


def test_an_invalid_connection_port_is_a_config_error(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIANGXIN_DEFAULT",
        json.dumps({"conn_type": "liangxin", "host": "lx.example", "port": 70000, "password": "k"}),
    )
    with pytest.raises(LiangxinConfigError, match="port 70000 is invalid"):
        LiangxinHook().settings  # noqa: B018


def test_port_zero_means_no_port(monkeypatch):
    """Airflow 3.3.2's UI sends port 0 for an empty port field (apache/airflow#73298)."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIANGXIN_DEFAULT",
        json.dumps({"conn_type": "liangxin", "host": "https://lx.example", "port": 0, "password": "k"}),
    )
    assert LiangxinHook().settings.base_url == "https://lx.example"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (True, "finite"),
        (0, "> 0"),
        (-1, "> 0"),
        ("soon", "finite"),
    ],
)
def test_hook_timeout_must_be_finite_and_positive(value, message):
    with pytest.raises(LiangxinConfigError, match=message):
        LiangxinHook(timeout=value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", True, 0, "-2"])
def test_connection_timeout_extra_must_be_finite_and_positive(monkeypatch, value):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json("http://h", timeout=value))
    with pytest.raises(LiangxinConfigError, match="timeout"):
        LiangxinHook().settings  # noqa: B018


def test_connection_timeout_below_one_second_is_accepted(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json("http://h", timeout=0.25))
    assert LiangxinHook().settings.timeout == 0.25


@pytest.mark.parametrize(
    ("extra", "expected"),
    [({}, False), ({"allow_private_result_hosts": "true"}, True), ({"allow_private_result_hosts": False}, False)],
)
def test_allow_private_result_hosts_extra(monkeypatch, extra, expected):
    monkeypatch.setenv("AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json("http://h", **extra))
    assert LiangxinHook().settings.allow_private_result_hosts is expected


def test_allow_private_result_hosts_must_be_a_boolean(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_LIANGXIN_DEFAULT", liangxin_conn_json("http://h", allow_private_result_hosts="maybe")
    )
    with pytest.raises(LiangxinConfigError, match="allow_private_result_hosts"):
        LiangxinHook().settings  # noqa: B018


async def test_a_dead_host_cannot_delay_a_healthy_hosts_requests(scripted_conn, monkeypatch):
    """More hung requests to one host than a session has connections; another host still answers at once."""
    scripted_conn.script(ok(record(RID)))
    with HoldingServer() as dead:
        monkeypatch.setenv("AIRFLOW_CONN_LX_DEAD", liangxin_conn_json(dead.base_url, timeout=20))
        async with LiangxinHook("lx_dead", retry=ONCE) as dead_hook, LiangxinHook(retry=ONCE) as healthy:
            hung = [asyncio.create_task(dead_hook.aget_task(RID)) for _ in range(ASYNC_CONNECTION_LIMIT + 20)]
            for _ in range(200):  # until the dead host holds a full session's worth of connections
                if len(dead.held) >= ASYNC_CONNECTION_LIMIT:
                    break
                await asyncio.sleep(0.02)
            assert len(dead.held) >= ASYNC_CONNECTION_LIMIT
            started = time.monotonic()
            rec = await asyncio.wait_for(healthy.aget_task(RID), timeout=5)
            took = time.monotonic() - started
            assert SESSION_POOL.users(True) == 2
            assert healthy._session is not dead_hook._session
            for task in hung:
                task.cancel()
            await asyncio.gather(*hung, return_exceptions=True)
    assert rec.task_id == RID
    assert took < 1.0


def test_the_key_is_not_in_any_error_of_these_paths():
    """The shared TEST_API_KEY is what every scripted connection uses; guard against echoing it in messages."""
    err = _api.transport_error(
        _api.build_record_info("t"),
        LiangxinConfigError,
        ValueError(f"Authorization: Bearer {TEST_API_KEY}"),
        base_url="http://h",
        budget=1,
        conn_id="c",
    )
    assert TEST_API_KEY not in str(err)


# ---------------------------------------------------------------------------- the key echoed by the server


def _texts(err: BaseException) -> str:
    """Everything a log line or traceback could print of ``err``: its text, repr, attributes and chain."""
    parts: list[str] = []
    link: BaseException | None = err
    while link is not None:
        parts += [str(link), repr(link), repr(vars(link)), repr(link.args)]
        link = link.__cause__ or link.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("mode", MODES)
def test_a_key_echoed_by_the_simulator_is_masked_in_the_error_the_hook_raises(sim_conn, mode):
    """The simulator's ``[sim:echo-auth]`` gateway quotes our Authorization header in its 401: the hook's error
    says what happened, with ``***`` where the key was (a LocalExecutor copies task logs unmasked)."""
    hook = LiangxinHook(retry=ONCE)
    task_id = hook.create_task("z-image", {"prompt": "a hostile gateway [sim:echo-auth]"})
    err, _ = timed(mode, LiangxinHook(retry=ONCE), "get_task", task_id)
    assert isinstance(err, _api.LiangxinAuthError), err
    assert "Authorization: Bearer ***" in str(err)
    assert sim_conn.api_key not in _texts(err)


@pytest.mark.parametrize("mode", MODES)
def test_a_key_echoed_into_fail_msg_or_a_retried_error_never_leaves_the_hook(scripted_conn, mode, caplog, capsys):
    """A 500 quoting the key is retried (its text is logged between attempts), then a record whose failMsg
    quotes it: neither the retry log nor the record carries the key."""
    echoed = f"upstream saw Authorization: Bearer {TEST_API_KEY}"
    scripted_conn.script(
        Reply(500, {"code": 500, "msg": echoed, "data": None}),
        ok(record(RID, state="fail", failCode="500", failMsg=echoed)),
    )
    with caplog.at_level("DEBUG"):
        hook = LiangxinHook(retry=EAGER)
        if mode == "sync":
            rec = hook.get_task(RID)
        else:

            async def go():
                async with hook:
                    return await hook.aget_task(RID)

            rec = asyncio.run(go())
    assert len(scripted_conn.requests) == 2
    assert rec.fail_msg == "upstream saw Authorization: Bearer ***"
    logged = caplog.text + capsys.readouterr().out  # Airflow's structlog writes to stdout
    assert "attempt 1/5 failed (LiangXin recordInfo failed: upstream saw Authorization: Bearer ***" in logged
    assert TEST_API_KEY not in logged


def test_a_key_quoted_in_a_chained_library_error_is_masked_too():
    """A malformed answer the HTTP library quotes (a status line echoing the header) is the transport error's
    cause: a traceback prints the chain, so the chain is scrubbed as well."""
    try:
        try:
            raise ValueError(f"bad status line: 'HTTP/1.1 200 Authorization: Bearer {TEST_API_KEY}'")
        except ValueError as cause:
            raise _api.LiangxinTransportError(f"echo {TEST_API_KEY}", body_excerpt=TEST_API_KEY) from cause
    except _api.LiangxinTransportError as err:
        scrubbed = _api.scrub_error(err, TEST_API_KEY)
    assert scrubbed.body_excerpt == "***"
    assert TEST_API_KEY not in _texts(scrubbed)
    assert "Bearer ***" in str(scrubbed.__cause__)
