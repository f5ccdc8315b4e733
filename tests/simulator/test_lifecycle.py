"""Task lifecycle with deterministic durations, and the result files it produces."""

from __future__ import annotations

import io
import json
import time

import httpx
from PIL import Image

from airflow_provider_liangxin._api import TaskRecord, TaskState
from airflow_provider_liangxin.simulator import SimulatorServer
from airflow_provider_liangxin.simulator.lifecycle import phase_lengths_ms
from tests.simulator.conftest import create, record, wait_for_state

ORDER = ["waiting", "queuing", "generating", "success"]


def _result_url(data: dict) -> str:
    parsed = json.loads(data["resultJson"])
    assert list(parsed) == ["resultUrls"]
    assert len(parsed["resultUrls"]) == 1
    return parsed["resultUrls"][0]


def _image(url: str) -> tuple[bytes, Image.Image]:
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()  # decodes every row: a truncated or corrupt PNG raises here
    return response.content, image


def test_states_progress_in_order_to_success(client: httpx.Client, sim: SimulatorServer) -> None:
    # Each state lasts far longer than a poll (20 ms) plus a stalled request: CI once saw one recordInfo take
    # 239 ms, which skipped a 150 ms queuing window.
    sim.set_faults({"durations": [0.5, 0.5, 0.5]})
    task_id = create(client)
    seen: list[str] = []
    progress: list[int] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = record(client, task_id)
        if not seen or seen[-1] != data["state"]:
            seen.append(data["state"])
        if data["state"] == "generating":
            progress.append(data["progress"])
        if data["state"] == "success":
            break
        time.sleep(0.02)

    assert seen == ORDER
    assert progress == sorted(progress)
    assert all(0 <= p <= 99 for p in progress)
    assert "progress" not in data
    assert data["completeTime"] == data["updateTime"] == data["createTime"] + 1500
    assert data["costTime"] == 1500
    assert data["failCode"] == data["failMsg"] == ""
    record_ = TaskRecord.from_api(data)
    assert record_.state is TaskState.SUCCESS
    assert record_.result_urls == [_result_url(data)]


def test_update_time_marks_each_transition(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0.1, 0.1, 5]})
    task_id = create(client)

    data = wait_for_state(client, task_id, "generating")

    assert data["updateTime"] == data["createTime"] + 200
    assert data["completeTime"] is None
    assert data["resultJson"] == ""


def test_zero_durations_succeed_at_once(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0, 0, 0]})
    task_id = create(client)

    data = record(client, task_id)

    assert data["state"] == "success"
    assert data["completeTime"] == data["createTime"]


def test_result_is_a_png_with_the_requested_aspect_ratio(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0, 0, 0]})
    wide = create(client, aspect_ratio="16:9", seed=1)
    tall = create(client, aspect_ratio="portrait_2_3", seed=1)
    default = create(client, seed=1)

    _, wide_image = _image(_result_url(record(client, wide)))
    _, tall_image = _image(_result_url(record(client, tall)))
    _, square_image = _image(_result_url(record(client, default)))

    assert wide_image.format == "PNG"
    assert wide_image.size == (512, 288)  # 2730x1536 scaled to a 512 px long side
    assert abs(wide_image.width / wide_image.height - 16 / 9) < 0.01
    assert abs(tall_image.width / tall_image.height - 2 / 3) < 0.01
    assert max(tall_image.size) == 512
    assert square_image.size == (512, 512)


def test_same_prompt_and_seed_give_identical_bytes(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0, 0, 0]})
    first = create(client, "a lighthouse at dusk", seed=42)
    again = create(client, "a lighthouse at dusk", seed=42)
    other_seed = create(client, "a lighthouse at dusk", seed=43)
    other_prompt = create(client, "a lighthouse at dawn", seed=42)

    images = [_image(_result_url(record(client, t)))[0] for t in (first, again, other_seed, other_prompt)]

    assert images[0] == images[1]
    assert images[0] != images[2]
    assert images[0] != images[3]


def test_urls_point_at_the_simulator_itself(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0, 0, 0]})
    task_id = create(client)

    url = _result_url(record(client, task_id))

    assert url == f"{sim.base_url}/files/{task_id}/0.png"


def test_files_of_unfinished_or_unknown_tasks_are_404(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [30, 30, 30]})
    task_id = create(client)

    assert httpx.get(f"{sim.base_url}/files/{task_id}/0.png").status_code == 404
    assert httpx.get(f"{sim.base_url}/files/task_nope_1/0.png").status_code == 404


def test_video_models_return_an_mp4_placeholder(client: httpx.Client, sim: SimulatorServer) -> None:
    sim.set_faults({"durations": [0, 0, 0]})
    task_id = create(client, "a coffee commercial", model="kling-v3-pro")

    url = _result_url(record(client, task_id))
    response = httpx.get(url)

    assert url.endswith("/0.mp4")
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.content[4:8] == b"ftyp"


def test_jitter_is_seeded_per_task() -> None:
    one = phase_lengths_ms((1.0, 1.0, 4.0), 0.5, 0, "task_z-image_1000000000000")
    same = phase_lengths_ms((1.0, 1.0, 4.0), 0.5, 0, "task_z-image_1000000000000")
    other = phase_lengths_ms((1.0, 1.0, 4.0), 0.5, 0, "task_z-image_1000000000001")

    assert one == same != other
    assert all(500 <= w <= 1500 for w in one[:2])
    assert 2000 <= one[2] <= 6000
    assert phase_lengths_ms((1.0, 1.0, 4.0), 0, 0, "x") == (1000, 1000, 4000)
