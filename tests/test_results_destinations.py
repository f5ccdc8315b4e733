"""Where result downloads may go (results.py): public hosts, the API's own host, an explicit opt-in for private
ones, never link-local; checked on every redirect hop. Real loopback sockets throughout."""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import httpx
import pytest

from airflow_provider_liangxin._api import CREATE_TASK_PATH, RECORD_INFO_PATH, TaskRecord
from airflow_provider_liangxin.results import MAX_REDIRECTS, ResultDownloadError, address_problem, store_results
from tests.support.scripted_server import Reply, ScriptedServer
from tests.test_results import FAST_RETRY, TASK_ID, files_in, image, png_bytes, success_record

PUBLIC_API = "https://api.liangxin.example"


@pytest.fixture
def other_server():
    """A second loopback server: another private host:port than the trusted one."""
    with ScriptedServer() as server:
        yield server


def redirect_to(location: str) -> Reply:
    return Reply(302, b"", headers={"Location": location})


# ------------------------------------------------------------------------------------- private addresses


def test_a_loopback_result_url_that_is_not_the_api_host_is_refused(scripted_server, tmp_path):
    scripted_server.script(image(png_bytes()))
    url = f"{scripted_server.base_url}/r/0.png?sig=secret"

    with pytest.raises(ResultDownloadError, match="not a public address") as info:
        store_results(success_record([url]), str(tmp_path), trusted_base_url=PUBLIC_API, retry=FAST_RETRY)

    err = info.value
    assert (err.task_id, err.retryable) == (TASK_ID, False)
    assert "127.0.0.1" in str(err)
    assert "allow_private_result_hosts" in str(err)
    assert "secret" not in str(err)
    assert scripted_server.requests == []  # refused before connecting
    assert files_in(tmp_path) == []


def test_the_default_is_to_refuse_private_hosts(scripted_server, tmp_path):
    scripted_server.script(image(png_bytes()))
    with pytest.raises(ResultDownloadError, match="not a public address"):
        store_results(success_record([f"{scripted_server.base_url}/0.png"]), str(tmp_path))
    assert scripted_server.requests == []


def test_the_same_url_is_downloaded_with_allow_private_hosts(scripted_server, tmp_path):
    body = png_bytes()
    scripted_server.script(image(body))
    url = f"{scripted_server.base_url}/r/0.png"

    stored = store_results(success_record([url]), str(tmp_path), trusted_base_url=PUBLIC_API, allow_private_hosts=True)

    assert stored[0]["bytes"] == len(body)
    assert (tmp_path / f"{TASK_ID}_0.png").read_bytes() == body


def test_a_name_resolving_to_loopback_is_refused_like_the_address(scripted_server, tmp_path):
    """The host is resolved: ``localhost`` is not the trusted ``127.0.0.1`` and is private."""
    port = scripted_server.base_url.rsplit(":", 1)[1]
    scripted_server.script(image(png_bytes()))
    with pytest.raises(ResultDownloadError, match=r"'localhost' resolves to (127\.0\.0\.1|::1), not a public"):
        store_results(
            success_record([f"http://localhost:{port}/0.png"]), str(tmp_path), trusted_base_url=scripted_server.base_url
        )
    assert scripted_server.requests == []


def test_trust_is_for_the_api_host_and_port_only(scripted_server, other_server, tmp_path):
    other_server.script(image(png_bytes()))
    with pytest.raises(ResultDownloadError, match="not a public address"):
        store_results(
            success_record([f"{other_server.base_url}/0.png"]), str(tmp_path), trusted_base_url=scripted_server.base_url
        )
    assert other_server.requests == []


def test_allow_private_hosts_must_be_a_real_bool(scripted_server, tmp_path):
    with pytest.raises(ValueError, match="allow_private_hosts must be True or False"):
        store_results(success_record([f"{scripted_server.base_url}/0.png"]), str(tmp_path), allow_private_hosts="false")  # type: ignore[arg-type]
    assert scripted_server.requests == []


# ------------------------------------------------------------------------------------------- link-local


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://169.254.170.2/v2/credentials",
        "http://[fe80::1]/x.png",
        "http://[::ffff:169.254.169.254]/x.png",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
    ],
)
def test_link_local_and_metadata_addresses_are_refused_even_when_allowed(tmp_path, url):
    started = time.monotonic()
    with pytest.raises(ResultDownloadError, match="link-local or cloud-metadata address") as info:
        store_results(
            success_record([url]),
            str(tmp_path),
            allow_private_hosts=True,
            trusted_base_url=url,  # not even the API's own host may be a metadata endpoint
            retry=FAST_RETRY,
            timeout=30,
        )
    assert info.value.retryable is False
    assert time.monotonic() - started < 2  # decided before connecting (a connect would wait for the timeout)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("address", "private_ok", "always_refused"),
    [
        ("8.8.8.8", True, False),
        ("2606:4700:4700::1111", True, False),
        ("127.0.0.1", False, False),
        ("::1", False, False),
        ("10.1.2.3", False, False),
        ("192.168.0.10", False, False),
        ("172.16.0.1", False, False),
        ("100.64.0.1", False, False),  # carrier-grade NAT
        ("0.0.0.0", False, False),
        ("fc00::1", False, False),
        ("::ffff:127.0.0.1", False, False),
        ("::ffff:8.8.8.8", True, False),  # judged as the IPv4 address it maps
        ("224.0.0.1", False, False),
        ("169.254.169.254", False, True),
        ("fe80::abcd", False, True),
        ("::ffff:169.254.169.254", False, True),
        ("64:ff9b::a9fe:a9fe", False, True),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", False, True),  # 6to4 of 169.254.169.254
        ("64:ff9b::7f00:1", False, False),  # NAT64 of 127.0.0.1
    ],
)
def test_address_policy(address, private_ok, always_refused):
    ip = ipaddress.ip_address(address)
    assert (address_problem(ip, allow_private=False) is None) is private_ok
    assert (address_problem(ip, allow_private=True) is None) is not always_refused


