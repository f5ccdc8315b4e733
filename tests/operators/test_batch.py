"""LiangxinBatchCreateTaskOperator against the running simulator (real HTTP on loopback): validation before any
request, pacing (max_in_flight, 429), the deferred loop with one trigger, resume across tries, partial failure."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_liangxin.batch import CHUNK_SIZE, STATE_PREFIX
from airflow_provider_liangxin.operators.liangxin import XCOM_BATCH_RESULTS, LiangxinBatchCreateTaskOperator
from airflow_provider_liangxin.triggers.liangxin import LiangxinBatchTrigger
from tests.conftest import api_calls
from tests.support.airflow_context import FakeStateStore, FakeTI, FlakyStateStore, make_context

pytestmark = pytest.mark.integration


def batch(**kwargs: Any) -> LiangxinBatchCreateTaskOperator:
    defaults: dict[str, Any] = {
        "task_id": "batch",
        "model": "seedream-v4-5",
        "inputs": [{"prompt": f"batch item {i}"} for i in range(4)],
        "poll_interval": 0.05,
        "deferrable": False,
    }
    return LiangxinBatchCreateTaskOperator(**{**defaults, **kwargs})


def creates(sim) -> dict[str, int]:
    return sim.stats()["requests"].get("POST /api/v1/jobs/createTask", {})


def ti(try_number: int = 1) -> FakeTI:
    fake = FakeTI()
    fake.try_number = try_number  # type: ignore[attr-defined]
    return fake


def run_deferred(op: LiangxinBatchCreateTaskOperator, context: dict[str, Any], *, max_steps: int = 50) -> Any:
    """What Airflow does with a deferrable batch: execute, run the trigger (inline), resume, until it returns."""
    steps = []
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        current = deferred
    for _ in range(max_steps):
        _classpath, kwargs = current.trigger.serialize()
        assert json.loads(json.dumps(kwargs)) == kwargs  # JSON-native
        steps.append(kwargs)
        trigger = LiangxinBatchTrigger(**kwargs)
        event = asyncio.run(_first_event(trigger))
        try:
            result = op.execute_complete(context, event, **(current.kwargs or {}))
        except TaskDeferred as deferred:
            current = deferred
            continue
        context["_deferrals"] = steps
        return result
    raise AssertionError("too many deferrals")


async def _first_event(trigger: LiangxinBatchTrigger) -> dict[str, Any]:
    trigger.settle_seconds = 0  # no scheduler to race with here (the hold has tests of its own)
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def max_overlap(sim, task_ids: list[str]) -> int:
    """Most LiangXin tasks alive at one moment, from the simulator's own create/complete times."""
    spans = []
    for task_id in task_ids:
        record = sim.record(task_id) if hasattr(sim, "record") else None
        spans.append((record["createTime"], record["completeTime"]))
    points = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    alive = peak = 0
    for _, step in points:
        alive += step
        peak = max(peak, alive)
    return peak


@pytest.fixture
def sim(sim_conn):
    """The simulator with a record look-up (param decoded), as the e2e harness has."""
    import httpx

    def record(task_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{sim_conn.base_url}/api/v1/jobs/recordInfo",
            params={"taskId": task_id},
            headers={"Authorization": f"Bearer {sim_conn.api_key}"},
        )
        data = response.json()["data"]
        data["param"] = json.loads(data["param"])
        return data

    sim_conn.record = record
    return sim_conn


class TestValidation:
    def test_literal_items_fail_at_parse_time_listing_every_problem(self):
        with pytest.raises(ValueError, match="batch") as info:
            batch(
                inputs=[
                    {"prompt": "fine"},
                    {"prompt": "", "aspect_ration": "16:9"},
                    "not a dict",
                    {"model": "z-image", "input": {"prompt": "ok", "seed": -1}},
                ]
            )
        text = str(info.value)
        for needle in ("item 1", "input.prompt", "aspect_ration", "item 2", "got str", "item 3", "input.seed"):
            assert needle in text, text
        assert "item 0" not in text

    def test_templated_items_are_validated_at_execute_before_any_request(self, sim):
        op = batch(inputs="{{ params.items }}")
        op.inputs = [{"prompt": "ok"}, {"prompt": "x", "aspect_ratio": "17:9"}, {"model": "", "input": {}}]
        before = api_calls(sim)
        with pytest.raises(AirflowFailException) as info:
            op.execute(make_context(FakeStateStore(), ti()))
        assert "item 1" in str(info.value)
        assert "17:9" in str(info.value)
        assert "item 2" in str(info.value)
        assert api_calls(sim) == before

    def test_items_without_any_model_are_refused(self):
        with pytest.raises(ValueError, match="item 0: no model"):
            batch(model=None, inputs=[{"prompt": "x"}])

    @pytest.mark.parametrize("inputs", ["a string", {"prompt": "a dict"}, 42])
    def test_inputs_must_be_a_list(self, inputs):
        op = batch(inputs="{{ x }}")
        op.inputs = inputs
        with pytest.raises(AirflowFailException, match="inputs must be a list"):
            op.execute(make_context())

    @pytest.mark.parametrize(
        ("kwargs", "name"), [({"max_in_flight": 0}, "max_in_flight"), ({"max_failed": -1}, "max_failed")]
    )
    def test_bad_arguments(self, kwargs, name):
        with pytest.raises(ValueError, match=name):
            batch(**kwargs)

    def test_empty_inputs_succeed_with_nothing(self, sim):
        before = api_calls(sim)
        assert batch(inputs=[]).execute(make_context(FakeStateStore())) == []
        assert api_calls(sim) == before


