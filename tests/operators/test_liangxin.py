"""LiangxinCreateTaskOperator against the running simulator: every path from create to result or failure."""

from __future__ import annotations

import collections
import json
import time
from datetime import UTC, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_liangxin.events import LiangxinTaskFailedException, LiangxinTaskWaitException, make_event
from airflow_provider_liangxin.operators.liangxin import (
    STATE_KEY,
    XCOM_RESULT_URL,
    XCOM_TASK_ID,
    CreateTaskOperator,
    LiangxinCreateTaskOperator,
)
from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger
from tests.conftest import api_calls
from tests.support.airflow_context import (
    FakeStateStore,
    FakeTI,
    FlakyStateStore,
    execution_api_timeout,
    make_context,
)

PROMPT = "a red fox in fresh snow"


def operator(**kwargs) -> LiangxinCreateTaskOperator:
    defaults = {
        "task_id": "hero",
        "model": "seedream-v4-5",
        "input": {"prompt": PROMPT, "aspect_ratio": "16:9"},
        "poll_interval": 0.05,
        "deferrable": False,
    }
    return LiangxinCreateTaskOperator(**{**defaults, **kwargs})


def creates(sim) -> int:
    return sum(sim.stats()["requests"].get("POST /api/v1/jobs/createTask", {}).values())


def instant(sim) -> None:
    sim.set_faults({"durations": [0, 0, 0]})


class TestConstruction:
    def test_alias(self):
        assert CreateTaskOperator is LiangxinCreateTaskOperator

    def test_templated_fields(self):
        assert set(LiangxinCreateTaskOperator.template_fields) >= {"model", "input", "callback_url", "output_path"}

    def test_literal_typo_fails_at_parse_time_with_every_problem(self):
        with pytest.raises(ValueError, match="hero") as info:
            operator(input={"prompt": "", "aspect_ration": "16:9", "seed": -1})
        text = str(info.value)
        assert "input.prompt" in text
        assert "aspect_ration" in text
        assert "input.seed" in text

    def test_templated_input_is_validated_at_execute_without_any_request(self, sim_conn):
        op = operator(input={"prompt": "{{ params.prompt }}", "aspect_ratio": "17:9"})
        before = api_calls(sim_conn)
        with pytest.raises(AirflowFailException, match=r"aspect_ratio='17:9' is not allowed"):
            op.execute(make_context())
        assert api_calls(sim_conn) == before

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"poll_interval": 0}, "poll_interval"),
            ({"timeout": -1}, "timeout"),
            ({"retry": {"tries": 2}}, "unknown retry settings"),
            ({"callback_url": "http://example.com/cb"}, "https://"),
        ],
    )
    def test_bad_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            operator(**kwargs)

    def test_validate_false_sends_what_the_schema_does_not_know(self, sim_conn):
        op = operator(input={"prompt": "x", "style_preset": "anime"}, validate=False)
        before = api_calls(sim_conn)
        with pytest.raises(Exception, match="HTTP 400"):  # the simulator (like LiangXin) still judges it
            op.execute(make_context())
        assert api_calls(sim_conn) == before + 1

    def test_mapped_task_validates_at_execute_and_fails_once(self, sim_conn):
        op = operator(input={"prompt": "x", "aspect_ratio": "17:9"}, _airflow_from_mapped=True)
        with pytest.raises(AirflowFailException, match="aspect_ratio"):
            op.execute(make_context())

    def test_retry_policy_object_is_accepted(self):
        from airflow_provider_liangxin._api import RetryPolicy

        op = operator(retry=RetryPolicy(max_attempts=2))
        assert op.retry == {"max_attempts": 2, "backoff_initial": 1.0, "backoff_max": 30.0, "max_wait_total": 120.0}

    def test_unknown_model_passes_with_warning_unless_strict(self):
        operator(model="brand-new-model", input={"anything": 1})
        with pytest.raises(ValueError, match="brand-new-model"):
            operator(model="brand-new-model", input={"anything": 1}, strict=True)


