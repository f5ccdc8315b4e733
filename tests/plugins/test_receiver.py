"""The callback route: tokens, caps, idempotency, status codes and the settle rule.

The database side is a fake with the compat module's contract (lock, look, submit in one transaction); the real
one (SQLite metadata DB, ``Trigger.submit_event``) is exercised end to end in tests/e2e/test_callbacks.py.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from airflow_provider_liangxin._airflow_compat import WaitingTask
from airflow_provider_liangxin.callbacks import TRIGGER_CLASSPATH, CallbackSettings, token_hash
from airflow_provider_liangxin.plugins.receiver import (
    MAX_BODY_BYTES,
    CallbackReceiver,
    RateLimiter,
    body_task_id,
    create_app,
    decide,
)

TI_ID = "0190c1a4-1111-7000-8000-000000000001"
OTHER_TI = "0190c1a4-2222-7000-8000-000000000002"
TOKEN = "tok-" + "A" * 40
LX_TASK = "task_seedream_1"
NOW = datetime.datetime(2026, 11, 29, 4, 0, tzinfo=datetime.UTC)


def body(task_id: str = LX_TASK) -> bytes:
    return json.dumps({"code": 200, "msg": "success", "data": {"taskId": task_id, "state": "success"}}).encode()


def trigger_kwargs(**extra: Any) -> dict[str, Any]:
    return {
        "liangxin_task_id": LX_TASK,
        "poll_interval": 60.0,
        "deadline": 1.9e9,
        "execution_deadline": None,
        "callback_token_sha256": token_hash(TOKEN),
        "callback_wakeups": 0,
        **extra,
    }


class FakeInternals:
    """One task instance table with the compat contract: a lock per call, ``submit_event`` moves a deferred task
    instance to ``scheduled`` (as Airflow's does: only task instances still deferred on that trigger)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tis: dict[str, WaitingTask] = {}
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    def defer(self, ti_id: str = TI_ID, *, age: float = 60.0, **kwargs: Any) -> None:
        self.tis[ti_id] = WaitingTask(
            state="deferred",
            trigger_id=7,
            classpath=kwargs.pop("classpath", TRIGGER_CLASSPATH),
            kwargs=trigger_kwargs(**kwargs),
            deferred_at=NOW - datetime.timedelta(seconds=age),
        )

    def in_locked_transaction(self, ti_id: str, rule):
        if self.fail:
            raise RuntimeError("database is down")
        with self.lock:
            waiting = self.tis.get(ti_id, WaitingTask(state=None))
            outcome, payload = rule(waiting)
            if payload is not None and waiting.state == "deferred":
                self.submitted.append((ti_id, payload))
                self.tis[ti_id] = WaitingTask(state="scheduled")
            return outcome

    def check_database(self) -> None:
        if self.fail:
            raise RuntimeError("database is down")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def db() -> FakeInternals:
    return FakeInternals()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def receiver(db: FakeInternals, clock: Clock, **settings: Any) -> CallbackReceiver:
    return CallbackReceiver(db, CallbackSettings(receiver_enabled=True, **settings), now=clock)


# ------------------------------------------------------------------------------------------------ the rule


class TestDecide:
    def waiting(self, **kwargs: Any) -> WaitingTask:
        fields = {
            "state": "deferred",
            "trigger_id": 7,
            "classpath": TRIGGER_CLASSPATH,
            "kwargs": trigger_kwargs(),
            "deferred_at": NOW - datetime.timedelta(seconds=60),
        }
        return WaitingTask(**{**fields, **kwargs})

    def test_right_token_resumes_with_a_check_event_carrying_no_token(self):
        decision, payload = decide(self.waiting(), TOKEN, LX_TASK, now=NOW, settle_seconds=15)
        assert decision.kind == "resume"
        assert payload == {
            "status": "callback",
            "task_id": LX_TASK,
            "message": f"LiangXin called back for task {LX_TASK}",
            "record": None,
            "callback": {
                "token_sha256": token_hash(TOKEN),
                "wakeups": 1,
                "deadline": 1.9e9,
                "execution_deadline": None,
            },
        }
        assert TOKEN not in json.dumps(payload)

    @pytest.mark.parametrize(
        ("waiting", "token", "task_id"),
        [
            ({}, TOKEN + "x", LX_TASK),  # wrong token
            ({}, "", LX_TASK),
            ({}, TOKEN, "task_other"),  # the body names another LiangXin task
            ({"state": None}, TOKEN, LX_TASK),  # unknown task instance
            ({"state": "running"}, TOKEN, LX_TASK),  # not (or no longer) waiting
            ({"state": "scheduled"}, TOKEN, LX_TASK),  # already resumed
            ({"classpath": "airflow.triggers.temporal.DateTimeTrigger"}, TOKEN, LX_TASK),  # someone else's trigger
            ({"kwargs": {**trigger_kwargs(), "callback_token_sha256": None}}, TOKEN, LX_TASK),  # callbacks off
            ({"kwargs": None}, TOKEN, LX_TASK),
        ],
    )
    def test_every_refusal_is_the_same_unknown(self, waiting, token, task_id):
        decision, payload = decide(self.waiting(**waiting), token, task_id, now=NOW, settle_seconds=15)
        assert (decision.kind, payload) == ("unknown", None)

    def test_settle_rule_delays_a_callback_for_a_task_that_just_deferred(self):
        young = self.waiting(deferred_at=NOW - datetime.timedelta(seconds=4))
        decision, payload = decide(young, TOKEN, LX_TASK, now=NOW, settle_seconds=15)
        assert decision.kind == "delay"
        assert decision.delay == pytest.approx(11)
        assert payload is None
        # a bad token is refused at once, not delayed: no timer for forgeries
        assert decide(young, "bad", LX_TASK, now=NOW, settle_seconds=15)[0].kind == "unknown"
        # exactly at the settle time it resumes; a clock in the future of the row never gives a negative wait
        at = self.waiting(deferred_at=NOW - datetime.timedelta(seconds=15))
        assert decide(at, TOKEN, LX_TASK, now=NOW, settle_seconds=15)[0].kind == "resume"
        future = self.waiting(deferred_at=NOW + datetime.timedelta(seconds=5))
        assert decide(future, TOKEN, LX_TASK, now=NOW, settle_seconds=15)[0].delay == 15
        assert decide(young, TOKEN, LX_TASK, now=NOW, settle_seconds=0)[0].kind == "resume"

    def test_wakeups_count_up_from_the_triggers(self):
        waiting = self.waiting(kwargs=trigger_kwargs(callback_wakeups=2))
        _, payload = decide(waiting, TOKEN, LX_TASK, now=NOW, settle_seconds=0)
        assert payload["callback"]["wakeups"] == 3


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (body(), LX_TASK),
        (b'{"taskId": "t1"}', "t1"),
        (b'{"data": {"taskId": ""}}', None),
        (b'{"data": {"taskId": 5}}', None),
        (b"[1, 2]", None),
        (b"not json", None),
        (b"\xff\xfe", None),
        (json.dumps({"taskId": "x" * 300}).encode(), None),
    ],
)
def test_body_task_id(raw, expected):
    assert body_task_id(raw) == expected


