"""Throughput of the LiangXin simulator's recordInfo route with thousands of live tasks.

Starts the simulator as a subprocess on loopback (INFO request log off), creates N tasks that stay live for
the whole run, then sends a bounded number of recordInfo requests for random task ids from a fixed number of
concurrent aiohttp workers, and prints requests/s and latency percentiles. Not a test: it never fails, it
prints a table (target: >= 1,000 recordInfo req/s with 5,000 live tasks on a 2-core machine).

    .venv/bin/python benchmarks/bench_simulator.py [--tasks 5000] [--requests 20000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp

from airflow_provider_liangxin._api import CREATE_TASK_PATH, RECORD_INFO_PATH
from airflow_provider_liangxin.simulator import DEV_API_KEY, SimulatorProcess


async def _run_workers(
    total: int, concurrency: int, call: Callable[[int], Awaitable[int]]
) -> tuple[float, list[float], Counter[int]]:
    """Run ``call(i)`` for i in range(total) from ``concurrency`` workers; returns wall time, latencies, statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_index = iter(range(total))

    async def worker() -> None:
        for i in next_index:
            started = time.perf_counter()
            try:
                status = await call(i)
            except aiohttp.ClientError:
                status = -1
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _row(name: str, wall: float, latencies: list[float], statuses: Counter[int]) -> str:
    rate = len(latencies) / wall
    p50, p99 = _percentile(latencies, 0.50) * 1000, _percentile(latencies, 0.99) * 1000
    mean = statistics.fmean(latencies) * 1000
    codes = ", ".join(f"{code}: {count}" for code, count in sorted(statuses.items()))
    return f"| {name} | {len(latencies)} | {rate:,.0f} | {mean:.2f} | {p50:.2f} | {p99:.2f} | {codes} |"


async def bench(base_url: str, tasks: int, requests: int, concurrency: int) -> None:
    headers = {"Authorization": f"Bearer {DEV_API_KEY}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url, headers=headers, connector=connector) as session:
        task_ids: list[str] = []

        async def create(i: int) -> int:
            body = {"model": "seedream-v4-5", "input": {"prompt": f"benchmark image {i}", "seed": i}}
            async with session.post(CREATE_TASK_PATH, json=body) as response:
                payload = await response.json()
                if response.status == 200:
                    task_ids.append(payload["data"]["taskId"])
                return response.status

        create_result = await _run_workers(tasks, concurrency, create)
        rng = random.Random(0)
        picks = [rng.choice(task_ids) for _ in range(requests)]

        async def record_info(i: int) -> int:
            async with session.get(RECORD_INFO_PATH, params={"taskId": picks[i]}) as response:
                await response.read()
                return response.status

        await _run_workers(min(1000, requests), concurrency, record_info)  # warm-up, not reported
        poll_result = await _run_workers(requests, concurrency, record_info)

    print(f"\nLiangXin simulator, {len(task_ids)} live tasks, concurrency {concurrency}, aiohttp client\n")
    print("| route | requests | req/s | mean ms | p50 ms | p99 ms | statuses |")
    print("|---|---|---|---|---|---|---|")
    print(_row("createTask", *create_result))
    print(_row("recordInfo", *poll_result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    # Long phases keep every task live (waiting/queuing/generating) for the whole run.
    server_args = ["--log-level", "warning", "--durations", "5,5,3600"]
    with SimulatorProcess(server_args) as simulator:
        print(f"simulator pid {simulator.process.pid if simulator.process else '?'} at {simulator.base_url}")
        asyncio.run(bench(simulator.base_url, args.tasks, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