class TestSyncMode:
    def test_creates_pushes_task_id_first_then_polls_to_success(self, sim_conn):
        ti = FakeTI()
        result = operator().execute(make_context(FakeStateStore(), ti))
        assert ti.pushed[0] == (XCOM_TASK_ID, result["task_id"])
        assert result["state"] == "success"
        assert result["model"] == "seedream-v4-5"
        assert result["result_urls"][0].startswith(sim_conn.base_url)
        assert result["param"]["input"] == {"prompt": PROMPT, "aspect_ratio": "16:9"}
        assert ti.pushed_value(XCOM_RESULT_URL) == result["result_urls"][0]
        assert json.loads(json.dumps(result)) == result

    def test_failed_task_raises_with_fail_code_and_message(self, sim_conn):
        op = operator(input={"prompt": "a storm [sim:fail:422:upstream refused]"})
        with pytest.raises(LiangxinTaskFailedException, match="failCode='422' failMsg='upstream refused'") as info:
            op.execute(make_context(FakeStateStore()))
        assert (info.value.fail_code, info.value.fail_msg) == ("422", "upstream refused")

    def test_timeout_raises_naming_the_task(self, sim_conn):
        op = operator(input={"prompt": "forever [sim:never]"}, timeout=0.3)
        ti = FakeTI()
        started = time.monotonic()
        with pytest.raises(
            AirflowException, match=r"Gave up waiting for LiangXin task task_seedream-v4-5_.*wait timeout"
        ):
            op.execute(make_context(FakeStateStore(), ti))
        assert time.monotonic() - started < 3
        assert ti.pushed_value(XCOM_TASK_ID)

    def test_fire_and_forget_returns_task_id(self, sim_conn):
        ti = FakeTI()
        result = operator(wait_for_completion=False, deferrable=True).execute(make_context(FakeStateStore(), ti))
        assert isinstance(result, str)
        assert result.startswith("task_seedream-v4-5_")
        assert ti.pushed[0] == (XCOM_TASK_ID, result)
        assert ti.pushed_value(XCOM_RESULT_URL) == f"{sim_conn.base_url}/api/v1/jobs/recordInfo?taskId={result}"

    def test_api_error_surfaces_status_and_message(self, sim_conn):
        with pytest.raises(Exception, match="HTTP 403"):
            operator(input={"prompt": "x [sim:403]"}).execute(make_context())

    def test_sync_poll_names_execution_timeout_when_it_is_the_one_that_passed(self, sim_conn):
        from datetime import datetime

        op = operator(input={"prompt": "forever [sim:never]"}, timeout=600, execution_timeout=timedelta(seconds=30))
        ti = FakeTI(start_date=datetime.fromtimestamp(time.time() - 29.7, tz=UTC))
        with pytest.raises(AirflowException, match="execution_timeout has passed"):
            op.execute(make_context(FakeStateStore(), ti))


class TestDeferrableMode:
    def test_defers_with_json_native_trigger_and_absolute_deadlines(self, sim_conn):
        op = operator(deferrable=True, poll_interval=2.5, timeout=600, execution_timeout=timedelta(minutes=30))
        ti = FakeTI()
        now = time.time()
        with pytest.raises(TaskDeferred) as info:
            op.execute(make_context(FakeStateStore(), ti))
        deferred = info.value
        assert isinstance(deferred.trigger, LiangxinTaskTrigger)
        assert deferred.method_name == "execute_complete"
        _, kwargs = deferred.trigger.serialize()
        assert kwargs["liangxin_task_id"] == ti.pushed_value(XCOM_TASK_ID)
        assert kwargs["liangxin_conn_id"] == "liangxin_default"
        assert kwargs["poll_interval"] == 2.5
        assert now + 599 <= kwargs["deadline"] <= time.time() + 600
        assert ti.start_date.timestamp() + 1800 == pytest.approx(kwargs["execution_deadline"])
        assert json.loads(json.dumps(kwargs)) == kwargs
        # the framework timeout is only a backstop behind the trigger's own deadline
        assert deferred.timeout > timedelta(seconds=600)

    def test_deferral_carries_the_configured_settle_time(self, sim_conn, monkeypatch, caplog):
        """[liangxin] deferral_settle_seconds reaches the trigger (apache/airflow#72716); a bad value is logged
        and the default applies: the task is paid for by then, and the margin only guards a race."""
        for value, expected in (("4", 4.0), ("soon", 15.0)):
            monkeypatch.setenv("AIRFLOW__LIANGXIN__DEFERRAL_SETTLE_SECONDS", value)
            with pytest.raises(TaskDeferred) as info:
                operator(deferrable=True).execute(make_context(FakeStateStore(), FakeTI()))
            assert info.value.trigger.serialize()[1]["settle_seconds"] == expected
        assert "deferral_settle_seconds must be a number, got 'soon'; using 15 s" in caplog.text

    def test_already_terminal_task_finishes_without_deferring(self, sim_conn):
        instant(sim_conn)
        result = operator(deferrable=True).execute(make_context(FakeStateStore()))
        assert result["state"] == "success"

    def test_already_failed_task_raises_without_deferring(self, sim_conn):
        instant(sim_conn)
        with pytest.raises(AirflowException, match="failed"):
            operator(deferrable=True, input={"prompt": "x [sim:fail]"}).execute(make_context(FakeStateStore()))

    def test_execute_complete_success_returns_result_and_pushes_link(self, sim_conn):
        instant(sim_conn)
        hook_result = operator().execute(make_context())
        event = make_event("success", hook_result["task_id"], "ok", None)
        from airflow_provider_liangxin._api import TaskRecord

        event["record"] = TaskRecord.from_dict(hook_result).to_dict()
        ti = FakeTI()
        result = operator(deferrable=True).execute_complete(make_context(ti=ti), event)
        assert result["task_id"] == hook_result["task_id"]
        assert ti.pushed_value(XCOM_RESULT_URL) == hook_result["result_urls"][0]

    @pytest.mark.parametrize(
        ("event", "exc", "message"),
        [
            (None, AirflowException, "no usable event"),
            ({"status": "cancelled", "task_id": "t"}, AirflowException, "unknown event status 'cancelled'"),
            (make_event("fail", "t1", "x", None), LiangxinTaskFailedException, "LiangXin task t1 failed"),
            (make_event("timeout", "t1", "the operator's timeout has passed"), AirflowException, "no cancel endpoint"),
            (make_event("error", "t1", "HTTP 401 invalid token"), LiangxinTaskWaitException, "invalid token"),
        ],
    )
    def test_execute_complete_failure_branches(self, event, exc, message):
        with pytest.raises(exc, match=message):
            operator(deferrable=True).execute_complete(make_context(), event)