# ------------------------------------------------------------------------------------------------ the route


class TestRoute:
    def client(self, db: FakeInternals, clock: Clock, **settings: Any) -> TestClient:
        return TestClient(create_app(receiver(db, clock, **settings)))

    def test_resumes_once_and_duplicates_are_harmless(self, db, clock):
        db.defer()
        client = self.client(db, clock)
        first = client.post(f"/v1/callback/{TI_ID}/{TOKEN}", content=body())
        assert (first.status_code, first.content) == (204, b"")
        again = client.post(f"/v1/callback/{TI_ID}/{TOKEN}", content=body())
        assert again.status_code == 404  # no longer waiting: nothing to do, nothing resumed twice
        assert len(db.submitted) == 1

    def test_bad_token_and_unknown_task_instance_answer_alike(self, db, clock):
        db.defer()
        client = self.client(db, clock)
        answers = [
            client.post(f"/v1/callback/{TI_ID}/wrong-token", content=body()),
            client.post(f"/v1/callback/{OTHER_TI}/{TOKEN}", content=body()),
            client.post(f"/v1/callback/not-a-uuid/{TOKEN}", content=body()),
            client.post(f"/v1/callback/{TI_ID}/{TOKEN}", content=body("task_other")),
            client.post(f"/v1/callback/{TI_ID}", content=body()),
            client.get(f"/v1/callback/{TI_ID}/{TOKEN}"),
        ]
        assert {(a.status_code, a.content) for a in answers} == {(404, b'{"detail":"Not Found"}')}
        assert db.submitted == []
        assert db.tis[TI_ID].state == "deferred"

    def test_malformed_and_oversized_bodies(self, db, clock):
        db.defer()
        client = self.client(db, clock)
        assert client.post(f"/v1/callback/{TI_ID}/{TOKEN}", content=b"{}").status_code == 400
        assert client.post(f"/v1/callback/{TI_ID}/{TOKEN}", content=b"").status_code == 400
        big = b'{"data": {"taskId": "' + b"x" * MAX_BODY_BYTES + b'"}}'
        assert client.post(f"/v1/callback/{TI_ID}/{TOKEN}", content=big).status_code == 413

        def chunks():  # no Content-Length to trust: the cap counts what is read
            for _ in range(100):
                yield b" " * 1024

        assert client.post(f"/v1/callback/{TI_ID}/{TOKEN}", content=chunks()).status_code == 413
        assert db.submitted == []

    def test_database_errors_answer_503_so_liangxin_retries(self, db, clock):
        db.defer()
        db.fail = True
        client = self.client(db, clock)
        assert client.post(f"/v1/callback/{TI_ID}/{TOKEN}", content=body()).status_code == 503
        assert client.get("/v1/health").status_code == 503
        db.fail = False
        assert client.get("/v1/health").json() == {"status": "ok"}

    def test_rate_limited_before_any_database_work(self, db, clock):
        db.defer()
        client = self.client(db, clock, max_requests_per_second=1)
        codes = [client.post(f"/v1/callback/{OTHER_TI}/x", content=body()).status_code for _ in range(4)]
        assert codes[:2] == [404, 404]  # a burst of twice the rate
        assert codes[2:] == [429, 429]

    def test_no_docs_or_openapi_routes(self, db, clock):
        client = self.client(db, clock)
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404


