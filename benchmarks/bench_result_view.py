"""The result view's batch grid: how long 200 thumbnails take, cold and cached, against loading the full images.

Not a test: it prints a table and exits 0 unless a request failed. In-process (the plugin's real FastAPI app, the
real thumbnail code and cache, files on local disk), with the task instance and its XComs given directly instead
of read from Airflow's database, so it measures the view's own cost: reading and hashing each stored file,
decoding, scaling and encoding the thumbnail. A browser fetches at most 6 images at once from one host (HTTP/1.1),
so the grid is requested with 6 at a time.

Sources: 200 images of 2048 x 2048 (what LiangXin's 4K models return), as JPEG and as PNG (PNG cannot be decoded
at reduced scale, so it is the slow case).

    .venv/bin/python benchmarks/bench_result_view.py [--n 200] [--side 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from airflow_provider_liangxin._airflow_compat import TaskInstanceFacts  # noqa: E402
from airflow_provider_liangxin.plugins.receiver import create_app  # noqa: E402
from airflow_provider_liangxin.plugins.result_routes import ResultViewService, add_result_routes  # noqa: E402
from airflow_provider_liangxin.result_view import ThumbnailCache  # noqa: E402

BROWSER_CONNECTIONS = 6
#: Grid cells on a first screen (6 columns x 4 rows on a 1280 px wide window).
FIRST_SCREEN = 24


class Internals:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def task_instance(self, *_: Any) -> TaskInstanceFacts:
        return TaskInstanceFacts("success", "LiangxinBatchCreateTaskOperator", 1, None, None, None)

    def xcoms(self, *_: Any) -> dict[str, Any]:
        return {"return_value": self.items}


def make_images(directory: Path, n: int, side: int, fmt: str) -> list[dict[str, Any]]:
    from PIL import Image

    rng = random.Random(7)
    base = Image.effect_noise((side, side), 60).convert("RGB")
    items = []
    for i in range(n):
        tint = Image.new("RGB", (side, side), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        image = Image.blend(base, tint, 0.5)
        out = io.BytesIO()
        image.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
        data = out.getvalue()
        ext = "jpg" if fmt == "JPEG" else "png"
        path = directory / f"task_{fmt.lower()}_{i}_0.{ext}"
        path.write_bytes(data)
        stored = {"index": 0, "path": path.as_uri(), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        items.append({"index": i, "model": "seedream-v4-5", "task_id": f"t{i}", "state": "success", "stored": [stored]})
    return items


async def grid(client: httpx.AsyncClient, items: range, thumb: bool) -> tuple[float, int, int]:
    """The items' images, ``BROWSER_CONNECTIONS`` at a time: (seconds, bytes, images)."""
    slots = asyncio.Semaphore(BROWSER_CONNECTIONS)
    total = 0

    async def one(i: int) -> None:
        nonlocal total
        params = {"dag_id": "d", "run_id": "r", "task_id": "t", "item": i, "index": 0}
        if thumb:
            params["thumb"] = 1
        async with slots:
            response = await client.get("/v1/results/file", params=params)
        response.raise_for_status()
        total += len(response.content)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in items))
    return time.perf_counter() - started, total, len(items)


async def measure(items: list[dict[str, Any]]) -> dict[str, tuple[float, int, int]]:
    service = ResultViewService(Internals(items), ThumbnailCache())  # type: ignore[arg-type]
    app = create_app(None, lambda a: add_result_routes(a, service, []))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://view", timeout=300) as client:
        page = await client.get("/v1/results", params={"dag_id": "d", "run_id": "r", "task_id": "t"})
        page.raise_for_status()
        every, first = range(len(items)), range(min(FIRST_SCREEN, len(items)))
        return {
            "full images": await grid(client, every, thumb=False),
            # The grid's images load lazily: the first screen is what the user waits for.
            f"thumbs, first {len(first)}": await grid(client, first, thumb=True),
            "thumbs, cold, all": await grid(client, range(len(first), len(items)), thumb=True),
            "thumbs, cached, all": await grid(client, every, thumb=True),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--side", type=int, default=2048)
    args = parser.parse_args()
    print(
        f"{args.n} images of {args.side} x {args.side}, {BROWSER_CONNECTIONS} requests at a time, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("source | what                | images | seconds | per image | MB sent")
    print("-------+---------------------+--------+---------+-----------+--------")
    for fmt in ("JPEG", "PNG"):
        with tempfile.TemporaryDirectory(prefix="liangxin-bench-view-") as tmp:
            items = make_images(Path(tmp), args.n, args.side, fmt)
            results = asyncio.run(measure(items))
        for what, (seconds, sent, count) in results.items():
            print(
                f"{fmt:<6} | {what:<19} | {count:>6} | {seconds:7.2f} | {1000 * seconds / count:6.1f} ms | "
                f"{sent / 1e6:7.1f}"
            )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other jobs share the cores; in-process, no network)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