class TestRecordingTheTaskId:
    """Right after createTask the taskId is written through the Execution API; when that write times out (an
    overloaded api-server), the paid task must still be waited for, not failed (docs/faults.md)."""

    def test_a_failed_state_store_write_still_defers_and_pushes_the_task_id(self, sim_conn, capfd):
        store, ti = FlakyStateStore(failures=1), FakeTI()
        before = creates(sim_conn)
        op = operator(deferrable=True, input={"prompt": "write fails [sim:never]"})
        with pytest.raises(TaskDeferred) as info:
            op.execute(make_context(store, ti))
        assert creates(sim_conn) == before + 1
        task_id = info.value.trigger.serialize()[1]["liangxin_task_id"]
        assert STATE_KEY not in store.data
        # The XCom still names the task: the extra link, a downstream sensor (fire-and-forget), on_kill's note.
        assert ti.pushed_value(XCOM_TASK_ID) == task_id
        assert ti.pushed_value(XCOM_RESULT_URL)
        logged = capfd.readouterr().out
        assert f"Could not record LiangXin task {task_id} for a retry to resume (AirflowRuntimeError" in logged
        assert "ReadTimeout" in logged

    def test_fire_and_forget_still_returns_and_pushes_the_task_id(self, sim_conn):
        ti = FakeTI()
        task_id = operator(wait_for_completion=False).execute(make_context(FlakyStateStore(failures=1), ti))
        assert ti.pushed_value(XCOM_TASK_ID) == task_id

    def test_a_failed_xcom_push_still_waits_for_the_task(self, sim_conn, capfd):
        instant(sim_conn)

        class BrokenXCom(FakeTI):
            def xcom_push(self, key: str, value: Any) -> None:
                if key == XCOM_TASK_ID:
                    raise execution_api_timeout()
                super().xcom_push(key, value)

        store = FakeStateStore()
        result = operator().execute(make_context(store, BrokenXCom()))
        assert result["state"] == "success"
        assert store.data[STATE_KEY] == result["task_id"]
        assert f"Could not push LiangXin task {result['task_id']} to XCom" in capfd.readouterr().out


class TestRetryResumes:
    def test_retry_while_running_waits_for_the_same_task(self, sim_conn):
        store = FakeStateStore()
        op = operator(deferrable=True, input={"prompt": "slow one [sim:never]"})
        with pytest.raises(TaskDeferred) as first:
            op.execute(make_context(store))
        created = creates(sim_conn)
        task_id = store.data[STATE_KEY]
        # attempt 2 (XCom cleared by Airflow, state store kept)
        ti = FakeTI()
        with pytest.raises(TaskDeferred) as second:
            op.execute(make_context(store, ti))
        assert creates(sim_conn) == created
        assert second.value.trigger.serialize()[1]["liangxin_task_id"] == task_id
        assert first.value.trigger.serialize()[1]["liangxin_task_id"] == task_id
        assert ti.pushed_value(XCOM_TASK_ID) == task_id

    def test_retry_after_success_returns_the_result_without_creating(self, sim_conn):
        instant(sim_conn)
        store = FakeStateStore()
        first = operator().execute(make_context(store))
        created = creates(sim_conn)
        again = operator().execute(make_context(store))
        assert creates(sim_conn) == created
        assert again["task_id"] == first["task_id"]

    def test_retry_after_failure_creates_a_new_task(self, sim_conn):
        instant(sim_conn)
        store = FakeStateStore()
        store.set(
            STATE_KEY, operator(wait_for_completion=False, input={"prompt": "x [sim:fail]"}).execute(make_context())
        )
        created = creates(sim_conn)
        result = operator().execute(make_context(store))
        assert creates(sim_conn) == created + 1
        assert store.data[STATE_KEY] == result["task_id"]

    def test_stored_task_for_another_request_is_not_reused(self, sim_conn):
        instant(sim_conn)
        store = FakeStateStore()
        first = operator().execute(make_context(store))
        created = creates(sim_conn)
        edited = operator(model="z-image", input={"prompt": "a dog"}).execute(make_context(store))
        assert creates(sim_conn) == created + 1
        assert edited["task_id"] != first["task_id"]
        assert edited["param"] == {"model": "z-image", "input": {"prompt": "a dog"}}

    def test_retry_with_unknown_stored_task_creates_a_new_one(self, sim_conn):
        store = FakeStateStore()
        store.set(STATE_KEY, "task_seedream-v4-5_0000000000000")
        instant(sim_conn)
        result = operator().execute(make_context(store))
        assert result["task_id"] != "task_seedream-v4-5_0000000000000"

    def test_without_state_store_a_new_task_is_created(self, sim_conn):
        instant(sim_conn)
        first = operator().execute(make_context())
        second = operator().execute(make_context())
        assert first["task_id"] != second["task_id"]


def test_on_kill_logs_the_running_task_and_never_raises(sim_conn, capfd):
    op = operator(wait_for_completion=False)
    op.on_kill()  # nothing created yet
    assert "no cancel endpoint" not in "".join(capfd.readouterr())
    task_id = op.execute(make_context())
    op.on_kill()
    assert f"no cancel endpoint: task {task_id} may still finish" in "".join(capfd.readouterr())


