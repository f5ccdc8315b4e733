"""``liangxin-simulator``: run the simulated LiangXin API from a shell, a Makefile or an e2e harness.

Stops cleanly on SIGTERM or Ctrl-C: exit code 0, one "stopped" line, no traceback, the port released, so harnesses
can tell a crash from a normal stop. A port already in use (or any other reason it cannot listen) is one line on
stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from airflow_provider_liangxin.simulator.app import create_app
from airflow_provider_liangxin.simulator.config import (
    DEFAULT_DURATIONS,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    DEV_API_KEY,
    SimulatorConfig,
)
from airflow_provider_liangxin.simulator.faults import FaultConfig
from airflow_provider_liangxin.simulator.lifecycle import parse_durations
from airflow_provider_liangxin.simulator.server import bind_socket, simulator_of, url_for, uvicorn_config

_DEFAULT_DURATIONS = ",".join(f"{d:g}" for d in DEFAULT_DURATIONS)


def _faults(value: str) -> FaultConfig:
    """A JSON object given inline, or the path of a JSON file holding one."""
    text = value.strip()
    try:
        data: Any = json.loads(text) if text.startswith("{") else json.loads(Path(value).read_text())
        return FaultConfig.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"invalid --faults {value!r}: {exc}") from None


def _durations(value: str) -> tuple[float, float, float]:
    try:
        return parse_durations(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liangxin-simulator",
        description="A local, faithful simulator of the LiangXin Market API (createTask / recordInfo), "
        "with deterministic lifecycles, real PNG results, callbacks and fault injection. "
        "Prompt markers such as [sim:fail], [sim:429], [sim:drop] force one behaviour per request.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="port, 0 for any free one (default %(default)s)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"accepted Bearer key; repeat for several (default: the dev key {DEV_API_KEY})",
    )
    parser.add_argument(
        "--durations",
        type=_durations,
        default=DEFAULT_DURATIONS,
        metavar="W,Q,G",
        help=f"seconds spent waiting, queuing, generating (default {_DEFAULT_DURATIONS}); 0,0,0 succeeds at once",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        nargs="?",
        const=0.5,
        default=0.0,
        metavar="FRACTION",
        help="scale each phase of each task by a seeded random factor in [1-F, 1+F] (flag alone: 0.5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter (default %(default)s)")
    parser.add_argument("--db", metavar="PATH", help="SQLite file that keeps tasks across restarts")
    parser.add_argument("--faults", type=_faults, metavar="JSON_OR_FILE", help="fault config (JSON object or file)")
    parser.add_argument("--public-base-url", metavar="URL", help="base of result URLs (default: this server)")
    parser.add_argument(
        "--allow-insecure-callbacks",
        action="store_true",
        help="accept http://127.0.0.1 and http://localhost callBackUrls (local receivers)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="413 above this (default %(default)s)"
    )
    parser.add_argument(
        "--callback-attempts", type=int, default=3, help="deliveries per callback (default %(default)s)"
    )
    parser.add_argument(
        "--callback-backoff", type=float, default=0.5, help="first retry delay in s, doubling (default %(default)s)"
    )
    parser.add_argument(
        "--stop-on-stdin-close",
        action="store_true",
        help="stop when stdin closes, i.e. when the parent process holding the pipe exits or is killed "
        "(SimulatorProcess uses this so no simulator outlives its owner)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="info logs one line per request; warning keeps benchmarks quiet (default %(default)s)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        api_keys=tuple(args.api_keys or (DEV_API_KEY,)),
        durations=args.durations,
        jitter=args.jitter,
        seed=args.seed,
        db_path=args.db,
        faults=args.faults or FaultConfig(),
        public_base_url=args.public_base_url,
        allow_insecure_callbacks=args.allow_insecure_callbacks,
        max_body_bytes=args.max_body_bytes,
        callback_attempts=args.callback_attempts,
        callback_backoff=args.callback_backoff,
    )


class _Stopper:
    """Why and when to stop: SIGTERM, Ctrl-C, or the parent's end of stdin closing (``--stop-on-stdin-close``).

    Installed before anything slow happens, so a signal during startup stops the server as soon as it runs
    instead of killing the process with a traceback. uvicorn installs its own handlers while it serves and
    re-raises the signal it caught once it has shut down; landing here, that becomes a normal exit 0.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.server: uvicorn.Server | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # main() called from a thread (a test): signals are the embedding program's business
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop(signal.Signals(signum).name)

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        if self.server is not None:
            self.server.should_exit = True

    def watch_stdin(self) -> None:
        """Stop when stdin reaches EOF: the parent process that holds the pipe has exited or was killed."""

        def watch() -> None:
            # os.read on the raw fd: a daemon thread blocked inside sys.stdin's buffered reader would abort
            # the interpreter at exit (it cannot take the reader's lock).
            with contextlib.suppress(OSError):
                while os.read(0, 4096):
                    pass
            self.stop("stdin closed: the parent process is gone")

        threading.Thread(target=watch, name="liangxin-simulator-stdin", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    stopper = _Stopper()
    stopper.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        app = create_app(config)
        sock = bind_socket(args.host, args.port)
    except (OSError, OverflowError, sqlite3.Error) as exc:
        # One line, no traceback: the usual causes (port taken, bad host, unwritable --db) need no stack.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"liangxin-simulator: cannot start on {args.host}:{args.port}: {reason}", file=sys.stderr, flush=True)
        return 1
    port = int(sock.getsockname()[1])
    url = url_for(args.host, port)
    simulator_of(app).store.base_url = config.public_base_url or url
    server = stopper.server = uvicorn.Server(uvicorn_config(app, log_level=args.log_level))
    if stopper.reason:  # a signal arrived during startup
        server.should_exit = True
    if args.stop_on_stdin_close:
        stopper.watch_stdin()

    print(f"LiangXin simulator listening on {url}", flush=True)
    if DEV_API_KEY in config.api_keys:
        print(f"dev API key: {DEV_API_KEY}  (Authorization: Bearer {DEV_API_KEY})", flush=True)
    else:
        print(f"{len(config.api_keys)} API key(s) configured (not shown)", flush=True)
    server.run(sockets=[sock])
    sock.close()
    print(f"LiangXin simulator on {url} stopped ({stopper.reason or 'shut down'})", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
