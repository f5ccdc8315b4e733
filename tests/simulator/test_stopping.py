"""Starting and stopping for real: a busy port, SIGTERM and Ctrl-C to the CLI, and owners of a
``SimulatorProcess`` or ``run_simulator`` that are interrupted or killed. Every test checks that no process and no
listening port remain."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from airflow_provider_liangxin.simulator import SimulatorProcess, free_port

PYTHON = [sys.executable, "-m", "airflow_provider_liangxin.simulator"]
HOST = "127.0.0.1"
STOP_WITHIN = 5.0  # seconds; uvicorn's graceful shutdown is capped at 3


def port_is_free(port: int) -> bool:
    """Nothing listens on the port (connections in TIME_WAIT do not count, as for any restarted server)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            sock.listen()
        except OSError:
            return False
    return True


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, timeout: float = STOP_WITHIN) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - started


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "the simulator exited while starting"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{HOST}:{port}/_sim/health", timeout=1).status_code == 200:
                return
        assert time.monotonic() < deadline, "the simulator did not start"
        time.sleep(0.05)


@contextlib.contextmanager
def started(argv: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """A subprocess that is killed (with its children) if the test fails before it ends by itself."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
            process.kill()
        process.communicate(timeout=10)


# ------------------------------------------------------------------------------------------------- CLI


def test_a_busy_port_is_one_line_on_stderr_and_exit_1() -> None:
    with contextlib.closing(socket.socket()) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*PYTHON, "--port", str(port)], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"liangxin-simulator: cannot start on {HOST}:{port}: Address already in use"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unwritable_db_is_one_line_too(tmp_path: Path) -> None:
    result = subprocess.run(
        [*PYTHON, "--port", "0", "--db", str(tmp_path / "missing-dir" / "x.db")],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot start" in result.stderr


def test_an_out_of_range_port_is_a_usage_error() -> None:
    result = subprocess.run([*PYTHON, "--port", "70000"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "port must be in 0..65535" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_cli_stops_promptly_and_cleanly_on_a_signal(sig: signal.Signals) -> None:
    port = free_port()
    with started([*PYTHON, "--port", str(port), "--log-level", "warning"]) as process:
        wait_healthy(port, process)
        with httpx.Client() as keep_alive:  # an open idle connection must not hold the shutdown up
            assert keep_alive.get(f"http://{HOST}:{port}/_sim/health").status_code == 200
            process.send_signal(sig)
            stdout, stderr = process.communicate(timeout=STOP_WITHIN)

    assert process.returncode == 0
    assert stdout.splitlines()[-1] == f"LiangXin simulator on http://{HOST}:{port} stopped ({sig.name})"
    assert "Traceback" not in stdout + stderr
    assert stderr == ""
    assert port_is_free(port)
    assert gone(process.pid)


def test_the_cli_stops_when_its_stdin_closes() -> None:
    port = free_port()
    argv = [*PYTHON, "--port", str(port), "--log-level", "warning", "--stop-on-stdin-close"]
    with started(argv, stdin=subprocess.PIPE) as process:
        wait_healthy(port, process)
        stdout, _ = process.communicate(timeout=STOP_WITHIN)  # closes our end of its stdin, then waits

    assert process.returncode == 0
    assert "stopped (stdin closed: the parent process is gone)" in stdout
    assert port_is_free(port)


# ------------------------------------------------------------------------------- SimulatorProcess owners

OWNER = """
import signal, sys
from airflow_provider_liangxin.simulator import SimulatorProcess

try:
    with SimulatorProcess(["--log-level", "warning"], log_path=sys.argv[1]) as sim:
        print(sim.process.pid, sim.port, flush=True)
        signal.pause()
except KeyboardInterrupt:
    print("owner: interrupted, simulator stopped with exit code", sim.process.returncode, flush=True)
"""


@pytest.mark.parametrize(
    ("sig", "how_it_stops"),
    [
        (signal.SIGTERM, "stopped (stdin closed: the parent process is gone)"),
        (signal.SIGKILL, "stopped (stdin closed: the parent process is gone)"),
        (signal.SIGINT, "stopped (SIGTERM)"),  # KeyboardInterrupt -> __exit__ -> stop() sends SIGTERM
    ],
    ids=["SIGTERM", "SIGKILL", "SIGINT"],
)
def test_no_simulator_outlives_its_simulator_process_owner(
    tmp_path: Path, sig: signal.Signals, how_it_stops: str
) -> None:
    log = tmp_path / "sim.log"
    with started([sys.executable, "-c", OWNER, str(log)]) as owner:
        assert owner.stdout is not None
        child_pid, port = (int(v) for v in owner.stdout.readline().split())
        assert psutil.Process(child_pid).ppid() == owner.pid
        owner.send_signal(sig)
        owner.wait(STOP_WITHIN)
        elapsed = wait_until(lambda: gone(child_pid) and port_is_free(port))
        out = owner.stdout.read()

    assert elapsed < STOP_WITHIN
    assert log.read_text().strip().splitlines()[-1].endswith(how_it_stops)
    if sig == signal.SIGINT:
        assert out.strip() == "owner: interrupted, simulator stopped with exit code 0"


def test_a_temporary_log_is_removed_after_a_clean_stop() -> None:
    process = SimulatorProcess(["--log-level", "warning"]).start()
    log = process.log_path
    assert log.exists()
    assert process.stop() == 0
    assert not log.exists()


def test_a_simulator_that_cannot_start_keeps_its_log_and_leaves_no_process() -> None:
    with contextlib.closing(socket.socket()) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        process = SimulatorProcess(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="exited with 1"):
            process.start()
    try:
        assert process.process is not None
        assert gone(process.process.pid)
        assert "Address already in use" in process.log_path.read_text()
    finally:
        process.log_path.unlink()


# ----------------------------------------------------------------------------------- run_simulator owners

IN_PROCESS = """
import logging, signal, threading
from airflow_provider_liangxin.simulator import run_simulator

logging.basicConfig(level="INFO", format="%(message)s")

try:
    with run_simulator() as sim:
        print(sim.port, flush=True)
        signal.pause()
except KeyboardInterrupt:
    pass
print("threads left:", [t.name for t in threading.enumerate() if t is not threading.main_thread()], flush=True)
"""


def test_ctrl_c_in_a_run_simulator_block_stops_the_server_on_the_way_out() -> None:
    with started([sys.executable, "-c", IN_PROCESS]) as owner:
        assert owner.stdout is not None
        port = int(owner.stdout.readline())
        owner.send_signal(signal.SIGINT)
        out, err = owner.communicate(timeout=STOP_WITHIN)

    assert owner.returncode == 0
    assert out.strip() == "threads left: []"
    assert err.strip().splitlines() == [f"LiangXin simulator on http://{HOST}:{port} stopped"]
    assert port_is_free(port)


def test_sigterm_to_a_run_simulator_process_leaves_no_port() -> None:
    with started([sys.executable, "-c", IN_PROCESS]) as owner:
        assert owner.stdout is not None
        port = int(owner.stdout.readline())
        owner.send_signal(signal.SIGTERM)
        owner.wait(STOP_WITHIN)

    assert owner.returncode == -signal.SIGTERM
    assert port_is_free(port)
    assert gone(owner.pid)
