"""The result view in-process: the real FastAPI app the plugin mounts, real files on local disk and in fsspec's
``memory://`` (which only the process that wrote it can read, so it is proven here, not on the e2e stack), with the
task instance and its XComs given directly instead of read from Airflow's database. Authentication against a real
Airflow is proven in tests/e2e/test_batch_real_airflow.py."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
from typing import Any

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient
from PIL import Image

from airflow_provider_liangxin._airflow_compat import TaskInstanceFacts
from airflow_provider_liangxin.plugins.receiver import create_app
from airflow_provider_liangxin.plugins.result_routes import ResultViewService, add_result_routes
from airflow_provider_liangxin.result_view import (
    ResultItem,
    ThumbnailCache,
    build_view,
    make_thumbnail,
    media_type,
    view_url,
)

DAG, RUN, TASK = "d", "manual__2026-11-29T09:00:00+00:00", "generate"


def png(width: int = 800, height: int = 600, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


class FakeInternals:
    """The compat module's reads, from dicts; the auth dependency lets ``X-User: reader`` through only."""

    def __init__(self) -> None:
        self.tis: dict[tuple[str, str, str, int], TaskInstanceFacts] = {}
        self.xcom: dict[tuple[str, str, str, int], dict[str, Any]] = {}

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskInstanceFacts | None:
        return self.tis.get((dag_id, run_id, task_id, map_index))

    def xcoms(self, dag_id: str, run_id: str, task_id: str, map_index: int, keys: list[str]) -> dict[str, Any]:
        values = self.xcom.get((dag_id, run_id, task_id, map_index), {})
        return {k: v for k, v in values.items() if k in keys}

    def add(self, xcoms: dict[str, Any], *, dag_id: str = DAG, map_index: int = -1, state: str = "success") -> None:
        now = datetime.datetime(2026, 11, 29, 9, 0, tzinfo=datetime.UTC)
        key = (dag_id, RUN, TASK, map_index)
        self.tis[key] = TaskInstanceFacts(state, "LiangxinCreateTaskOperator", 1, now, now, 12.5)
        self.xcom[key] = xcoms


def only_reader(request: Request) -> None:
    if "x-user" not in request.headers:
        raise HTTPException(401, "Not authenticated")
    if request.headers["x-user"] != "reader" or request.query_params.get("dag_id") != DAG:
        raise HTTPException(403, "Forbidden")


@pytest.fixture
def internals() -> FakeInternals:
    return FakeInternals()


@pytest.fixture
def cache() -> ThumbnailCache:
    return ThumbnailCache()


@pytest.fixture
def service(internals, cache) -> ResultViewService:
    return ResultViewService(internals, cache)  # type: ignore[arg-type]


@pytest.fixture
def client(service) -> TestClient:
    app = create_app(None, lambda app: add_result_routes(app, service, [only_reader]))
    return TestClient(app, headers={"x-user": "reader"})


def q(**extra: Any) -> dict[str, Any]:
    return {"dag_id": DAG, "run_id": RUN, "task_id": TASK, **extra}