class TestOutputPath:
    def test_results_are_stored_with_sidecar_and_linked(self, sim_conn, tmp_path):
        from PIL import Image

        ti = FakeTI()
        result = operator(output_path=str(tmp_path / "out")).execute(make_context(FakeStateStore(), ti))
        (stored,) = result["stored"]
        path = tmp_path / "out" / f"{result['task_id']}_0.png"
        assert stored["path"] == f"file://{path}"
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
        assert width / height == pytest.approx(16 / 9, rel=0.02)
        sidecar = json.loads((tmp_path / "out" / f"{result['task_id']}_0.json").read_text())
        assert sidecar["task_id"] == result["task_id"]
        assert sidecar["prompt"] == PROMPT
        assert sidecar["source_url"] == result["result_urls"][0]
        assert sidecar["bytes"] == path.stat().st_size
        assert ti.pushed_value(XCOM_RESULT_URL) == stored["path"]

    def test_results_to_an_in_memory_filesystem(self, sim_conn):
        import fsspec

        result = operator(output_path="memory://liangxin-op-test/run1").execute(make_context())
        fs = fsspec.filesystem("memory")
        data = fs.cat(f"/liangxin-op-test/run1/{result['task_id']}_0.png")
        assert data.startswith(b"\x89PNG")
        assert result["stored"][0]["bytes"] == len(data)

    def test_unwritable_output_path_fails_before_any_request(self, sim_conn, tmp_path):
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        before = api_calls(sim_conn)
        with pytest.raises(AirflowFailException, match="a-file"):
            operator(output_path=str(blocker / "out")).execute(make_context())
        assert api_calls(sim_conn) == before

    def test_output_asset_is_declared_and_its_event_lists_the_files(self, sim_conn, tmp_path):
        from airflow.sdk.execution_time.context import OutletEventAccessors

        op = operator(output_path=str(tmp_path / "assets"), output_asset=True)
        (asset,) = op.outlets
        assert asset.uri.startswith("file://")
        assert asset.uri.rstrip("/").endswith(str(tmp_path / "assets"))
        context = make_context()
        context["outlet_events"] = OutletEventAccessors()  # what the task runner passes (keyed by asset URI)
        result = op.execute(context)
        assert context["outlet_events"][asset].extra == {
            "liangxin_task_id": result["task_id"],
            "model": "seedream-v4-5",
            "files": [result["stored"][0]["path"]],
        }

    def test_output_asset_needs_a_literal_path(self):
        with pytest.raises(ValueError, match="literal output_path"):
            operator(output_path="/data/{{ ds }}", output_asset=True)


# --------------------------------------------------------------------------------------------- hardening


class TestMappedValidation:
    """Pins the SDK behaviour behind ``_BaseOperator__from_mapped`` (no public flag exists): a literal bad input
    fails the DAG import, but the same input reached through ``unmap()`` (the worker, at run time) must not raise
    in ``__init__`` (a ValueError there is retried); execute() then fails it once."""

    def test_unmapped_operator_defers_validation_to_execute(self, sim_conn):
        from airflow.sdk import DAG

        bad = {"prompt": "x", "aspect_ratio": "17:9"}
        with pytest.raises(ValueError, match="aspect_ratio"):
            operator(input=bad)
        with DAG("liangxin_unmap_pin", schedule=None):
            mapped = LiangxinCreateTaskOperator.partial(task_id="m", model="seedream-v4-5", poll_interval=0.05).expand(
                input=[bad]
            )
        op = mapped.unmap({"input": bad})
        assert isinstance(op, LiangxinCreateTaskOperator)
        assert getattr(op, "_BaseOperator__from_mapped", None) is True
        before = api_calls(sim_conn)
        with pytest.raises(AirflowFailException, match="aspect_ratio"):
            op.execute(make_context())
        assert api_calls(sim_conn) == before


class TestModelNormalised:
    def test_model_with_whitespace_is_validated_as_the_stripped_name(self):
        with pytest.raises(ValueError, match=r"input\.seed"):
            operator(model=" seedream-v4-5\n", input={"prompt": "x", "seed": -1})
        assert operator(model="seedream-v4-5\n").model == "seedream-v4-5"

    def test_rendered_model_with_whitespace_resumes_instead_of_paying_again(self, sim_conn):
        store = FakeStateStore()

        def attempt() -> TaskDeferred:
            op = operator(model="{{ params.model }}", deferrable=True, input={"prompt": "slow [sim:never]"})
            op.model = "seedream-v4-5\n"  # what a template or Variable rendered
            with pytest.raises(TaskDeferred) as info:
                op.execute(make_context(store))
            return info.value

        before = creates(sim_conn)
        first = attempt()
        second = attempt()  # the Airflow retry
        assert creates(sim_conn) == before + 1
        assert first.trigger.serialize()[1]["liangxin_task_id"] == second.trigger.serialize()[1]["liangxin_task_id"]


