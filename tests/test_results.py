"""results.py over real HTTP (the scripted loopback server) into real storage (local folders, fsspec memory://)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import uuid

import fsspec
import pytest
from PIL import Image

from airflow_provider_liangxin._api import LiangxinError, TaskRecord
from airflow_provider_liangxin.results import (
    STALE_PART_SECONDS,
    ResultDownloadError,
    check_output_path,
    extension_for,
    redact_url,
    store_results,
    stored_stem,
)
from tests.support.scripted_server import Reply, record

FAST_RETRY = {"max_attempts": 3, "backoff_initial": 0, "backoff_max": 0, "max_wait_total": 10}
TASK_ID = "task_seedream-v4-5_1"


def png_bytes(color: str = "red", size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(buffer, format="JPEG")
    return buffer.getvalue()


def success_record(urls: list[str], task_id: str = TASK_ID) -> dict:
    param = {"model": "seedream-v4-5", "input": {"prompt": "a red cat", "seed": 42, "image_size": "square_hd"}}
    data = record(task_id, "success", param=json.dumps(param), resultJson=json.dumps({"resultUrls": urls}))
    return TaskRecord.from_api(data).to_dict()


def image(body: bytes, content_type: str = "image/png", **kwargs) -> Reply:
    return Reply(200, body, headers={"Content-Type": content_type}, **kwargs)


def not_found() -> Reply:
    return Reply(404, "<html>Not Found</html>", headers={"Content-Type": "text/html"})


def store(server, record, output_path, **kwargs):
    """``store_results`` with the scripted server as the trusted API host (it lives on loopback)."""
    return store_results(record, output_path, trusted_base_url=server.base_url, **kwargs)


def files_in(directory) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture
def memory_root():
    root = f"memory://liangxin-tests-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


# ------------------------------------------------------------------------------------------ local storage


@pytest.mark.parametrize("as_uri", [False, True], ids=["plain-path", "file-uri"])
def test_stores_result_and_sidecar_in_a_new_local_folder(scripted_server, tmp_path, as_uri):
    body = png_bytes()
    scripted_server.script(image(body))
    url = f"{scripted_server.base_url}/results/a.png?sig=abc"
    out_dir = tmp_path / "nested" / "out"  # does not exist yet
    output_path = out_dir.as_uri() if as_uri else str(out_dir)

    stored = store(scripted_server, success_record([url]), output_path)

    target = out_dir / f"{TASK_ID}_0.png"
    assert target.read_bytes() == body
    assert files_in(out_dir) == [f"{TASK_ID}_0.json", f"{TASK_ID}_0.png"]  # no .part or probe left behind
    digest = hashlib.sha256(body).hexdigest()
    assert stored == [
        {
            "index": 0,
            "path": target.as_uri(),
            "sidecar": (out_dir / f"{TASK_ID}_0.json").as_uri(),
            "source_url": url,
            "content_type": "image/png",
            "bytes": len(body),
            "sha256": digest,
        }
    ]
    sidecar = json.loads((out_dir / f"{TASK_ID}_0.json").read_text())
    assert (sidecar["path"], sidecar["sha256"], sidecar["bytes"]) == (target.as_uri(), digest, len(body))
    with Image.open(target) as img:
        assert img.size == (8, 6)
    assert [r.path for r in scripted_server.requests] == ["/results/a.png?sig=abc"]


def test_overwrites_an_earlier_copy_of_the_same_result(scripted_server, tmp_path):
    (tmp_path / f"{TASK_ID}_0.png").write_bytes(b"stale")
    body = png_bytes("green")
    scripted_server.script(image(body))
    store(scripted_server, success_record([f"{scripted_server.base_url}/a.png"]), str(tmp_path))
    assert (tmp_path / f"{TASK_ID}_0.png").read_bytes() == body


def test_task_id_cannot_escape_the_output_folder(scripted_server, tmp_path):
    scripted_server.script(image(png_bytes()))
    out = tmp_path / "out"
    stored = store(
        scripted_server, success_record([f"{scripted_server.base_url}/a.png"], task_id="../../evil/id"), str(out)
    )
    stem = stored_stem("../../evil/id")
    assert re.fullmatch(r"evil_id~[0-9a-f]{12}", stem)
    assert files_in(out) == [f"{stem}_0.json", f"{stem}_0.png"]
    assert stored[0]["path"] == (out / f"{stem}_0.png").as_uri()
    assert files_in(tmp_path) == ["out"]


# ------------------------------------------------------------------------------------------- stored names


@pytest.mark.parametrize("task_id", ["task_seedream-v4-5_1777600000000", "task_z-image_1", "a.b-c_d", "x" * 150])
def test_plain_lower_case_task_ids_are_their_own_stem(task_id):
    assert stored_stem(task_id) == task_id


def test_distinct_task_ids_never_share_a_file_name(scripted_server, tmp_path):
    ids = ["a/b", "a_b", "a\\b", "A_B", "a_B", "x" * 151, "x" * 152, "a_b~" + stored_stem("a/b").split("~")[1]]
    stems = [stored_stem(task_id) for task_id in ids]
    assert len({stem.lower() for stem in stems}) == len(ids)  # distinct even on a case-insensitive disk
    assert all(len(stem) <= 150 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._~-]*", stem) for stem in stems)

    bodies = [png_bytes(color) for color in ("red", "green")]
    scripted_server.script(image(bodies[0]), image(bodies[1]))
    first = store(scripted_server, success_record([f"{scripted_server.base_url}/0.png"], task_id="a/b"), str(tmp_path))
    second = store(scripted_server, success_record([f"{scripted_server.base_url}/0.png"], task_id="a_b"), str(tmp_path))

    assert first[0]["path"] != second[0]["path"]
    assert len(files_in(tmp_path)) == 4
    assert [json.loads((tmp_path / f"{stored_stem(t)}_0.json").read_text())["task_id"] for t in ("a/b", "a_b")] == [
        "a/b",
        "a_b",
    ]
    assert (tmp_path / f"{stored_stem('a/b')}_0.png").read_bytes() == bodies[0]
    assert (tmp_path / f"{stored_stem('a_b')}_0.png").read_bytes() == bodies[1]


def test_a_json_result_url_does_not_overwrite_its_sidecar(scripted_server, tmp_path):
    payload = b'{"not": "the sidecar"}'
    scripted_server.script(image(payload, "application/json"))
    url = f"{scripted_server.base_url}/r/0.json"
    stored = store(scripted_server, success_record([url]), str(tmp_path))

    assert files_in(tmp_path) == [f"{TASK_ID}_0.bin", f"{TASK_ID}_0.json"]
    assert (tmp_path / f"{TASK_ID}_0.bin").read_bytes() == payload
    sidecar = json.loads((tmp_path / f"{TASK_ID}_0.json").read_text())
    assert (sidecar["source_url"], sidecar["path"]) == (url, stored[0]["path"])


@pytest.mark.parametrize(
    ("content_type", "url_path"),
    [
        ("text/x-shellscript", "/run.sh"),
        ("application/octet-stream", "/run.sh"),
        ("text/html", "/page.html"),
        ("application/x-msdownload", "/setup.exe"),
    ],
)
def test_unknown_types_are_stored_as_bin_never_under_the_urls_extension(
    scripted_server, tmp_path, content_type, url_path
):
    scripted_server.script(image(b"#!/bin/sh\necho hi\n", content_type))
    stored = store(scripted_server, success_record([f"{scripted_server.base_url}{url_path}"]), str(tmp_path))
    assert stored[0]["path"].endswith(f"/{TASK_ID}_0.bin")
    assert files_in(tmp_path) == [f"{TASK_ID}_0.bin", f"{TASK_ID}_0.json"]


# ------------------------------------------------------------------------------------ leftover .part files


def _age(path, seconds):
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_stale_part_files_of_the_same_task_are_removed_on_the_next_store(scripted_server, tmp_path):
    stale = [f".{TASK_ID}_0.part-deadbeef", f".{TASK_ID}_0.json.part-0123abcd", f".{TASK_ID}_7.part-00000000"]
    fresh = f".{TASK_ID}_1.part-cafebabe"  # another worker may be writing this one right now
    other_task = ".task_other_1_0.part-deadbeef"  # same prefix, different stem
    unrelated = ".notes.part-deadbeef"
    for name in [*stale, fresh, other_task, unrelated]:
        (tmp_path / name).write_bytes(b"partial")
    for name in [*stale, other_task, unrelated]:
        _age(tmp_path / name, STALE_PART_SECONDS + 60)

    scripted_server.script(image(png_bytes()))
    store(scripted_server, success_record([f"{scripted_server.base_url}/a.png"]), str(tmp_path))

    assert files_in(tmp_path) == sorted([fresh, other_task, unrelated, f"{TASK_ID}_0.json", f"{TASK_ID}_0.png"])


def test_a_kill_9_mid_download_leaves_a_part_file_that_the_next_store_removes(scripted_server, tmp_path):
    """A real worker killed while a download is in flight; the next store into that folder cleans up after it."""
    url = f"{scripted_server.base_url}/slow.png"
    stall = 2.0  # the server holds the answer this long: the worker is killed inside that window
    scripted_server.script(image(png_bytes(), delay=stall))
    script = (
        "import json, sys\n"
        "from airflow_provider_liangxin.results import store_results\n"
        "store_results(json.loads(sys.argv[1]), sys.argv[2], trusted_base_url=sys.argv[3])\n"
    )
    argv = [sys.executable, "-c", script, json.dumps(success_record([url])), str(tmp_path), scripted_server.base_url]
    worker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not scripted_server.requests:
            assert worker.poll() is None, "the worker exited before downloading"
            assert time.monotonic() < deadline, "the worker never started its download"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        worker.kill()
        worker.wait(10)
    leftovers = files_in(tmp_path)
    assert len(leftovers) == 1
    assert leftovers[0].startswith(f".{TASK_ID}_0.part-")
    _age(tmp_path / leftovers[0], STALE_PART_SECONDS + 1)

    scripted_server.script(image(png_bytes("blue")))
    store(scripted_server, success_record([f"{scripted_server.base_url}/again.png"]), str(tmp_path))

    assert files_in(tmp_path) == [f"{TASK_ID}_0.json", f"{TASK_ID}_0.png"]
    time.sleep(max(0.0, killed_at + stall + 0.3 - time.monotonic()))  # let the server's stalled reply finish


# ----------------------------------------------------------------------------------------- memory://


def test_memory_store_contents_and_sidecar_fields(scripted_server, memory_root):
    first, second = png_bytes("red"), jpeg_bytes()
    scripted_server.script(image(first), image(second, "image/jpeg"))
    urls = [f"{scripted_server.base_url}/r/0.png?token=s3cr3t", f"{scripted_server.base_url}/r/1.jpeg"]
    rec = success_record(urls)

    stored = store(scripted_server, rec, f"{memory_root}/runs/")

    fs = fsspec.filesystem("memory")
    base = f"{memory_root}/runs"
    assert [s["path"] for s in stored] == [f"{base}/{TASK_ID}_0.png", f"{base}/{TASK_ID}_1.jpg"]
    assert [s["sidecar"] for s in stored] == [f"{base}/{TASK_ID}_0.json", f"{base}/{TASK_ID}_1.json"]
    assert fs.cat(stored[0]["path"]) == first
    assert fs.cat(stored[1]["path"]) == second

    sidecar = json.loads(fs.cat(stored[1]["sidecar"]))
    downloaded_at = sidecar.pop("downloaded_at")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", downloaded_at)
    assert sidecar == {
        "task_id": TASK_ID,
        "model": "seedream-v4-5",
        "prompt": "a red cat",
        "seed": 42,
        "input": {"prompt": "a red cat", "seed": 42, "image_size": "square_hd"},
        "source_url": urls[1],
        "path": f"{base}/{TASK_ID}_1.jpg",
        "content_type": "image/jpeg",
        "sha256": hashlib.sha256(second).hexdigest(),
        "bytes": len(second),
        "create_time": rec["create_time"],
        "complete_time": rec["complete_time"],
    }
    assert (rec["create_time"], rec["complete_time"]) == (1777600000000, 1777600012000)


def test_sidecar_has_null_prompt_and_seed_when_input_has_none(scripted_server, memory_root):
    data = record("t-1", "success", param=json.dumps({"model": "m", "input": {"image_urls": ["x"]}}))
    data["resultJson"] = json.dumps({"resultUrls": [f"{scripted_server.base_url}/x.png"]})
    scripted_server.script(image(png_bytes()))
    stored = store(scripted_server, TaskRecord.from_api(data).to_dict(), memory_root)
    sidecar = json.loads(fsspec.filesystem("memory").cat(stored[0]["sidecar"]))
    assert (sidecar["prompt"], sidecar["seed"], sidecar["input"]) == (None, None, {"image_urls": ["x"]})


# ----------------------------------------------------------------------------------------- extensions


@pytest.mark.parametrize(
    ("content_type", "url_path", "ext"),
    [
        ("image/png", "/f", "png"),
        ("image/jpeg", "/f.png", "jpg"),  # the Content-Type wins over the URL
        ("IMAGE/JPEG; charset=binary", "/f", "jpg"),
        ("image/webp", "/f", "webp"),
        ("video/mp4", "/f", "mp4"),
        ("application/octet-stream", "/dir/clip.MP4", "mp4"),
        ("application/octet-stream", "/dir/photo.jpeg", "jpg"),
        ("application/octet-stream", "/dir/noext", "bin"),
        ("", "/weird.a/b", "bin"),
    ],
)
def test_extension_from_content_type_then_url_then_bin(scripted_server, tmp_path, content_type, url_path, ext):
    scripted_server.script(image(b"\x00payload", content_type))
    stored = store(scripted_server, success_record([f"{scripted_server.base_url}{url_path}?x=1"]), str(tmp_path))
    assert stored[0]["path"].endswith(f"/{TASK_ID}_0.{ext}")
    assert (tmp_path / f"{TASK_ID}_0.{ext}").read_bytes() == b"\x00payload"


def test_extension_for_ignores_query_and_unsafe_suffixes():
    assert extension_for(None, "https://cdn/x.webp?sig=a.png") == "webp"
    assert extension_for("text/plain", "https://cdn/x.p$g") == "bin"


# ---------------------------------------------------------------------------------------------- errors


def test_404_names_task_and_url_and_keeps_earlier_files(scripted_server, tmp_path):
    body = png_bytes()
    scripted_server.script(image(body), not_found())
    ok_url = f"{scripted_server.base_url}/r/0.png"
    bad_url = f"{scripted_server.base_url}/r/1.png?Signature=topsecret"

    with pytest.raises(ResultDownloadError) as info:
        store(scripted_server, success_record([ok_url, bad_url]), str(tmp_path), retry=FAST_RETRY)

    err = info.value
    assert isinstance(err, LiangxinError)
    assert TASK_ID in str(err)
    assert f"{scripted_server.base_url}/r/1.png" in str(err)
    assert "topsecret" not in str(err)
    assert "HTTP 404" in str(err)
    assert (err.task_id, err.status_code, err.retryable) == (TASK_ID, 404, False)
    assert len(scripted_server.requests) == 2  # a 404 is final: not retried
    assert (tmp_path / f"{TASK_ID}_0.png").read_bytes() == body
    assert files_in(tmp_path) == [f"{TASK_ID}_0.json", f"{TASK_ID}_0.png"]
    # It survives the trip through Airflow's exception pickling with its attributes.
    clone = pickle.loads(pickle.dumps(err))
    assert (str(clone), clone.task_id, clone.url) == (str(err), err.task_id, err.url)


def test_size_cap_from_content_length_aborts_without_writing(scripted_server, tmp_path):
    scripted_server.script(image(b"x" * 2048))
    with pytest.raises(ResultDownloadError, match="1024-byte cap") as info:
        store(
            scripted_server,
            success_record([f"{scripted_server.base_url}/big.png"]),
            str(tmp_path),
            max_bytes=1024,
            retry=FAST_RETRY,
        )
    assert TASK_ID in str(info.value)
    assert len(scripted_server.requests) == 1
    assert files_in(tmp_path) == []


def test_size_cap_counts_decoded_bytes_of_a_compressed_body(scripted_server, tmp_path):
    bomb = gzip.compress(b"\x00" * 100_000)
    assert len(bomb) < 1024
    scripted_server.script(Reply(200, bomb, headers={"Content-Type": "image/png", "Content-Encoding": "gzip"}))
    with pytest.raises(ResultDownloadError, match="body exceeds the 4096-byte cap"):
        store(
            scripted_server,
            success_record([f"{scripted_server.base_url}/z.png"]),
            str(tmp_path),
            max_bytes=4096,
            retry=FAST_RETRY,
        )
    assert files_in(tmp_path) == []


def test_timeout_then_retry_succeeds(scripted_server, tmp_path):
    body = png_bytes()
    scripted_server.script(image(body, delay=1.0), image(body))
    stored = store(
        scripted_server,
        success_record([f"{scripted_server.base_url}/slow.png"]),
        str(tmp_path),
        timeout=0.3,
        retry=FAST_RETRY,
    )
    assert len(scripted_server.requests) == 2
    assert stored[0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert (tmp_path / f"{TASK_ID}_0.png").read_bytes() == body
    assert files_in(tmp_path) == [f"{TASK_ID}_0.json", f"{TASK_ID}_0.png"]


def test_server_errors_and_429_are_retried(scripted_server, memory_root, caplog):
    body = png_bytes()
    scripted_server.script(
        Reply(500, "oops", headers={"Content-Type": "text/plain"}),
        Reply(429, "slow down", headers={"Content-Type": "text/plain", "Retry-After": "0"}),
        image(body),
    )
    url = f"{scripted_server.base_url}/r.png?token=hush"
    with caplog.at_level(logging.INFO, logger="airflow_provider_liangxin.results"):
        stored = store(scripted_server, success_record([url]), memory_root, retry=FAST_RETRY)
    assert len(scripted_server.requests) == 3
    assert fsspec.filesystem("memory").cat(stored[0]["path"]) == body
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 2
    stored_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Stored result")]
    assert stored_lines == [
        f"Stored result 1/1 of LiangXin task {TASK_ID} at {stored[0]['path']} "
        f"({len(body)} bytes, sha256 {stored[0]['sha256'][:12]}…)"
    ]
    assert "hush" not in caplog.text


def test_server_errors_give_up_after_max_attempts(scripted_server, tmp_path):
    scripted_server.script(*[Reply(503, "down", headers={"Content-Type": "text/plain"})] * 3)
    with pytest.raises(ResultDownloadError, match="gave up after 3 attempts") as info:
        store(scripted_server, success_record([f"{scripted_server.base_url}/r.png"]), str(tmp_path), retry=FAST_RETRY)
    assert (info.value.status_code, info.value.retryable) == (503, True)
    assert len(scripted_server.requests) == 3
    assert files_in(tmp_path) == []


def test_redirects_are_followed(scripted_server, tmp_path):
    body = png_bytes()
    scripted_server.script(Reply(302, b"", headers={"Location": "/cdn/final.png"}), image(body))
    stored = store(scripted_server, success_record([f"{scripted_server.base_url}/short"]), str(tmp_path))
    assert [r.path for r in scripted_server.requests] == ["/short", "/cdn/final.png"]
    assert stored[0]["bytes"] == len(body)


def test_sends_no_authorization_header(scripted_server, tmp_path):
    scripted_server.script(image(png_bytes()), image(png_bytes("blue")))
    urls = [f"{scripted_server.base_url}/0.png", f"{scripted_server.base_url}/1.png"]
    store(scripted_server, success_record(urls), str(tmp_path))
    assert len(scripted_server.requests) == 2
    for seen in scripted_server.requests:
        headers = {k.lower(): v for k, v in seen.headers.items()}
        assert "authorization" not in headers
        assert headers["user-agent"].startswith("airflow-provider-liangxin/")


def test_only_successful_records_are_stored(tmp_path):
    data = record(TASK_ID, "fail", failCode="500", failMsg="boom")
    with pytest.raises(ValueError, match="is fail"):
        store_results(TaskRecord.from_api(data).to_dict(), str(tmp_path))


def test_non_http_result_url_is_refused(tmp_path):
    with pytest.raises(ResultDownloadError, match="not an http"):
        store_results(success_record(["file:///etc/passwd"]), str(tmp_path))
    assert files_in(tmp_path) == []


def test_redact_url_drops_credentials_query_and_fragment():
    assert redact_url("https://u:p@cdn.example/a/b.png?X-Amz-Signature=s#f") == "https://cdn.example/a/b.png?…"
    assert redact_url("https://cdn.example/a.png") == "https://cdn.example/a.png"


# ------------------------------------------------------------------------------------- check_output_path


def test_check_output_path_creates_local_folder_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    check_output_path(str(target))
    assert target.is_dir()
    assert files_in(target) == []
    check_output_path(target.as_uri())
    assert files_in(target) == []


def test_check_output_path_under_a_regular_file_is_refused(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="not writable") as info:
        check_output_path(str(blocker / "sub"))
    assert str(blocker / "sub") in str(info.value)
    with pytest.raises(ValueError, match="not writable"):
        check_output_path(str(blocker))


@pytest.mark.parametrize(
    ("output_path", "message"),
    [
        ("nosuchproto://bucket/prefix", "unsupported storage protocol 'nosuchproto'"),
        ("https://example.com/upload", "web URL"),
        ("relative/folder", "must be absolute"),
        ("", "non-empty"),
        ("nosuchproto://my_conn@bucket/prefix", "names an Airflow connection"),
    ],
)
def test_check_output_path_refuses_unusable_locations(output_path, message):
    with pytest.raises(ValueError, match=message):
        check_output_path(output_path)


def test_check_output_path_on_memory_leaves_no_probe(memory_root):
    check_output_path(f"{memory_root}/out")
    fs = fsspec.filesystem("memory")
    assert not [p for p in fs.find(memory_root) if ".liangxin-probe" in p]


def test_transient_storage_error_is_not_turned_into_a_permanent_one(tmp_path, monkeypatch):
    """A network blip while probing must propagate (Airflow retries it), not become a ValueError (fail at once)."""
    from airflow_provider_liangxin import results

    def flaky_open(*args, **kwargs):
        raise ConnectionResetError("storage went away")

    monkeypatch.setattr(results, "open", flaky_open, raising=False)
    with pytest.raises(ConnectionResetError):
        results.check_output_path(str(tmp_path / "out"))


def test_importing_the_module_loads_no_http_storage_or_airflow_library():
    """What the module docstring promises: the heavy imports happen inside the functions that need them."""
    heavy = ["httpx", "tenacity", "fsspec", "upath", "airflow", "aiohttp", "airflow_provider_liangxin.hooks"]
    code = f"import sys, airflow_provider_liangxin.results; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