# -------------------------------------------------------------------------------------------- redirects


def test_a_redirect_from_the_api_host_to_another_private_host_is_refused(scripted_server, other_server, tmp_path):
    other_server.script(image(png_bytes()))
    scripted_server.script(redirect_to(f"{other_server.base_url}/stolen.png?token=t0p"))

    with pytest.raises(ResultDownloadError, match=r"redirect 1 to .*not a public address") as info:
        store_results(
            success_record([f"{scripted_server.base_url}/short"]),
            str(tmp_path),
            trusted_base_url=scripted_server.base_url,
            retry=FAST_RETRY,
        )

    assert "t0p" not in str(info.value)
    assert [r.path for r in scripted_server.requests] == ["/short"]
    assert other_server.requests == []  # never contacted
    assert files_in(tmp_path) == []


def test_a_redirect_from_an_allowed_host_to_a_metadata_address_is_refused(scripted_server, tmp_path):
    scripted_server.script(redirect_to("http://169.254.169.254/latest/meta-data/"))
    with pytest.raises(
        ResultDownloadError, match=r"redirect 1 to http://169\.254\.169\.254/latest/meta-data/: .*link-local"
    ):
        store_results(
            success_record([f"{scripted_server.base_url}/short"]),
            str(tmp_path),
            allow_private_hosts=True,
            retry=FAST_RETRY,
        )
    assert len(scripted_server.requests) == 1


def test_a_redirect_to_a_non_http_url_is_refused(scripted_server, tmp_path):
    scripted_server.script(redirect_to("file:///etc/passwd"))
    with pytest.raises(ResultDownloadError, match="not an http"):
        store_results(
            success_record([f"{scripted_server.base_url}/short"]),
            str(tmp_path),
            trusted_base_url=scripted_server.base_url,
            retry=FAST_RETRY,
        )
    assert files_in(tmp_path) == []


def test_relative_redirects_within_the_allowed_host_are_followed(scripted_server, tmp_path):
    body = png_bytes()
    scripted_server.script(redirect_to("/cdn/a"), redirect_to("b.png"), image(body))
    stored = store_results(
        success_record([f"{scripted_server.base_url}/short"]), str(tmp_path), trusted_base_url=scripted_server.base_url
    )
    assert [r.path for r in scripted_server.requests] == ["/short", "/cdn/a", "/cdn/b.png"]
    assert stored[0]["bytes"] == len(body)


def test_a_redirect_loop_is_a_typed_error_and_not_retried(scripted_server, tmp_path):
    scripted_server.script(*[redirect_to("/loop")] * (MAX_REDIRECTS + 5))
    with pytest.raises(ResultDownloadError, match=f"more than {MAX_REDIRECTS} redirects") as info:
        store_results(
            success_record([f"{scripted_server.base_url}/loop"]),
            str(tmp_path),
            trusted_base_url=scripted_server.base_url,
            retry=FAST_RETRY,
        )
    assert info.value.retryable is False
    assert len(scripted_server.requests) == MAX_REDIRECTS + 1
    assert files_in(tmp_path) == []


# ------------------------------------------------------------------------------------------ other checks


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:image/png;base64,iVBORw0KGgo=", "ftp://cdn/x.png"])
def test_result_urls_that_are_not_http_are_refused(tmp_path, url):
    with pytest.raises(ResultDownloadError, match="not an http"):
        store_results(success_record([url]), str(tmp_path), allow_private_hosts=True)
    assert files_in(tmp_path) == []


def test_an_unresolvable_host_is_a_transient_failure(tmp_path):
    with pytest.raises(ResultDownloadError, match=r"cannot resolve host 'no-such-host\.invalid'") as info:
        store_results(success_record(["https://no-such-host.invalid/0.png"]), str(tmp_path), retry=FAST_RETRY)
    assert info.value.retryable is True
    assert "gave up after 3 attempts" in str(info.value)


def test_the_simulator_as_the_api_base_url_keeps_working(simulator, tmp_path):
    """The simulator is on loopback: trusted as the API host, no settings needed; other loopback ports are not."""
    headers = {"Authorization": f"Bearer {simulator.api_key}"}
    body = {"model": "z-image", "input": {"prompt": "a lighthouse", "seed": 3}}
    with httpx.Client(base_url=simulator.base_url, headers=headers, timeout=10) as client:
        task_id = client.post(CREATE_TASK_PATH, json=body).json()["data"]["taskId"]
        deadline = time.monotonic() + 10
        while (data := client.get(RECORD_INFO_PATH, params={"taskId": task_id}).json()["data"])["state"] != "success":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    record = TaskRecord.from_api(data).to_dict()
    assert record["result_urls"][0].startswith(simulator.base_url)

    stored = store_results(record, str(tmp_path), trusted_base_url=simulator.base_url)

    assert stored[0]["content_type"] == "image/png"
    assert (tmp_path / f"{task_id}_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / f"{task_id}_0.json").read_text())["task_id"] == task_id
    with pytest.raises(ResultDownloadError, match="not a public address"):
        store_results(record, str(tmp_path / "untrusted"))


def test_ipv6_loopback_is_private_too(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with pytest.raises(ResultDownloadError, match=r"::1, not a public address"):
        store_results(success_record(["http://[::1]:9/0.png"]), str(tmp_path), retry=FAST_RETRY)