class TestBadValuesFailOnce:
    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"poll_interval": float("nan")}, "poll_interval"),
            ({"poll_interval": float("inf")}, "poll_interval"),
            ({"poll_interval": True}, "poll_interval"),
            ({"timeout": float("inf")}, "timeout"),
            ({"timeout": float("nan")}, "timeout"),
            ({"request_timeout": float("inf")}, "request_timeout"),
            ({"download_timeout": float("nan")}, "download_timeout"),
            ({"max_error_duration": float("inf")}, "max_error_duration"),
            ({"max_error_duration": -1}, "max_error_duration"),
            ({"max_download_bytes": True}, "max_download_bytes"),
            ({"retry": {"backoff_max": float("inf")}}, "backoff_max"),
            ({"retry": {"max_wait_total": float("nan")}}, "max_wait_total"),
            ({"retry": {"max_attempts": True}}, "max_attempts"),
            ({"allow_private_result_hosts": "yes"}, "allow_private_result_hosts"),
        ],
    )
    def test_non_finite_or_wrong_typed_numbers_fail_at_parse_time(self, kwargs, name):
        with pytest.raises(ValueError, match=name):
            operator(**kwargs)

    def test_model_none_fails_at_parse_time(self):
        with pytest.raises(ValueError, match="model must be a non-empty string"):
            operator(model=None)

    @pytest.mark.parametrize(
        ("model", "input", "field"),
        [
            ("seedream-v4-5", {"prompt": "x", "seed": __import__("datetime").datetime(2026, 1, 1)}, "input.seed"),
            ("seedream-v4-5", {"prompt": "x", "image_urls": {"https://a/b.png"}}, "input.image_urls"),
            ("seedream-v4-5", {"prompt": "lone \ud800 surrogate"}, "input.prompt"),
            ("seedream-v4-5", {"prompt": "x", "seed": float("nan")}, "input.seed"),
            (None, {"prompt": "x"}, "model"),
            ("   ", {"prompt": "x"}, "model"),
        ],
    )
    def test_rendered_values_of_the_wrong_type_fail_once_naming_the_field(self, sim_conn, model, input, field):
        op = operator(model="{{ params.model }}", input={"prompt": "{{ params.prompt }}"})
        op.model, op.input = model, input  # what rendering (e.g. render_template_as_native_obj) produced
        before = api_calls(sim_conn)
        with pytest.raises(AirflowFailException, match=field):
            op.execute(make_context(FakeStateStore()))
        assert api_calls(sim_conn) == before


class TestDeadlineInsideARequest:
    def test_sync_wait_never_outlasts_its_timeout_inside_a_slow_request(self, sim_conn):
        from airflow_provider_liangxin.hooks.liangxin import LiangxinHook

        input = {"prompt": "slow answers [sim:never]", "aspect_ratio": "16:9"}
        hook = LiangxinHook()
        try:
            task_id = hook.create_task("seedream-v4-5", input)
        finally:
            hook.close()
        store = FakeStateStore()
        store.set(STATE_KEY, task_id)  # a retry: resume, then poll
        sim_conn.set_faults({"slow_rate": 1.0, "slow_seconds": 4})
        op = operator(input=input, timeout=1, request_timeout=30, retry={"max_attempts": 1})
        started = time.monotonic()
        with pytest.raises(AirflowException, match="Gave up waiting"):
            op.execute(make_context(store))
        assert time.monotonic() - started < 2.5  # not the 4 s the server takes to answer


class TestErrorBudgetSync:
    def test_outage_shorter_than_the_budget_is_ridden_out(self, scripted_conn):
        from tests.support.scripted_server import Reply, ok, record

        task_id = "task_seedream-v4-5_1"
        store = FakeStateStore()
        store.set(STATE_KEY, task_id)
        outage = [Reply(500, {"code": 500, "msg": "upstream down", "data": None}, delay=0.05) for _ in range(8)]
        scripted_conn.script(ok(record(task_id)), *outage, ok(record(task_id, "success")))
        op = operator(input={"prompt": "a cat"}, max_error_duration=5, retry={"max_attempts": 1}, poll_interval=0.01)
        assert op.execute(make_context(store))["state"] == "success"

    def test_outage_longer_than_the_budget_fails_the_wait(self, scripted_conn):
        from airflow_provider_liangxin.events import LiangxinTaskWaitException
        from tests.support.scripted_server import Reply, ok, record

        task_id = "task_seedream-v4-5_1"
        store = FakeStateStore()
        store.set(STATE_KEY, task_id)
        outage = [Reply(500, {"code": 500, "msg": "upstream down", "data": None}, delay=0.1) for _ in range(30)]
        scripted_conn.script(ok(record(task_id)), *outage)
        op = operator(input={"prompt": "a cat"}, max_error_duration=0.5, retry={"max_attempts": 1}, poll_interval=0.01)
        started = time.monotonic()
        with pytest.raises(LiangxinTaskWaitException, match=r"max_error_duration=0\.5 s.*upstream down"):
            op.execute(make_context(store))
        assert time.monotonic() - started < 2


TI_KEY = collections.namedtuple("TI_KEY", "dag_id task_id run_id try_number map_index")(
    "d", "gen", "manual__2026-11-29T09:00:00+00:00", 1, 3
)