class TestSyncBatch:
    def test_results_in_input_order_with_per_item_models_and_pacing(self, sim):
        sim.set_faults({"durations": [0.05, 0.05, 0.3]})
        inputs = [
            {"prompt": "first"},
            {"model": "z-image", "input": {"prompt": "second"}},
            {"prompt": "third"},
            {"input": {"prompt": "fourth"}},
            {"prompt": "fifth"},
        ]
        before = sum(creates(sim).values())
        results = batch(inputs=inputs, max_in_flight=2).execute(make_context(FakeStateStore(), ti()))
        assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
        assert [r["model"] for r in results] == [
            "seedream-v4-5",
            "z-image",
            "seedream-v4-5",
            "seedream-v4-5",
            "seedream-v4-5",
        ]
        assert {r["state"] for r in results} == {"success"}
        assert all(r["result_urls"] and r["fail_code"] == "" for r in results)
        assert sum(creates(sim).values()) == before + 5
        prompts = [sim.record(r["task_id"])["param"]["input"]["prompt"] for r in results]
        assert prompts == ["first", "second", "third", "fourth", "fifth"]
        assert max_overlap(sim, [r["task_id"] for r in results]) <= 2

    def test_429_slows_creation_down_and_never_fails_or_duplicates(self, sim):
        sim.set_faults({"rate_limit_rate": 0.5, "retry_after": 0, "durations": [0, 0, 0.1], "seed": 7})
        stats_before = sim.stats()
        before_tasks = stats_before["task_count"]
        n = 12
        results = batch(inputs=[{"prompt": f"throttled {i}"} for i in range(n)], max_in_flight=6).execute(
            make_context(FakeStateStore(), ti())
        )
        assert {r["state"] for r in results} == {"success"}
        assert all(r["creations"] == 1 for r in results)
        stats = sim.stats()
        assert stats["task_count"] - before_tasks == n  # each item paid exactly once
        throttled = stats["requests"]["POST /api/v1/jobs/createTask"].get("429", 0)
        throttled -= stats_before["requests"].get("POST /api/v1/jobs/createTask", {}).get("429", 0)
        assert throttled > 0  # the fault really fired

    def test_retry_after_is_honoured_for_the_throttled_item(self, sim):
        import time

        sim.set_faults({"rate_limit_rate": 0.5, "retry_after": 1, "durations": [0, 0, 0.05], "seed": 3})
        before = sim.stats()
        started = time.monotonic()
        results = batch(inputs=[{"prompt": f"retry-after {i}"} for i in range(6)]).execute(
            make_context(FakeStateStore(), ti())
        )
        elapsed = time.monotonic() - started
        after = sim.stats()
        throttled = after["requests"]["POST /api/v1/jobs/createTask"].get("429", 0) - before["requests"].get(
            "POST /api/v1/jobs/createTask", {}
        ).get("429", 0)
        assert throttled > 0
        assert {r["state"] for r in results} == {"success"}
        assert after["task_count"] - before["task_count"] == 6
        assert elapsed >= 1.0  # a throttled item was not sent again before its Retry-After

    def test_partial_failure_within_max_failed_succeeds_and_reports_it(self, sim):
        sim.set_faults({"durations": [0, 0, 0.1]})
        inputs = [{"prompt": "ok 1"}, {"prompt": "bad [sim:fail:422:nsfw content]"}, {"prompt": "ok 2"}]
        results = batch(inputs=inputs, max_failed=1).execute(make_context(FakeStateStore(), ti()))
        assert [r["state"] for r in results] == ["success", "fail", "success"]
        assert results[1]["fail_code"] == "422"
        assert results[1]["fail_msg"] == "nsfw content"
        assert results[1]["task_id"]
        assert results[1]["result_urls"] == []

    def test_the_extra_link_opens_the_result_view_once_the_batch_ran(self, sim):
        """No link for a batch that failed validation or had nothing to make; the result view for one that ran
        (success or failure alike)."""
        from airflow_provider_liangxin.operators.liangxin import LiangxinResultLink

        key = type("Key", (), {"dag_id": "d", "run_id": "r", "task_id": "batch", "map_index": -1})()
        assert LiangxinBatchCreateTaskOperator.operator_extra_links == (LiangxinResultLink(),)
        empty = batch(inputs=[])
        empty.execute(make_context(FakeStateStore()))
        assert LiangxinResultLink().get_link(empty, ti_key=key) == ""
        sim.set_faults({"durations": [0, 0, 0.1]})
        op = batch(inputs=[{"prompt": "bad [sim:fail]"}])
        with pytest.raises(AirflowException):
            op.execute(make_context(FakeStateStore(), ti()))
        assert LiangxinResultLink().get_link(op, ti_key=key) == (
            "/liangxin/v1/results?dag_id=d&run_id=r&task_id=batch&map_index=-1"
        )

    def test_more_failures_than_max_failed_fail_the_task_with_the_results_in_xcom(self, sim):
        sim.set_faults({"durations": [0, 0, 0.1]})
        inputs = [{"prompt": "ok"}, {"prompt": "bad [sim:fail]"}]
        fake = ti()
        with pytest.raises(AirflowException, match=r"1 of 2 items failed \(max_failed=0\)"):
            batch(inputs=inputs).execute(make_context(FakeStateStore(), fake))
        pushed = fake.pushed_value(XCOM_BATCH_RESULTS)
        assert [r["state"] for r in pushed] == ["success", "fail"]

    def test_create_refused_fails_the_item_not_the_batch(self, sim):
        sim.set_faults({"durations": [0, 0, 0.1]})
        inputs = [{"prompt": "ok"}, {"prompt": "refused [sim:422]"}]
        results = batch(inputs=inputs, max_failed=1).execute(make_context(FakeStateStore(), ti()))
        assert results[0]["state"] == "success"
        assert results[1]["state"] == "fail"
        assert results[1]["task_id"] is None
        assert results[1]["fail_code"] == "422"

    def test_results_are_stored_with_sidecars(self, sim, tmp_path):
        sim.set_faults({"durations": [0, 0, 0.1]})
        results = batch(inputs=[{"prompt": "one"}, {"prompt": "two"}], output_path=str(tmp_path)).execute(
            make_context(FakeStateStore(), ti())
        )
        for r in results:
            assert len(r["stored"]) == 1
            stored = r["stored"][0]
            assert stored["path"].startswith("file://")
            sidecar = json.loads((tmp_path / f"{r['task_id']}_0.json").read_text())
            assert sidecar["task_id"] == r["task_id"]
            assert sidecar["prompt"] in ("one", "two")
            assert (tmp_path / f"{r['task_id']}_0.png").stat().st_size == stored["bytes"]