class TestSettleRule:
    async def test_young_callback_is_accepted_and_applied_when_the_deferral_settled(self, db, clock):
        db.defer(age=14.8)
        rx = receiver(db, clock, settle_seconds=15)
        status, answer = await rx.handle(TI_ID, TOKEN, body(), "1.2.3.4")
        assert (status, answer) == (202, {"detail": "Accepted", "resume_in_seconds": 1})
        assert db.submitted == []
        # a duplicate while the timer waits: one timer, one resume
        assert (await rx.handle(TI_ID, TOKEN, body(), "1.2.3.4"))[0] == 202
        assert len(rx.pending) == 1
        clock.now = NOW + datetime.timedelta(seconds=0.3)
        await asyncio.wait_for(asyncio.gather(*rx.pending.values()), timeout=5)
        assert [ti for ti, _ in db.submitted] == [TI_ID]
        assert rx.pending == {}

    async def test_delayed_callback_rechecks_everything(self, db, clock):
        """The task resumed by its own trigger (or was cleared) meanwhile: the timer resumes nothing."""
        db.defer(age=14.9)
        rx = receiver(db, clock, settle_seconds=15)
        assert (await rx.handle(TI_ID, TOKEN, body(), "c"))[0] == 202
        db.tis[TI_ID] = WaitingTask(state="scheduled")
        clock.now = NOW + datetime.timedelta(seconds=1)
        await asyncio.wait_for(asyncio.gather(*rx.pending.values()), timeout=5)
        assert db.submitted == []

    async def test_forged_callbacks_start_no_timer(self, db, clock):
        db.defer(age=1)
        rx = receiver(db, clock, settle_seconds=15)
        assert (await rx.handle(TI_ID, "forged", body(), "c"))[0] == 404
        assert rx.pending == {}

    async def test_close_cancels_waiting_timers(self, db, clock):
        db.defer(age=0)
        rx = receiver(db, clock, settle_seconds=15)
        assert (await rx.handle(TI_ID, TOKEN, body(), "c"))[0] == 202
        await rx.close()
        assert db.submitted == []