class TestResultLink:
    def test_no_link_and_no_xcom_read_before_a_task_exists(self, monkeypatch):
        from airflow.providers.common.compat.sdk import XCom

        from airflow_provider_liangxin.operators.liangxin import LiangxinResultLink

        def no_xcom_reads(**kwargs):
            raise AssertionError(f"XCom read: {kwargs}")  # would log "XCom not found" for a task that made none

        monkeypatch.setattr(XCom, "get_value", no_xcom_reads)
        assert LiangxinResultLink().get_link(operator(), ti_key=None) == ""

    def test_link_opens_the_result_view_of_the_task_instance(self, sim_conn, monkeypatch):
        """A same-origin path the UI draws (below [api] base_url's path), naming the task instance; the XCom keeps
        the task's own URL."""
        from airflow_provider_liangxin.operators.liangxin import LiangxinResultLink

        instant(sim_conn)
        op = operator()
        ti = FakeTI()
        result = op.execute(make_context(FakeStateStore(), ti=ti))
        assert ti.pushed_value(XCOM_RESULT_URL) == result["result_urls"][0]
        assert LiangxinResultLink().get_link(op, ti_key=TI_KEY) == (
            "/liangxin/v1/results?dag_id=d&run_id=manual__2026-11-29T09%3A00%3A00%2B00%3A00&task_id=gen&map_index=3"
        )
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/team-a/")
        assert LiangxinResultLink().get_link(op, ti_key=TI_KEY).startswith("/team-a/liangxin/v1/results?dag_id=d&")

    @pytest.mark.parametrize(
        ("urls", "expected"),
        [
            (["javascript:alert(document.cookie)"], None),
            (["data:text/html,<script>alert(1)</script>", "https://cdn.example/a.png"], "https://cdn.example/a.png"),
            (["JAVASCRIPT://%0aalert(1)"], None),
        ],
    )
    def test_non_web_result_urls_never_become_the_link(self, sim_conn, urls, expected):
        from airflow_provider_liangxin._api import TaskRecord, TaskState
        from airflow_provider_liangxin.operators.liangxin import LiangxinResultLink

        op = operator()
        ti = FakeTI()
        record = TaskRecord(task_id="task_seedream-v4-5_9", model="seedream-v4-5", state=TaskState.SUCCESS)
        record = TaskRecord(**{**record.__dict__, "result_urls": urls})
        op._complete(make_context(ti=ti), record, op.hook)
        assert ti.pushed_value(XCOM_RESULT_URL) == expected
        assert LiangxinResultLink().get_link(op, ti_key=TI_KEY).startswith("/liangxin/v1/results?")

    def test_deferred_failure_links_the_view_and_pushes_the_reasons(self, sim_conn):
        from airflow_provider_liangxin.operators.liangxin import XCOM_FAILURE, LiangxinResultLink

        op = operator(deferrable=True)
        ti = FakeTI()
        with pytest.raises(LiangxinTaskFailedException):
            op.execute_complete(make_context(ti=ti), make_event("fail", "task_seedream-v4-5_7", "x", None))
        expected = f"{sim_conn.base_url}/api/v1/jobs/recordInfo?taskId=task_seedream-v4-5_7"
        assert ti.pushed_value(XCOM_RESULT_URL) == expected
        assert LiangxinResultLink().get_link(op, ti_key=TI_KEY).startswith("/liangxin/v1/results?dag_id=d&")
        failure = ti.pushed_value(XCOM_FAILURE)
        assert failure["task_id"] == "task_seedream-v4-5_7"
        assert set(failure) == {"task_id", "model", "prompt", "fail_code", "fail_msg"}


class TestKeyMaskedOnResume:
    @pytest.mark.parametrize("status", ["error", "fail"])
    def test_the_key_is_masked_and_scrubbed_before_the_event_is_raised(self, sim_conn, monkeypatch, status):
        import airflow_provider_liangxin.hooks.liangxin as hook_module

        masked: list[str] = []
        monkeypatch.setattr(hook_module, "mask_secret", masked.append)
        echoed = f"invalid token (received Authorization: Bearer {sim_conn.api_key})"
        event = make_event(status, "t1", echoed)
        event["record"] = {"fail_code": "401", "fail_msg": echoed} if status == "fail" else None
        with pytest.raises((LiangxinTaskWaitException, LiangxinTaskFailedException)) as info:
            operator(deferrable=True).execute_complete(make_context(), event)
        assert sim_conn.api_key in masked, f"raised {info.value!r} before registering the key"
        assert sim_conn.api_key not in str(info.value)
        assert "Bearer ***" in str(info.value)

    def test_sensor_registers_the_key_too(self, sim_conn, monkeypatch):
        import airflow_provider_liangxin.hooks.liangxin as hook_module
        from airflow_provider_liangxin.sensors.liangxin import LiangxinTaskSensor

        masked: list[str] = []
        monkeypatch.setattr(hook_module, "mask_secret", masked.append)
        sensor = LiangxinTaskSensor(task_id="s", liangxin_task_id="t1", deferrable=True)
        with pytest.raises(LiangxinTaskWaitException, match=r"Bearer \*\*\*") as info:
            sensor.execute_complete(make_context(), make_event("error", "t1", f"echo: Bearer {sim_conn.api_key}"))
        assert sim_conn.api_key in masked
        assert sim_conn.api_key not in str(info.value)