class TestDeferredBatch:
    def test_one_trigger_per_wave_and_few_resumes(self, sim):
        sim.set_faults({"durations": [0.05, 0.05, 0.2]})
        n, max_in_flight = 10, 4
        context = make_context(FakeStateStore(), ti())
        before = sum(creates(sim).values())
        results = run_deferred(
            batch(inputs=[{"prompt": f"deferred {i}"} for i in range(n)], max_in_flight=max_in_flight, deferrable=True),
            context,
        )
        assert {r["state"] for r in results} == {"success"}
        assert sum(creates(sim).values()) == before + n
        deferrals = context["_deferrals"]
        # Each trigger watches a whole wave (never more than max_in_flight), and the worker resumes once per
        # half-wave at most, not once per item.
        assert all(len(kw["task_ids"]) <= max_in_flight for kw in deferrals)
        assert len(deferrals) <= 2 * n // max_in_flight + 1
        assert max(len(kw["task_ids"]) for kw in deferrals) == max_in_flight
        assert max_overlap(sim, [r["task_id"] for r in results]) <= max_in_flight

    def test_trigger_kwargs_hold_no_key_and_the_state_store_every_task_id(self, sim):
        store = FakeStateStore()
        inputs = [{"prompt": f"never ends {i} [sim:never]"} for i in range(CHUNK_SIZE + 3)]
        with pytest.raises(TaskDeferred) as info:
            batch(inputs=inputs, max_in_flight=100, deferrable=True).execute(make_context(store, ti()))
        _, kwargs = info.value.trigger.serialize()
        assert sim.api_key not in json.dumps(kwargs)
        stored = {
            int(i): e["t"]
            for key, chunk in store.data.items()
            if key.startswith(STATE_PREFIX)
            for i, e in chunk.items()
        }
        assert len(stored) == len(inputs) == len(kwargs["task_ids"])
        assert {str(i): t for i, t in stored.items()} == kwargs["task_ids"]
        assert sorted(store.data) == [f"{STATE_PREFIX}0", f"{STATE_PREFIX}1"]  # chunked