def test_rate_limiter_refills_and_keeps_clients_apart():
    now = [0.0]
    limiter = RateLimiter(global_rate=100, per_client=1, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")
    now[0] += 1.0
    assert limiter.allow("a")


def test_access_log_sees_the_path_without_the_token(db, clock):
    """The api-server's access log middleware reads ``scope["path"]`` after the app answered; Starlette's Mount
    updates that same scope, so the mounted app can hide the token from it."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    db.defer()
    seen: list[str] = []
    outer = Starlette(routes=[Mount("/liangxin", app=create_app(receiver(db, clock)))])

    async def access_log(scope, receive, send):
        await outer(scope, receive, send)
        seen.extend([scope["path"], scope["raw_path"].decode()])

    client = TestClient(access_log)
    assert client.post(f"/liangxin/v1/callback/{TI_ID}/{TOKEN}", content=body()).status_code == 204
    assert seen == [f"/liangxin/v1/callback/{TI_ID}/***"] * 2


def test_uvicorn_access_log_never_holds_the_token(db, clock):
    """Airflow 3.1's api-server logs requests with uvicorn's own access logger, which writes its line when the
    response starts (before RedactPath's rewrite): a real uvicorn on loopback, its access log captured."""
    import socket

    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    db.defer()
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    access = logging.getLogger("uvicorn.access")
    capture, level = Capture(), access.level
    access.addHandler(capture)
    access.setLevel(logging.INFO)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    outer = Starlette(routes=[Mount("/liangxin", app=create_app(receiver(db, clock)))])
    server = uvicorn.Server(uvicorn.Config(outer, log_config=None, access_log=True, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        answer = httpx.post(f"http://127.0.0.1:{port}/liangxin/v1/callback/{TI_ID}/{TOKEN}", content=body())
        assert answer.status_code == 204
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        access.removeHandler(capture)
        access.setLevel(level)
    callback_lines = [line for line in lines if "/liangxin/v1/callback/" in line]
    assert callback_lines, lines
    assert all(TOKEN not in line and f"/liangxin/v1/callback/{TI_ID}/***" in line for line in callback_lines)


def test_access_log_filter_redacts_a_message_without_args():
    from airflow_provider_liangxin.plugins.receiver import RedactAccessLog

    record = logging.LogRecord(
        "uvicorn.access", 20, __file__, 1, f"POST /liangxin/v1/callback/{TI_ID}/{TOKEN}", None, None
    )
    assert RedactAccessLog().filter(record)
    assert record.getMessage() == f"POST /liangxin/v1/callback/{TI_ID}/***"


class TestPlugin:
    """What the api-server mounts, decided by [liangxin] callback_receiver_enabled and the compat module."""

    def test_receiver_off_by_default(self):
        """By default only the result view is mounted (docs/result-view.md); with it off too, nothing."""
        from airflow_provider_liangxin.plugins.callback_receiver import fastapi_apps
        from tests.test_callbacks import FakeConf

        (entry,) = fastapi_apps(FakeConf())
        assert entry["name"] == "LiangXin result view"
        assert fastapi_apps(FakeConf(result_view_enabled="False")) == []

    def test_mounted_under_liangxin_when_enabled(self):
        from airflow_provider_liangxin.plugins.callback_receiver import fastapi_apps
        from tests.test_callbacks import FakeConf

        (entry,) = fastapi_apps(FakeConf(callback_receiver_enabled="True"))
        assert entry["url_prefix"] == "/liangxin"
        assert entry["name"] == "LiangXin callback receiver and result view"
        (entry,) = fastapi_apps(FakeConf(callback_receiver_enabled="True", result_view_enabled="False"))
        assert entry["name"] == "LiangXin callback receiver"

    def test_missing_internals_disable_it_with_one_log_line(self, monkeypatch, caplog):
        import builtins

        from airflow_provider_liangxin.plugins.callback_receiver import fastapi_apps
        from tests.test_callbacks import FakeConf

        real_import = builtins.__import__

        def no_trigger_model(name, *args, **kwargs):
            if name == "airflow.models.trigger":
                raise ImportError("No module named 'airflow.models.trigger'")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_trigger_model)
        with caplog.at_level("WARNING"):
            assert fastapi_apps(FakeConf(callback_receiver_enabled="True", result_view_enabled="False")) == []
        (record,) = [r for r in caplog.records if "LiangXin" in r.getMessage()]
        assert "callback receiver disabled" in record.getMessage()
        assert "finish by polling" in record.getMessage()

    def test_bad_settings_disable_it_with_the_reason(self, caplog):
        from airflow_provider_liangxin.plugins.callback_receiver import fastapi_apps
        from tests.test_callbacks import FakeConf

        conf = FakeConf(callback_receiver_enabled="True", callback_settle_seconds="soon", result_view_enabled="False")
        assert fastapi_apps(conf) == []
        assert "callback_settle_seconds must be a number" in caplog.text

    def test_entry_point_names_the_plugin(self):
        import importlib.metadata

        from airflow_provider_liangxin.plugins.callback_receiver import LiangxinCallbackPlugin

        entries = importlib.metadata.entry_points(group="airflow.plugins")
        (entry,) = [e for e in entries if e.name == "liangxin_callbacks"]
        assert entry.load() is LiangxinCallbackPlugin
        assert LiangxinCallbackPlugin.name == "liangxin_callbacks"

    def test_result_view_app_is_built_on_first_request_with_cores_auth(self):
        """The plugin's app is a LazyApp (nothing heavy at import in workers); built, it answers the result view's
        route through core_api's own auth dependency: no credentials, 401."""
        from airflow_provider_liangxin.plugins.callback_receiver import LazyApp, fastapi_apps
        from tests.test_callbacks import FakeConf

        (entry,) = fastapi_apps(FakeConf())
        assert isinstance(entry["app"], LazyApp)
        assert entry["app"]._app is None
        response = TestClient(entry["app"]).get("/v1/results", params={"dag_id": "d", "run_id": "r", "task_id": "t"})
        assert response.status_code == 401
        assert entry["app"]._app is not None

    def test_task_instance_tab(self):
        from airflow.providers.common.compat.sdk import AirflowPlugin

        from airflow_provider_liangxin.plugins.callback_receiver import LiangxinCallbackPlugin, external_views
        from tests.test_callbacks import FakeConf

        if not hasattr(AirflowPlugin, "external_views"):  # Airflow 3.0: no plugin tabs; the extra link only
            assert "external_views" not in vars(LiangxinCallbackPlugin)
            return
        (view,) = LiangxinCallbackPlugin.external_views
        assert view["destination"] == "task_instance"
        assert view["href"] == (
            "/liangxin/v1/results?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"
        )
        assert external_views(FakeConf(result_view_enabled="False")) == []