class TestPrivateResultHosts:
    """A result URL on another private host (here: a second loopback server, not the API's) is refused unless the
    operator (or the connection) opts in; the API's own host stays allowed (the simulator serves its images)."""

    @staticmethod
    def _record(url: str):
        from airflow_provider_liangxin._api import TaskRecord, TaskState

        return TaskRecord(
            task_id="task_seedream-v4-5_42", model="seedream-v4-5", state=TaskState.SUCCESS, result_urls=[url]
        )

    @staticmethod
    def _png() -> bytes:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
        return buffer.getvalue()

    def test_refused_by_default(self, sim_conn, scripted_server, tmp_path):
        from airflow_provider_liangxin.exceptions import ResultDownloadError
        from tests.support.scripted_server import Reply

        scripted_server.script(Reply(200, self._png(), headers={"Content-Type": "image/png"}))
        op = operator(output_path=str(tmp_path / "out"))
        with pytest.raises(ResultDownloadError):
            op._complete(make_context(), self._record(f"{scripted_server.base_url}/a.png"), op.hook)
        assert scripted_server.requests == []

    def test_allowed_with_the_operator_argument(self, sim_conn, scripted_server, tmp_path):
        from tests.support.scripted_server import Reply

        scripted_server.script(Reply(200, self._png(), headers={"Content-Type": "image/png"}))
        op = operator(output_path=str(tmp_path / "out"), allow_private_result_hosts=True)
        result = op._complete(make_context(), self._record(f"{scripted_server.base_url}/a.png"), op.hook)
        assert result["stored"][0]["bytes"] == len(self._png())

    def test_none_takes_the_connection_extra(self, simulator, scripted_server, tmp_path, monkeypatch):
        from tests.conftest import liangxin_conn_json
        from tests.support.scripted_server import Reply

        monkeypatch.setenv(
            "AIRFLOW_CONN_LIANGXIN_DEFAULT",
            liangxin_conn_json(simulator.base_url, simulator.api_key, allow_private_result_hosts=True),
        )
        scripted_server.script(Reply(200, self._png(), headers={"Content-Type": "image/png"}))
        op = operator(output_path=str(tmp_path / "out"))
        result = op._complete(make_context(), self._record(f"{scripted_server.base_url}/a.png"), op.hook)
        assert len(result["stored"]) == 1