class TestStateWritesThatFail:
    def test_unwritten_chunks_ride_the_deferral_and_are_written_on_resume(self, sim, capfd):
        """A chunk write that times out neither fails the batch nor forgets a paid task: the chunk goes along
        the deferral and the resumed worker writes it where a retry looks."""
        sim.set_faults({"durations": [0.05, 0.05, 0.2]})
        store = FlakyStateStore(failures=100)  # every write of the first worker times out
        context = make_context(store, ti())
        inputs = [{"prompt": f"flaky store {i}"} for i in range(3)]
        op = batch(inputs=inputs, deferrable=True)
        before = sum(creates(sim).values())
        with pytest.raises(TaskDeferred) as info:
            op.execute(context)
        assert "Could not record the batch's state (AirflowRuntimeError" in capfd.readouterr().out
        carry = info.value.kwargs["carry"]
        task_ids = info.value.trigger.serialize()[1]["task_ids"]
        assert {i: e["t"] for i, e in carry["0"].items()} == task_ids
        assert not store.data
        # The resumed worker (a new process: a fresh operator), the Execution API answering again, knows every
        # task and writes the chunk.
        store.failures = 0
        event = asyncio.run(_first_event(LiangxinBatchTrigger(**info.value.trigger.serialize()[1])))
        resumed = batch(inputs=inputs, deferrable=True)
        with contextlib.suppress(TaskDeferred):
            resumed.execute_complete(context, event, **info.value.kwargs)
        stored = store.data[f"{STATE_PREFIX}0"]
        assert {i: e["t"] for i, e in stored.items()} == task_ids
        assert sum(creates(sim).values()) == before + len(inputs)

    @pytest.fixture
    def small_chunks(self, monkeypatch):
        """Chunks of 2 items, so 5 items make 3 chunks (3 task_state_store keys)."""
        monkeypatch.setattr("airflow_provider_liangxin.batch.CHUNK_SIZE", 2)

    @staticmethod
    def task_ids_in(chunks: dict[str, Any]) -> dict[str, str]:
        return {i: e["t"] for chunk in chunks.values() for i, e in chunk.items()}

    def deferred_with_every_write_failing(self, store: FlakyStateStore) -> tuple[Any, dict[str, Any], list[dict]]:
        inputs = [{"prompt": f"chunked {i} [sim:never]"} for i in range(5)]
        context = make_context(store, ti())
        store.failures = 10_000
        with pytest.raises(TaskDeferred) as info:
            batch(inputs=inputs, deferrable=True, max_in_flight=10).execute(context)
        store.failures = 0
        return info.value, context, inputs

    def test_every_unwritten_chunk_rides_the_deferral(self, sim, small_chunks):
        store = FlakyStateStore()
        deferred, _, _ = self.deferred_with_every_write_failing(store)
        carry = deferred.kwargs["carry"]
        assert sorted(carry) == ["0", "1", "2"]
        assert self.task_ids_in(carry) == deferred.trigger.serialize()[1]["task_ids"]
        assert len(carry["0"]) == len(carry["1"]) == 2
        assert not store.data

    @pytest.mark.parametrize("failures", [0, 1])
    def test_the_resumed_worker_writes_the_carried_chunks_first(self, sim, small_chunks, failures):
        """Written before the stored chunks are read (a failing read must not lose them); a write that fails
        again leaves them for the step's next save."""
        store = FlakyStateStore()
        deferred, context, inputs = self.deferred_with_every_write_failing(store)
        task_ids = deferred.trigger.serialize()[1]["task_ids"]
        resumed = batch(inputs=inputs, deferrable=True, max_in_flight=10)
        state = resumed._prepare(context)
        store.failures = failures
        resumed._load(context, state, deferred.kwargs["carry"])
        assert {entry.task_id for entry in state.entries.values()} == set(task_ids.values())
        if failures:
            assert not store.data
            assert state.dirty == {0, 1, 2}  # the first write failed: the rest wait for the next save
            resumed._save(context, state)
        assert state.dirty == set()
        assert self.task_ids_in({k: v for k, v in store.data.items() if k.startswith(STATE_PREFIX)}) == task_ids

    def test_after_a_failed_write_eager_saves_pause_and_the_closing_save_tries(self, sim, small_chunks):
        store = FlakyStateStore()
        deferred, context, inputs = self.deferred_with_every_write_failing(store)
        op = batch(inputs=inputs, deferrable=True, max_in_flight=10)
        state = op._prepare(context)
        op._load(context, state, deferred.kwargs["carry"])  # written: the store answers again
        state.dirty.update({0, 1})
        store.failures = 1
        op._save(context, state)  # fails on chunk 0: chunks 0 and 1 stay dirty, eager saves pause
        assert state.dirty == {0, 1}
        store.data.clear()
        op._save(context, state, eager=True)
        assert state.dirty == {0, 1}
        assert not store.data  # paused: no write was even tried
        op._save(context, state)
        assert state.dirty == set()
        assert sorted(store.data) == [f"{STATE_PREFIX}0", f"{STATE_PREFIX}1"]


