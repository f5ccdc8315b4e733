"""The batch bookkeeping (no HTTP, no Airflow): persisted entries, the item-retry policy, results."""

from __future__ import annotations

import json

import pytest

from airflow_provider_liangxin.batch import CHUNK_SIZE, BatchState, normalize_items


def state_for(n: int, try_number: int = 1) -> BatchState:
    items, _ = normalize_items([{"prompt": f"p{i}"} for i in range(n)], "seedream-v4-5")
    return BatchState(items, try_number)


def persisted(state: BatchState) -> dict[int, dict]:
    """What the operator would write: every chunk, through JSON (the store keeps JSON)."""
    return {chunk: json.loads(json.dumps(state.dump_chunk(chunk))) for chunk in state.chunks()}


def test_items_are_chunked_and_round_trip():
    state = state_for(CHUNK_SIZE * 2 + 1)
    for index in range(len(state.items)):
        state.created(index, f"task_{index}")
    assert state.take_dirty() == [0, 1, 2]
    again = state_for(CHUNK_SIZE * 2 + 1)
    assert again.restore(persisted(state)) == []
    assert again.in_flight() == {i: f"task_{i}" for i in range(CHUNK_SIZE * 2 + 1)}
    assert again.pending() == []


def test_item_retry_policy_across_tries():
    state = state_for(4)
    state.created(0, "t0")
    state.created(1, "t1")
    state.created(2, "t2")
    state.create_failed(3, "422", "refused")
    state.finished(0, {"task_id": "t0", "state": "success", "result_urls": ["http://x/0.png"]})
    state.finished(1, {"task_id": "t1", "state": "fail", "fail_code": "500", "fail_msg": "boom"})
    # t2 still running when the try ends
    second = state_for(4, try_number=2)
    second.restore(persisted(state))
    notes = second.start_try()
    assert len(notes) == 2  # items 1 and 3 failed in try 1: created again
    assert second.pending() == [1, 3]
    assert second.in_flight() == {2: "t2"}  # running: polled, never created again
    assert second.entries[0].state == "success"  # succeeded: reused
    second.created(1, "t1b")
    assert second.entries[1].creations == 2
    # The same try resumed (a deferral): nothing failed in this try is created again.
    second.finished(1, {"task_id": "t1b", "state": "fail"})
    third_step = state_for(4, try_number=2)
    third_step.restore(persisted(second))
    assert third_step.start_try() == []
    assert third_step.pending() == [3]


@pytest.mark.parametrize(("final", "pending_next_try", "in_flight_next_try"), [(True, [0], {}), (False, [], {0: "t0"})])
def test_lost_tasks_are_recreated_only_when_liangxin_does_not_know_them(final, pending_next_try, in_flight_next_try):
    state = state_for(1)
    state.created(0, "t0")
    state.lost(0, "t0", "HTTP 404" if final else "HTTP 401", final=final)
    result = state.results(with_stored=False)[0]
    assert result["state"] == "fail"
    assert result["fail_code"] == "error"
    nxt = state_for(1, try_number=2)
    nxt.restore(persisted(state))
    nxt.start_try()
    assert nxt.pending() == pending_next_try
    assert nxt.in_flight() == in_flight_next_try


def test_a_changed_item_drops_its_stored_task():
    state = state_for(2)
    state.created(0, "t0")
    state.created(1, "t1")
    items, _ = normalize_items([{"prompt": "p0"}, {"prompt": "p1 changed"}], "seedream-v4-5")
    changed = BatchState(items, 2)
    notes = changed.restore(persisted(state))
    assert len(notes) == 1
    assert "item 1" in notes[0]
    assert changed.pending() == [1]
    assert changed.in_flight() == {0: "t0"}


def test_timed_out_items_report_fail_but_stay_in_flight_for_the_next_try():
    state = state_for(1)
    state.created(0, "t0")
    state.timed_out([0])
    result = state.results(with_stored=True)[0]
    assert result["state"] == "fail"
    assert result["fail_code"] == "timeout"
    assert result["stored"] == []
    assert state.in_flight() == {}
    nxt = state_for(1, try_number=2)
    nxt.restore(persisted(state))
    assert nxt.in_flight() == {0: "t0"}


def test_unknown_model_warns_once_not_per_item():
    _items, warnings = normalize_items([{"prompt": "a"}, {"prompt": "b"}], "brand-new-model")
    assert len(warnings) == 1
    assert warnings[0].startswith("items 0, 1: unknown model 'brand-new-model'")