class TestCallbackAuto:
    """callback_url="auto": a capability URL per try for LiangXin, only its hash in the trigger, slow fallback
    polling, and one confirming recordInfo when a callback resumes the task."""

    BASE = "http://127.0.0.1:9"  # nothing listens: the simulator's deliveries fail harmlessly

    @pytest.fixture
    def callbacks_on(self, sim_conn, monkeypatch):
        monkeypatch.setenv("AIRFLOW__LIANGXIN__CALLBACK_BASE_URL", self.BASE)
        sim_conn.set_faults({"durations": [1, 1, 30]})  # still running when the operator defers
        return sim_conn

    def sent_callback_url(self, task_id: str) -> str:
        from airflow_provider_liangxin.hooks.liangxin import LiangxinHook

        hook = LiangxinHook()
        try:
            return hook.get_task(task_id).param["callBackUrl"]
        finally:
            hook.close()

    def defer(self, op: LiangxinCreateTaskOperator, ti: FakeTI | None = None):
        with pytest.raises(TaskDeferred) as info:
            op.execute(make_context(FakeStateStore(), ti or FakeTI()))
        return info.value, info.value.trigger.serialize()[1]

    def test_auto_defers_right_after_create_task_without_a_worker_poll(self, callbacks_on):
        """The trigger polls at once anyway: the worker's own first status check would be a second recordInfo."""
        before = api_calls(callbacks_on)
        self.defer(operator(deferrable=True, callback_url="auto"))
        assert api_calls(callbacks_on) - before == 1  # createTask only
        before = api_calls(callbacks_on)
        self.defer(operator(deferrable=True))  # polling mode keeps its first check (a quick task never defers)
        assert api_calls(callbacks_on) - before == 2

    def test_auto_sends_a_capability_url_and_stores_only_its_hash(self, callbacks_on, capfd):
        import hashlib

        ti = FakeTI()
        op = operator(deferrable=True, callback_url="auto", poll_interval=2)
        deferred, kwargs = self.defer(op, ti)
        logged = capfd.readouterr().out
        task_id = kwargs["liangxin_task_id"]
        url = self.sent_callback_url(task_id)
        prefix = f"{self.BASE}/liangxin/v1/callback/{ti.id}/"
        assert url.startswith(prefix)
        token = url[len(prefix) :]
        assert len(token) >= 43
        assert kwargs["callback_token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
        assert kwargs["callback_wakeups"] == 0
        assert kwargs["poll_interval"] == 60.0  # the fallback: [liangxin] callback_fallback_poll_interval
        assert deferred.timeout > timedelta(seconds=3600 + 120)
        assert op.callback_url == "auto"  # the rendered field (stored by Airflow) never holds the token
        assert token not in logged
        assert token not in json.dumps(ti.pushed, default=str)
        assert token not in json.dumps(kwargs)
        assert f"/liangxin/v1/callback/{ti.id}/***" in logged

    def test_each_try_gets_its_own_token(self, callbacks_on):
        _, first = self.defer(operator(deferrable=True, callback_url="auto"))
        _, second = self.defer(operator(deferrable=True, callback_url="auto"))
        assert first["callback_token_sha256"] != second["callback_token_sha256"]

    @pytest.mark.parametrize(("poll", "fallback", "expected"), [(2, 30, 30.0), (90, 30, 90.0)])
    def test_fallback_interval_never_polls_faster_than_poll_interval(self, callbacks_on, poll, fallback, expected):
        op = operator(
            deferrable=True, callback_url="auto", poll_interval=poll, callback_fallback_poll_interval=fallback
        )
        _, kwargs = self.defer(op)
        assert kwargs["poll_interval"] == expected

    def test_without_a_base_url_it_polls_and_says_so(self, sim_conn, capfd):
        sim_conn.set_faults({"durations": [1, 1, 30]})
        _, kwargs = self.defer(operator(deferrable=True, callback_url="auto", poll_interval=2))
        assert kwargs["callback_token_sha256"] is None
        assert kwargs["poll_interval"] == 2
        assert "callback_base_url is not set" in capfd.readouterr().out
        assert "callBackUrl" not in self.sent_callback_param(kwargs["liangxin_task_id"])

    def sent_callback_param(self, task_id: str) -> dict:
        from airflow_provider_liangxin.hooks.liangxin import LiangxinHook

        hook = LiangxinHook()
        try:
            return hook.get_task(task_id).param
        finally:
            hook.close()

    def test_not_deferrable_polls_without_callback(self, callbacks_on, capfd):
        instant(callbacks_on)
        result = operator(callback_url="auto").execute(make_context(FakeStateStore()))
        assert result["state"] == "success"
        assert "callBackUrl" not in result["param"]
        assert "used by deferred waits only" in capfd.readouterr().out

    def test_bad_base_url_fails_once(self, sim_conn, monkeypatch):
        monkeypatch.setenv("AIRFLOW__LIANGXIN__CALLBACK_BASE_URL", "http://airflow.example.com")
        with pytest.raises(AirflowFailException, match="https://"):
            operator(deferrable=True, callback_url="auto").execute(make_context(FakeStateStore()))

    def callback_event(self, task_id: str, *, wakeups: int = 1, deadline: float | None = None) -> dict:
        return {
            "status": "callback",
            "task_id": task_id,
            "message": "LiangXin called back",
            "record": None,
            "callback": {
                "token_sha256": "a" * 64,
                "wakeups": wakeups,
                "deadline": deadline if deadline is not None else time.time() + 600,
                "execution_deadline": None,
            },
        }

    def test_callback_for_a_finished_task_completes_with_one_status_check(self, sim_conn):
        instant(sim_conn)
        task_id = create_task_id(sim_conn)
        before = api_calls(sim_conn)
        ti = FakeTI()
        result = operator(deferrable=True, callback_url="auto").execute_complete(
            make_context(ti=ti), self.callback_event(task_id)
        )
        assert result["task_id"] == task_id
        assert result["state"] == "success"
        assert api_calls(sim_conn) == before + 1  # one recordInfo: the callback itself is never trusted
        assert ti.pushed_value(XCOM_RESULT_URL) == result["result_urls"][0]

    def test_callback_for_a_failed_task_fails_it(self, sim_conn):
        instant(sim_conn)
        task_id = create_task_id(sim_conn, "x [sim:fail]")
        with pytest.raises(LiangxinTaskFailedException):
            operator(deferrable=True).execute_complete(make_context(), self.callback_event(task_id))

    def test_callback_for_an_unfinished_task_defers_again_with_the_same_hash(self, callbacks_on):
        task_id = create_task_id(callbacks_on)
        deadline = time.time() + 500
        op = operator(deferrable=True, callback_url="auto", poll_interval=2)
        with pytest.raises(TaskDeferred) as info:
            op.execute_complete(make_context(), self.callback_event(task_id, wakeups=1, deadline=deadline))
        kwargs = info.value.trigger.serialize()[1]
        assert kwargs["liangxin_task_id"] == task_id
        assert kwargs["callback_token_sha256"] == "a" * 64
        assert kwargs["callback_wakeups"] == 1
        assert kwargs["poll_interval"] == 60.0
        assert kwargs["deadline"] == deadline  # the wait's deadline is not reset by a wake-up

    def test_wakeups_are_capped_then_polling_only(self, callbacks_on, capfd):
        task_id = create_task_id(callbacks_on)
        op = operator(deferrable=True, callback_url="auto", poll_interval=2)
        with pytest.raises(TaskDeferred) as info:
            op.execute_complete(make_context(), self.callback_event(task_id, wakeups=3))
        kwargs = info.value.trigger.serialize()[1]
        assert kwargs["callback_token_sha256"] is None
        assert kwargs["poll_interval"] == 2
        assert "further callbacks are ignored" in capfd.readouterr().out

    def test_callback_past_the_deadline_times_out(self, callbacks_on):
        task_id = create_task_id(callbacks_on)
        with pytest.raises(AirflowException, match="wait timeout has passed"):
            operator(deferrable=True).execute_complete(
                make_context(), self.callback_event(task_id, deadline=time.time() - 1)
            )

    def test_callback_event_without_task_id_is_never_success(self):
        with pytest.raises(AirflowException, match="without a task id"):
            operator(deferrable=True).execute_complete(make_context(), {"status": "callback", "task_id": None})

    def test_the_token_is_kept_out_of_the_result(self, sim_conn):
        from airflow_provider_liangxin.hooks.liangxin import LiangxinHook

        instant(sim_conn)
        hook = LiangxinHook()
        try:
            task_id = hook.create_task(
                "seedream-v4-5", {"prompt": PROMPT}, "http://127.0.0.1:9/liangxin/v1/callback/ti-1/SECRET-TOKEN"
            )
        finally:
            hook.close()
        result = operator(deferrable=True).execute_complete(make_context(), self.callback_event(task_id))
        assert result["param"]["callBackUrl"] == "http://127.0.0.1:9/liangxin/v1/callback/ti-1/***"


def create_task_id(sim, prompt: str = PROMPT) -> str:
    from airflow_provider_liangxin.hooks.liangxin import LiangxinHook

    hook = LiangxinHook()
    try:
        return hook.create_task("seedream-v4-5", {"prompt": prompt})
    finally:
        hook.close()