def stored_result(directory: str, data: bytes, *, task_id: str = "task_x_1", index: int = 0) -> dict[str, Any]:
    """What the operator's store_results leaves: the file, its sidecar, and the ``stored`` entry."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(directory)
    fs.makedirs(root, exist_ok=True)
    path = f"{directory.rstrip('/')}/{task_id}_{index}.png"
    sidecar = f"{directory.rstrip('/')}/{task_id}_{index}.json"
    with fsspec.open(path, "wb") as fh:
        fh.write(data)
    with fsspec.open(sidecar, "w") as fh:
        sidecar_data = {
            "task_id": task_id,
            "prompt": "a red square",
            "seed": 7,
            "source_url": "https://cdn/x.png?sig=1",
        }
        json.dump(sidecar_data, fh)
    return {
        "index": index,
        "path": path,
        "sidecar": sidecar,
        "source_url": f"https://cdn.example/{task_id}/{index}.png?sig=secret",
        "content_type": "image/png",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def single(stored: list[dict[str, Any]] | None, urls: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "task_id": "task_x_1",
        "model": "seedream-v4-5",
        "state": "success",
        "param": {"model": "seedream-v4-5", "input": {"prompt": "a red square"}},
        "result_urls": urls or ["https://cdn.example/x/0.png?sig=secret"],
        "fail_code": "",
        "fail_msg": "",
        "create_time": 1_796_000_000_000,
        "complete_time": 1_796_000_012_000,
        "cost_time": 12_000,
        **extra,
    }
    if stored is not None:
        result["stored"] = stored
    return result


@pytest.fixture
def memory_dir():
    import fsspec

    fs = fsspec.filesystem("memory")
    yield "memory://liangxin-view-test"
    if fs.exists("/liangxin-view-test"):
        fs.rm("/liangxin-view-test", recursive=True)


# ------------------------------------------------------------------------------------------------ the page


@pytest.mark.parametrize("where", ["local", "memory"])
def test_single_stored_image_page_and_bytes(client, internals, tmp_path, memory_dir, where):
    directory = f"file://{tmp_path}" if where == "local" else memory_dir
    data = png()
    internals.add({"return_value": single([stored_result(directory, data)]), "task_id": "task_x_1"})

    page = client.get("/v1/results", params=q())
    assert page.status_code == 200, page.text
    html = page.text
    for shown in ("task_x_1", "seedream-v4-5", "a red square", "success", f"{directory}/task_x_1_0.png", "12.0 s"):
        assert shown in html
    assert '"seed": 7' in html  # the sidecar
    assert "sig=secret" not in html
    assert "sig=1" not in html
    assert "default-src 'none'" in page.headers["content-security-policy"]

    image = client.get("/v1/results/file", params=q(item=0, index=0))
    assert image.status_code == 200
    assert image.content == data
    assert image.headers["content-type"] == "image/png"
    assert image.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    again = client.get("/v1/results/file", params=q(item=0, index=0), headers={"if-none-match": image.headers["etag"]})
    assert again.status_code == 304


def test_json_form_lists_the_files(client, internals, tmp_path):
    internals.add({"return_value": single([stored_result(f"file://{tmp_path}", png())])})
    # The task instance tab leaves {MAP_INDEX} as is for a task that is not mapped (Airflow 3.3's UI).
    data = client.get("/v1/results", params=q(format="json", map_index="{MAP_INDEX}")).json()
    assert data["kind"] == "single"
    assert data["task_instance_state"] == "success"
    (item,) = data["items"]
    assert item["prompt"] == "a red square"
    assert item["files"][0]["stored"] is True


def test_a_file_whose_bytes_changed_is_not_served(client, internals, tmp_path):
    """The XCom names the file and its sha256: other bytes at that path (or an XCom pointing at any other file the
    api-server could read) are refused."""
    entry = stored_result(f"file://{tmp_path}", png())
    (tmp_path / "task_x_1_0.png").write_bytes(b"something else")
    secret = tmp_path / "airflow.cfg"
    secret.write_text("[core]\nfernet_key = s3cr3t\n")
    other = dict(entry, index=1, path=f"file://{secret}")
    internals.add({"return_value": single([entry, other])})
    assert client.get("/v1/results/file", params=q(item=0, index=0)).status_code == 404
    refused = client.get("/v1/results/file", params=q(item=0, index=1))
    assert refused.status_code == 404
    assert "s3cr3t" not in refused.text


def test_not_stored_redirects_to_the_result_url(client, internals):
    urls = ["https://cdn.example/x/0.png?sig=abc", "javascript:alert(1)"]
    internals.add({"return_value": single(None, urls=urls, complete_time=1_790_000_000_000)})
    response = client.get("/v1/results/file", params=q(item=0, index=0), follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "https://cdn.example/x/0.png?sig=abc"
    # Only http(s) URLs become files at all.
    assert client.get("/v1/results/file", params=q(item=0, index=1), follow_redirects=False).status_code == 404
    assert "probably expired" in client.get("/v1/results", params=q()).text  # completed in 2026-09


def test_failed_task_shows_fail_code_and_message(client, internals):
    failure = {"task_id": "task_x_9", "model": "seedream-v4-5", "prompt": "p", "fail_code": "500", "fail_msg": "boom"}
    internals.add({"liangxin_failure": failure, "task_id": "task_x_9"}, state="failed")
    html = client.get("/v1/results", params=q()).text
    assert "failCode" in html
    assert "<code>500</code>" in html
    assert "boom" in html
    assert "task_x_9" in html


def test_batch_grid_uses_thumbnails_and_item_pages(client, internals, cache, service, tmp_path):
    items = []
    for i in range(3):
        entry = stored_result(f"file://{tmp_path}", png(color=(i * 80, 10, 10)), task_id=f"task_b_{i}")
        items.append({"index": i, "model": "z-image", "task_id": f"task_b_{i}", "state": "success", "stored": [entry]})
    items.append(
        {"index": 3, "model": "z-image", "task_id": "task_b_3", "state": "fail", "fail_code": "422", "fail_msg": "nsfw"}
    )
    internals.add({"return_value": items})

    grid = client.get("/v1/results", params=q()).text
    assert "4 items: 3 succeeded, 1 not" in grid
    assert grid.count('loading="lazy"') == 3
    assert "nsfw" in grid

    thumb = client.get("/v1/results/file", params=q(item=1, index=0, thumb=1))
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 320
    assert len(thumb.content) < len(png())
    assert cache.made == 1
    client.get("/v1/results/file", params=q(item=1, index=0, thumb=1))
    assert cache.made == 1  # the second one came from the cache
    assert service.loads == 1  # the page read the task instance once; the file requests reused that read

    item_page = client.get("/v1/results", params=q(item=3)).text
    assert "nsfw" in item_page
    assert "all items" in item_page
    assert client.get("/v1/results", params=q(item=9)).status_code == 404


def test_failed_batch_reads_its_results_xcom(client, internals):
    items = [{"index": 0, "model": "z-image", "task_id": "t0", "state": "fail", "fail_code": "500", "fail_msg": "x"}]
    internals.add({"liangxin_batch_results": items}, state="failed")
    assert client.get("/v1/results", params=q(format="json")).json()["kind"] == "batch"


def test_without_pillow_the_grid_gets_the_full_image(client, internals, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pillow(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args, **kwargs)

    data = png()
    internals.add({"return_value": single([stored_result(f"file://{tmp_path}", data)])})
    monkeypatch.setattr(builtins, "__import__", no_pillow)
    response = client.get("/v1/results/file", params=q(item=0, index=0, thumb=1))
    assert response.status_code == 200
    assert response.content == data


def test_auth_dependency_guards_both_routes(client, internals, tmp_path):
    internals.add({"return_value": single([stored_result(f"file://{tmp_path}", png())])})
    for route, extra in (("/v1/results", {}), ("/v1/results/file", {"item": 0, "index": 0})):
        assert client.get(route, params=q(**extra), headers={"x-user": "outsider"}).status_code == 403
        anonymous = TestClient(client.app)
        assert anonymous.get(route, params=q(**extra)).status_code == 401


def test_unknown_task_instance_and_no_liangxin_task(client, internals):
    assert client.get("/v1/results", params=q(map_index=3)).status_code == 404
    assert client.get("/v1/results", params=q(map_index="x")).status_code == 422
    assert client.get("/v1/results", params=q(map_index=-2)).status_code == 422
    internals.add({})
    assert "No LiangXin task was created" in client.get("/v1/results", params=q()).text


# ------------------------------------------------------------------------------------------------ the pieces


def test_view_url_is_same_origin_and_keeps_the_api_prefix():
    assert view_url("d", "manual__1+00:00", "t", 2) == (
        "/liangxin/v1/results?dag_id=d&run_id=manual__1%2B00%3A00&task_id=t&map_index=2"
    )
    assert view_url("d", "r", "t", base_url="https://example.com/airflow/").startswith("/airflow/liangxin/v1/results?")


def test_build_view_shapes():
    assert build_view({}).kind == "none"
    assert build_view({"return_value": "task_1"}).kind == "created"
    assert build_view({"return_value": single(None)}).items[0].prompt == "a red square"
    view = build_view({"return_value": [{"task_id": "a", "state": "success", "result_urls": ["ftp://x"]}]})
    assert view.kind == "batch"
    assert view.items[0].files == []


def test_media_type_only_for_known_extensions():
    assert media_type("file:///x/a_0.png") == "image/png"
    assert media_type("s3://c@b/a_0.mp4") == "video/mp4"
    assert media_type("/x/a_0.bin") is None
    assert media_type("/etc/passwd") is None


def test_thumbnail_bounds_and_cache_eviction():
    assert make_thumbnail(io.BytesIO(b"not an image")) is None
    thumb = make_thumbnail(io.BytesIO(png(1200, 300)))
    assert thumb is not None
    assert Image.open(io.BytesIO(thumb)).size == (320, 80)
    cache = ThumbnailCache(max_bytes=10)
    cache.put("a", b"12345")
    cache.put("b", b"12345")
    cache.get("a")
    cache.put("c", b"12345")
    assert cache.get("b") is None
    assert cache.get("a") == b"12345"
    assert cache.size == 10


def test_url_expiry():
    item = ResultItem(0, "t", "m", "success", complete_time=1_796_000_000_000)
    done = datetime.datetime.fromtimestamp(1_796_000_000, datetime.UTC)
    assert not item.url_expired(done + datetime.timedelta(hours=23))
    assert item.url_expired(done + datetime.timedelta(hours=25))
