"""The command line: flags, help, and a subprocess that stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_liangxin._api import CREATE_TASK_PATH, RECORD_INFO_PATH
from airflow_provider_liangxin.simulator import DEV_API_KEY, FaultConfig, SimulatorProcess
from airflow_provider_liangxin.simulator.cli import build_parser, config_from_args


def test_help_lists_the_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_liangxin.simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--api-key",
        "--durations",
        "--jitter",
        "--db",
        "--faults",
        "--public-base-url",
        "--allow-insecure-callbacks",
        "--max-body-bytes",
        "--stop-on-stdin-close",
        "--log-level",
    ):
        assert flag in result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("liangxin-simulator")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)

    assert result.returncode == 0
    assert "liangxin-simulator" in result.stdout


def test_flags_build_the_config(tmp_path: Path) -> None:
    faults_file = tmp_path / "faults.json"
    faults_file.write_text(json.dumps({"recordinfo_error_rate": 0.2, "seed": 9}))
    parser = build_parser()

    args = parser.parse_args(
        [
            "--api-key",
            "sk-a",
            "--api-key",
            "sk-b",
            "--durations",
            "0.2,0.2,0.6",
            "--jitter",
            "--db",
            str(tmp_path / "x.db"),
            "--faults",
            str(faults_file),
            "--public-base-url",
            "https://cdn.example/",
            "--allow-insecure-callbacks",
            "--max-body-bytes",
            "2048",
        ]
    )
    config = config_from_args(args)

    assert config.api_keys == ("sk-a", "sk-b")
    assert config.durations == (0.2, 0.2, 0.6)
    assert config.jitter == 0.5
    assert config.faults == FaultConfig(recordinfo_error_rate=0.2, seed=9)
    assert config.public_base_url == "https://cdn.example"
    assert config.allow_insecure_callbacks
    assert config.max_body_bytes == 2048
    assert config_from_args(parser.parse_args(["--faults", '{"drop_rate": 0.1}'])).faults.drop_rate == 0.1
    assert config_from_args(parser.parse_args([])).api_keys == (DEV_API_KEY,)


def test_bad_flags_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (["--durations", "1,2"], ["--faults", '{"nope": 1}']):
        with pytest.raises(SystemExit) as raised:
            parser.parse_args(argv)
        assert raised.value.code == 2


def test_subprocess_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "sim.log"
    with SimulatorProcess(["--durations", "0,0,0"], log_path=log) as process:
        headers = {"Authorization": f"Bearer {DEV_API_KEY}"}
        created = httpx.post(
            f"{process.base_url}{CREATE_TASK_PATH}",
            headers=headers,
            json={"model": "z-image", "input": {"prompt": "from a subprocess"}},
        )
        task_id = created.json()["data"]["taskId"]
        data = httpx.get(f"{process.base_url}{RECORD_INFO_PATH}", params={"taskId": task_id}, headers=headers)
        assert data.json()["data"]["state"] == "success"
        exit_code = process.stop()

    output = log.read_text()
    assert exit_code == 0
    assert f"listening on {process.base_url}" in output
    assert DEV_API_KEY in output  # the documented dev key is printed at startup...
    assert f"POST {CREATE_TASK_PATH} 200 task={task_id}" in output  # ...and one line per request


def test_custom_keys_are_never_printed(tmp_path: Path) -> None:
    log = tmp_path / "sim.log"
    secret = "sk-do-not-print-me"
    with SimulatorProcess(["--api-key", secret], api_key=secret, log_path=log) as process:
        httpx.get(
            f"{process.base_url}{RECORD_INFO_PATH}",
            params={"taskId": "task_x_1"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert process.stop() == 0

    output = log.read_text()
    assert secret not in output
    assert "GET /api/v1/jobs/recordInfo 404" in output
