"""What a deferred LiangXin task costs the triggerer: trigger start, and steady polling beside HttpEventTrigger.

Not a test: it prints tables of numbers, ratios and PASS/MISS against the budgets, and always exits 0.

1. Start: K triggers whose first poll is pending (a loopback server that never answers). Measured twice in a
   fresh process after one warm-up trigger (whose one-time costs are reported apart):
   ``hook enter``  - ``LiangxinTaskTrigger(...)`` + ``async with LiangxinHook(...)`` entered: the connection
                     resolved from ``AIRFLOW_CONN_LIANGXIN_DEFAULT`` through ``get_async_connection`` and the
                     shared aiohttp session acquired;
   ``run()``       - ``trigger.run()`` until every trigger has entered its hook and the first polls are in
                     flight (the INFO line, and the first request of up to 100 of them, included).
   CPU from ``time.process_time``; memory from tracemalloc (a separate pass) and current RSS; SSL contexts
   counted by wrapping ``ssl.create_default_context`` and ``ssl.SSLContext.__new__``.
2. Polling: N triggers polling every POLL s a recordInfo-shaped server (Starlette/uvicorn in its own process)
   where task i finishes 10 + 10*i/N s after the start; one process per row, one asyncio loop, as in
   /work/shared/bench/bench_peer.py. CPU of the polling process per poll, loop lag (10 ms sleeps), RSS peak
   growth per trigger, and the garbage collector: full (gen 2) collections, their longest pause, and the
   cyclic garbage collected per poll (objects only a collection frees). All N start in one loop turn here
   (Airflow's triggerer starts one per turn), so "lag max after 3 s" shows the steady state apart.
3. A summary with PASS/MISS per budget.

``--preload mod1,mod2`` imports modules in the measured processes first, e.g. a candidate patch for an A/B run
(``PYTHONPATH=/path/to/patched/copy`` works too: it shadows the editable install).

Logging stays as in production (the trigger's INFO lines go through Airflow's structlog to stdout); the measured
processes write stdout to a log file (``--log``) so the tables stay readable.

    .venv/bin/python benchmarks/bench_trigger.py [--start 500] [--sizes 500,5000] [--peer-sizes 500,5000]
        [--poll 1] [--max-run 70] [--log /tmp/bench_trigger.log] [--preload module,...]

Whole run on a 2-core machine: ~2 min.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import sys
import time
from typing import Any

RECORD_INFO = "/api/v1/jobs/recordInfo"
BASE_S, SPREAD_S = 10.0, 10.0  # task i finishes BASE_S + SPREAD_S * i / N seconds after the polling starts
LOG_FILE_DEFAULT = "/tmp/bench_trigger.log"

BUDGET_START_CPU_MS = 1.0
BUDGET_START_KB = 50.0
BUDGET_POLL_CPU_MS_500 = 1.0
GOAL_POLL_CPU_MS = 0.6
GOAL_RATIO = 3.0
GOAL_LAG_MS_5000 = 50.0


# ----------------------------------------------------------------------------------- the server (own process)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"bench server on port {port} did not start")


def _serve(port: int, n: int, t0, hits, hold: bool) -> None:
    """recordInfo-shaped JSON. ``hold``: never answer (first polls stay pending). ``t0``: 0 until polling starts."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def record(request):
        with hits.get_lock():
            hits.value += 1
        if hold:
            await asyncio.Event().wait()
        tid = request.query_params["taskId"]
        start = t0.value
        done = start > 0 and time.time() >= start + BASE_S + SPREAD_S * int(tid[1:]) / n
        state = "success" if done else "generating"
        now_ms = int(time.time() * 1000)
        return JSONResponse(
            {
                "code": 200,
                "msg": "success",
                "data": {
                    "taskId": tid,
                    "model": "seedream-v4-5",
                    "state": state,
                    "param": "{}",
                    "resultJson": json.dumps({"resultUrls": ["https://cdn.example/a.png"]}) if done else "",
                    "failCode": "",
                    "failMsg": "",
                    "createTime": now_ms,
                    "updateTime": now_ms,
                },
            }
        )

    app = Starlette(routes=[Route(RECORD_INFO, record)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", backlog=8192)


class _Server:
    def __init__(self, ctx: Any, n: int, hold: bool = False) -> None:
        self.port = _free_port()
        self.t0 = ctx.Value("d", 0.0)
        self.hits = ctx.Value("q", 0)
        self.proc = ctx.Process(target=_serve, args=(self.port, n, self.t0, self.hits, hold), daemon=True)

    def __enter__(self) -> _Server:
        self.proc.start()
        _wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()  # uvicorn drains gracefully, and held requests never end: kill after a grace period
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# --------------------------------------------------------------------------------- helpers in measured processes


def _quiet_stdout(log_file: str) -> None:
    """Production logging, but its stdout (structlog) goes to a file."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    os.dup2(fd, 1)
    os.close(fd)


def _rss_kb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def _set_conn_env(port: int) -> None:
    os.environ["AIRFLOW_CONN_LIANGXIN_DEFAULT"] = json.dumps(
        {"conn_type": "liangxin", "host": f"http://127.0.0.1:{port}", "password": "sk-bench"}
    )
    os.environ["AIRFLOW_CONN_HTTP_DEFAULT"] = f"http://127.0.0.1:{port}"


class _GcWatch:
    """Counts collections per generation, the longest full-collection pause and the objects collected."""

    def __init__(self) -> None:
        import gc

        self.gc = gc
        self.gen2 = 0
        self.gen2_max_ms = 0.0
        self.total_ms = 0.0
        self.collected = 0
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        ms = (time.perf_counter() - self._t) * 1000
        self.total_ms += ms
        self.collected += info["collected"]
        if info["generation"] == 2:
            self.gen2 += 1
            self.gen2_max_ms = max(self.gen2_max_ms, ms)

    def __enter__(self) -> _GcWatch:
        self.gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.gc.callbacks.remove(self)


async def _lag_monitor(stop: asyncio.Event, lags: list[tuple[float, float]], t0: float) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((t - t0, time.perf_counter() - t - 0.01))


def _liangxin_trigger(i: int, poll: float) -> Any:
    from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger

    return LiangxinTaskTrigger(
        liangxin_task_id=f"t{i}", liangxin_conn_id="liangxin_default", poll_interval=poll, deadline=time.time() + 3600
    )


#: HttpEventTrigger's response check. The trigger imports it by dotted path and *reloads* that module on every
#: poll, so it lives in a module of its own, as small as the anchor's bench_check.py (written to a temp dir).
CHECK_MODULE = "bench_trigger_check"
CHECK_SOURCE = """import json


async def check(response) -> bool:
    return json.loads(response.text)["data"]["state"] in ("success", "fail")
"""


def _install_check_module() -> str:
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"bench_trigger_{os.getpid()}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, CHECK_MODULE + ".py"), "w") as f:
        f.write(CHECK_SOURCE)
    sys.path.insert(0, folder)
    return folder


# ------------------------------------------------------------------------------------------- 1. start cost


def _start_child(port: int, k: int, log_file: str, preload: list[str], out: Any) -> None:
    _quiet_stdout(log_file)
    _set_conn_env(port)
    _preload(preload)
    import gc
    import ssl
    import tracemalloc

    from airflow_provider_liangxin.hooks.liangxin import SESSION_POOL, LiangxinHook
    from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger  # noqa: F401

    counts = {"create_default_context": 0, "SSLContext": 0}
    orig_cdc, orig_new = ssl.create_default_context, ssl.SSLContext.__new__

    def counting_cdc(*a: Any, **kw: Any) -> Any:
        counts["create_default_context"] += 1
        return orig_cdc(*a, **kw)

    def counting_new(cls: Any, *a: Any, **kw: Any) -> Any:
        counts["SSLContext"] += 1
        return orig_new(cls, *a, **kw)

    ssl.create_default_context = counting_cdc
    ssl.SSLContext.__new__ = staticmethod(counting_new)  # type: ignore[method-assign]
    res: dict[str, Any] = {"k": k}

    async def consume(trigger: Any) -> None:
        async for _ in trigger.run():
            return

    def ssl_total() -> int:  # SSLContext constructions (create_default_context makes one itself)
        return counts["SSLContext"]

    async def settle(users: int) -> None:
        for _ in range(2000):  # until every trigger holds the shared session
            if SESSION_POOL.users(True) + SESSION_POOL.users(False) >= users:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)  # first requests out

    async def main() -> None:
        loop_tasks: list[asyncio.Task[None]] = []
        # warm-up: one trigger pays the once-per-process costs (secrets backend, SSL context, session, logging)
        s0, c0 = ssl_total(), time.process_time()
        loop_tasks.append(asyncio.create_task(consume(_liangxin_trigger(0, 1.0))))
        await settle(1)
        res["first_cpu_ms"] = (time.process_time() - c0) * 1000
        res["ssl_first"] = ssl_total() - s0
        res["cdc_first"] = counts["create_default_context"]

        # (a) construction + hook entered (connection resolved, session acquired), K at once
        o0 = len(gc.get_objects())
        s0, r0, c0 = ssl_total(), _rss_kb(), time.process_time()

        async def enter(i: int) -> LiangxinHook:
            trig = _liangxin_trigger(i, 1.0)
            hook = LiangxinHook(trig.liangxin_conn_id, timeout=trig.request_timeout, retry=trig.retry)
            await hook.__aenter__()
            return hook

        hooks = await asyncio.gather(*(enter(i) for i in range(1, k + 1)))
        res["enter_cpu_ms"] = (time.process_time() - c0) * 1000 / k
        res["enter_rss_kb"] = (_rss_kb() - r0) / k
        res["enter_objs"] = (len(gc.get_objects()) - o0) / k
        res["ssl_enter"] = ssl_total() - s0
        for h in hooks:
            await h.__aexit__(None, None, None)
        del hooks

        # (b) trigger.run() until the first poll is pending, K at once
        o0 = len(gc.get_objects())
        s0, r0, c0 = ssl_total(), _rss_kb(), time.process_time()
        loop_tasks += [asyncio.create_task(consume(_liangxin_trigger(i, 1.0))) for i in range(1, k + 1)]
        await settle(k + 1)
        res["run_cpu_ms"] = (time.process_time() - c0) * 1000 / k
        res["run_rss_kb"] = (_rss_kb() - r0) / k
        res["run_objs"] = (len(gc.get_objects()) - o0) / k
        res["ssl_run"] = ssl_total() - s0

        # memory passes under tracemalloc (its overhead spoils CPU, so apart)
        tracemalloc.start()
        m0 = tracemalloc.get_traced_memory()[0]
        hooks = await asyncio.gather(*(enter(i) for i in range(k + 1, 2 * k + 1)))
        res["enter_kb"] = (tracemalloc.get_traced_memory()[0] - m0) / 1024 / k
        for h in hooks:
            await h.__aexit__(None, None, None)
        del hooks
        m0 = tracemalloc.get_traced_memory()[0]
        loop_tasks += [asyncio.create_task(consume(_liangxin_trigger(i, 1.0))) for i in range(k + 1, 2 * k + 1)]
        await settle(2 * k + 1)
        res["run_kb"] = (tracemalloc.get_traced_memory()[0] - m0) / 1024 / k
        tracemalloc.stop()
        for t in loop_tasks:
            t.cancel()
        await asyncio.gather(*loop_tasks, return_exceptions=True)

    asyncio.run(main())
    out.put(res)


# ---------------------------------------------------------------------------------------------- 2. polling


async def _peer_liangxin(n: int, poll: float) -> int:
    async def one(i: int) -> bool:
        async for ev in _liangxin_trigger(i, poll).run():
            return ev.payload.get("status") == "success"
        return False

    return sum(await asyncio.gather(*(one(i) for i in range(n))))


async def _peer_http_event(n: int, poll: float) -> int:
    from airflow.providers.http.triggers.http import HttpEventTrigger

    async def one(i: int) -> bool:
        trig = HttpEventTrigger(
            response_check_path=f"{CHECK_MODULE}.check",
            method="GET",
            endpoint=f"{RECORD_INFO.lstrip('/')}?taskId=t{i}",
            poll_interval=poll,
        )
        async for ev in trig.run():
            return ev.payload.get("status") == "success"
        return False

    return sum(await asyncio.gather(*(one(i) for i in range(n))))


PEERS = {"liangxin": _peer_liangxin, "http-event": _peer_http_event}


def _preload(modules: list[str]) -> None:
    """``--preload``: import these in the measured processes first (e.g. a candidate patch, for an A/B run)."""
    import importlib

    for name in modules:
        importlib.import_module(name)


def _poll_child(
    peer: str,
    n: int,
    poll: float,
    max_run: float,
    port: int,
    t0: Any,
    hits: Any,
    log_file: str,
    preload: list[str],
    out: Any,
) -> None:
    _quiet_stdout(log_file)
    _set_conn_env(port)
    _preload(preload)
    import aiohttp  # noqa: F401

    if peer == "liangxin":
        import airflow_provider_liangxin.triggers.liangxin  # noqa: F401
    else:
        import airflow.providers.http.triggers.http  # noqa: F401
    check_folder = _install_check_module() if peer == "http-event" else None
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        lags: list[tuple[float, float]] = []
        w0 = time.perf_counter()
        mon = asyncio.create_task(_lag_monitor(stop, lags, w0))
        t0.value = time.time()
        c0 = time.process_time()
        h0 = hits.value
        with _GcWatch() as gcw:
            try:
                ok = await asyncio.wait_for(PEERS[peer](n, poll), max_run)
                finished = True
            except TimeoutError:
                ok, finished = 0, False
            cpu = time.process_time() - c0
            wall = time.perf_counter() - w0
            polls = hits.value - h0
        stop.set()
        await mon
        all_lags = sorted(lag for _, lag in lags)
        steady = [lag for t, lag in lags if t >= 3.0]
        return {
            "peer": peer,
            "n": n,
            "finished": finished,
            "ok": ok,
            "wall_s": wall,
            "polls": polls,
            "polls_per_s": polls / wall,
            "cpu_ms_per_poll": cpu * 1000 / max(polls, 1),
            "cpu_util": cpu / wall,
            "lag_max_ms": all_lags[-1] * 1000 if all_lags else float("nan"),
            "lag_p99_ms": all_lags[int(len(all_lags) * 0.99)] * 1000 if all_lags else float("nan"),
            "lag_max_after_3s_ms": max(steady) * 1000 if steady else float("nan"),
            "gen2": gcw.gen2,
            "gen2_max_ms": gcw.gen2_max_ms,
            "gc_ms_per_s": gcw.total_ms / wall,
            "garbage_per_poll": gcw.collected / max(polls, 1),
        }

    res = asyncio.run(main())
    if check_folder:
        import shutil

        shutil.rmtree(check_folder, ignore_errors=True)
    res["rss_kb_per_trigger"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / n
    out.put(res)


# ------------------------------------------------------------------------------------------------ driver


def _child(ctx: Any, target: Any, args: tuple, timeout: float) -> dict[str, Any] | None:
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    try:
        return q.get(timeout=timeout)
    except Exception:
        return None
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", type=int, default=500, help="triggers started in the start-cost measurement")
    ap.add_argument("--sizes", default="500,5000", help="N for LiangxinTaskTrigger polling rows")
    ap.add_argument("--peer-sizes", default="500,5000", help="N for HttpEventTrigger polling rows")
    ap.add_argument("--poll", type=float, default=1.0, help="poll interval, seconds")
    ap.add_argument("--max-run", type=float, default=70.0, help="give up a polling row after this many seconds")
    ap.add_argument("--log", default=LOG_FILE_DEFAULT, help="where the measured processes' stdout goes")
    ap.add_argument("--preload", default="", help="comma-separated modules the measured processes import first")
    args = ap.parse_args()
    preload = [m for m in args.preload.split(",") if m]
    sizes = [int(x) for x in args.sizes.split(",") if x]
    peer_sizes = [int(x) for x in args.peer_sizes.split(",") if x]
    open(args.log, "w").close()
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    print(
        f"bench_trigger: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; measured processes log to {args.log}"
    )

    # 1 ------------------------------------------------------------------------------------------------
    with _Server(ctx, args.start, hold=True) as srv:
        st = _child(ctx, _start_child, (srv.port, args.start, args.log, preload), 120)
    print(f"\n## 1. Trigger start: K = {args.start} triggers, first poll pending (after 1 warm-up trigger)")
    if st is None:
        print("start measurement failed (see the log)")
    else:
        print(
            f"warm-up trigger (once per process): {st['first_cpu_ms']:.1f} ms CPU, {st['ssl_first']} SSLContext "
            f"({st['cdc_first']} create_default_context)"
        )
        print(
            "| phase | CPU ms / trigger | KB / trigger (tracemalloc) | RSS KB / trigger | GC-tracked objects / trigger "
            "| SSLContexts created |"
        )
        print("|---|---|---|---|---|---|")
        for key, label in (
            ("enter", "construct + `async with hook` entered"),
            ("run", "`run()` to first poll pending"),
        ):
            print(
                f"| {label} | {st[key + '_cpu_ms']:.3f} | {st[key + '_kb']:.1f} | {st[key + '_rss_kb']:.1f} "
                f"| {st[key + '_objs']:.0f} | {st['ssl_' + key]} for {args.start} |"
            )

    # 2 ------------------------------------------------------------------------------------------------
    rows: list[dict[str, Any]] = []
    plan = [("liangxin", n) for n in sizes] + [("http-event", n) for n in peer_sizes]
    for peer, n in plan:
        with _Server(ctx, n) as srv:
            r = _child(
                ctx,
                _poll_child,
                (peer, n, args.poll, args.max_run, srv.port, srv.t0, srv.hits, args.log, preload),
                args.max_run + 60,
            )
        rows.append(r or {"peer": peer, "n": n, "finished": False, "failed": True})
        print(f"  ... {peer} N={n} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    print(f"\n## 2. Polling every {args.poll:g} s until done (task i finishes 10 + 10*i/N s in)")
    print(
        "| peer | N | wall s | polls | polls/s | CPU ms / poll | CPU util | lag max ms | lag p99 ms "
        "| lag max after 3 s | gen2 GCs | longest gen2 ms | cyclic garbage / poll | RSS KB / trigger | ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("failed"):
            print(f"| {r['peer']} | {r['n']} | failed |" + " |" * 13)
            continue
        done = "" if r["finished"] else " (gave up)"
        print(
            f"| {r['peer']} | {r['n']} | {r['wall_s']:.1f}{done} | {r['polls']} | {r['polls_per_s']:.0f} "
            f"| {r['cpu_ms_per_poll']:.3f} | {r['cpu_util']:.0%} | {r['lag_max_ms']:.0f} | {r['lag_p99_ms']:.0f} "
            f"| {r['lag_max_after_3s_ms']:.0f} | {r['gen2']} | {r['gen2_max_ms']:.0f} | {r['garbage_per_poll']:.1f} "
            f"| {r['rss_kb_per_trigger']:.1f} | {r['ok']}/{r['n']} |"
        )

    def row(peer: str, n: int) -> dict[str, Any] | None:
        for r in rows:
            if r["peer"] == peer and r["n"] == n and not r.get("failed"):
                return r
        return None

    print("\nCPU per poll, HttpEventTrigger / LiangxinTaskTrigger:")
    for n in sorted(set(sizes) & set(peer_sizes)):
        a, b = row("liangxin", n), row("http-event", n)
        if a and b:
            print(
                f"  N={n}: {b['cpu_ms_per_poll']:.3f} / {a['cpu_ms_per_poll']:.3f} = "
                f"{b['cpu_ms_per_poll'] / a['cpu_ms_per_poll']:.1f}x"
            )

    # 3 ------------------------------------------------------------------------------------------------
    checks: list[tuple[str, str, str, bool | None]] = []

    def check(what: str, value: float | None, budget: str, ok: bool | None) -> None:
        shown = "-" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.3g}"
        checks.append((what, shown, budget, ok))

    if st:
        check(
            "start: CPU ms / trigger (run() to first poll)",
            st["run_cpu_ms"],
            f"< {BUDGET_START_CPU_MS:g}",
            st["run_cpu_ms"] < BUDGET_START_CPU_MS,
        )
        check(
            "start: KB / trigger (tracemalloc, run())",
            st["run_kb"],
            f"< {BUDGET_START_KB:g}",
            st["run_kb"] < BUDGET_START_KB,
        )
        check(
            "start: SSL contexts created by K triggers",
            st["ssl_enter"] + st["ssl_run"],
            "0",
            st["ssl_enter"] + st["ssl_run"] == 0,
        )
    for n in sizes:
        a = row("liangxin", n)
        b = row("http-event", n)

        def val(key: str, r: dict[str, Any] | None = a) -> float | None:
            return None if r is None else float(r[key])

        cpu, lag, steady, ok = val("cpu_ms_per_poll"), val("lag_max_ms"), val("lag_max_after_3s_ms"), val("ok")
        if n == 500:
            check(f"poll: CPU ms / poll at N={n}", cpu, f"< {BUDGET_POLL_CPU_MS_500:g}",
                  None if cpu is None else cpu < BUDGET_POLL_CPU_MS_500)  # fmt: skip
        check(f"poll: CPU ms / poll at N={n} (goal)", cpu, f"<= {GOAL_POLL_CPU_MS:g}",
              None if cpu is None else cpu <= GOAL_POLL_CPU_MS)  # fmt: skip
        peer_cpu = val("cpu_ms_per_poll", b)
        if cpu and peer_cpu:
            ratio = peer_cpu / cpu
            check(f"poll: HttpEventTrigger / ours at N={n}", ratio, f">= {GOAL_RATIO:g}x", ratio >= GOAL_RATIO)
        note = "" if n >= 5000 else " (goal set at 5000)"
        check(f"poll: loop lag max ms at N={n}", lag, f"< {GOAL_LAG_MS_5000:g}{note}",
              None if lag is None else lag < GOAL_LAG_MS_5000)  # fmt: skip
        check(f"poll: loop lag max ms after 3 s at N={n}", steady, f"< {GOAL_LAG_MS_5000:g}{note}",
              None if steady is None else steady < GOAL_LAG_MS_5000)  # fmt: skip
        check(f"poll: triggers ended with success at N={n}", ok, f"{n}", ok == n)

    print("\n## 3. Summary (informative; exit code 0 either way)")
    print("| check | value | budget | result |")
    print("|---|---|---|---|")
    for what, value, budget, ok in checks:
        print(f"| {what} | {value} | {budget} | {'PASS' if ok else 'MISS'} |")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