class TestResumeAcrossTries:
    def test_retry_polls_running_and_reuses_succeeded_items_without_creating(self, sim):
        sim.set_faults({"durations": [0, 0, 0.1]})
        store = FakeStateStore()
        inputs = [{"prompt": "quick one"}, {"prompt": "slow one [sim:never]"}]
        with pytest.raises(TaskDeferred):
            batch(inputs=inputs, deferrable=True).execute(make_context(store, ti(1)))
        before = sum(creates(sim).values())
        # Try 2 (the worker was killed while deferred): nothing is created again.
        with pytest.raises(TaskDeferred) as again:
            batch(inputs=inputs, deferrable=True).execute(make_context(store, ti(2)))
        assert sum(creates(sim).values()) == before
        assert len(again.value.trigger.serialize()[1]["task_ids"]) == 2

    def test_failed_items_are_recreated_by_the_next_try_only(self, sim):
        sim.set_faults({"durations": [0, 0, 0.05]})
        store = FakeStateStore()
        inputs = [{"prompt": "good"}, {"prompt": "flaky [sim:fail]"}]
        with pytest.raises(AirflowException, match="1 of 2 items failed"):
            batch(inputs=inputs).execute(make_context(store, ti(1)))
        before = sum(creates(sim).values())
        with pytest.raises(AirflowException, match="1 of 2 items failed"):
            batch(inputs=inputs).execute(make_context(store, ti(2)))
        assert sum(creates(sim).values()) == before + 1  # the failed item only
        results = batch(inputs=inputs, max_failed=1).execute(make_context(store, ti(2)))
        assert sum(creates(sim).values()) == before + 1  # same try: not created again
        assert [r["creations"] for r in results] == [1, 2]

    def test_a_changed_item_gets_a_new_task(self, sim):
        sim.set_faults({"durations": [0, 0, 0.05]})
        store = FakeStateStore()
        first = batch(inputs=[{"prompt": "a"}, {"prompt": "b"}]).execute(make_context(store, ti(1)))
        second = batch(inputs=[{"prompt": "a"}, {"prompt": "b changed"}]).execute(make_context(store, ti(2)))
        assert second[0]["task_id"] == first[0]["task_id"]
        assert second[1]["task_id"] != first[1]["task_id"]

    def test_deferral_carries_the_configured_settle_time(self, sim, monkeypatch):
        monkeypatch.setenv("AIRFLOW__LIANGXIN__DEFERRAL_SETTLE_SECONDS", "3")
        sim.set_faults({"durations": [1, 1, 30]})
        with pytest.raises(TaskDeferred) as info:
            batch(inputs=[{"prompt": "settle"}], deferrable=True).execute(make_context(FakeStateStore(), ti()))
        assert info.value.trigger.serialize()[1]["settle_seconds"] == 3.0

    def test_without_a_state_store_the_state_rides_the_deferral(self, sim):
        sim.set_faults({"durations": [0.05, 0.05, 0.1]})
        context = make_context(None, ti())
        before = sum(creates(sim).values())
        results = run_deferred(
            batch(inputs=[{"prompt": f"no store {i}"} for i in range(5)], max_in_flight=2, deferrable=True), context
        )
        assert {r["state"] for r in results} == {"success"}
        assert sum(creates(sim).values()) == before + 5
