"""``./run browser``: the result view in a real browser, through the real Airflow UI.

Starts the simulator and a real Airflow 3 with logins (SimpleAuthManager, the ``reader`` user has the viewer role),
runs a stored single image, a failed task and a batch, then drives headless Chromium (Debian's ``/usr/bin/chromium``
through Playwright, never a downloaded browser): logs in on the UI's login page, opens the successful task
instance's page, checks the "LiangXin result" extra link is drawn, clicks it and checks the image shows; checks the
"LiangXin" tab on the task instance page; and saves screenshots of the view (single image, failed task, batch grid)
into ``docs/images/``. Prints one row per check; exits 1 if any failed. Everything it starts is stopped.

    python -m tests.e2e.browser_check [--screenshots DIR] [--keep-going]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.e2e.airflow_env import (
    E2E_DAGS,
    REPO_ROOT,
    STOP_REPORTS,
    AirflowEnv,
    Progress,
    StopReport,
    install_signal_handlers,
    liangxin_airflow,
    stop_everything,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEW_DAG, BATCH_DAG = "e2e_result_view", "e2e_batch_deferred"
USER = "reader"
TIMEOUT_MS = 60_000


#: Where a failed check leaves a screenshot of the page it saw (never into docs/).
FAILURE_SHOTS = Path(tempfile.gettempdir()) / "liangxin-browser-failures"


class Checks:
    def __init__(self) -> None:
        self.rows: list[tuple[str, bool, str]] = []
        self.page: Any = None

    def run(self, name: str, check: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail = check()
            ok = True
        except Exception as exc:
            detail, ok = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}", False
            if self.page is not None:
                FAILURE_SHOTS.mkdir(exist_ok=True)
                shot = FAILURE_SHOTS / f"{'-'.join(name.split())[:40]}.png"
                with contextlib.suppress(Exception):
                    self.page.screenshot(path=str(shot))
                    detail += f"; page at {self.page.url} (screenshot {shot})"
        self.rows.append((name, ok, f"{detail} ({time.monotonic() - started:.1f} s)"))
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
        return ok

    def table(self) -> str:
        width = max(len(n) for n, _, _ in self.rows)
        lines = [f"{'check':<{width}} | result | detail", f"{'-' * width}-+--------+-------"]
        lines += [f"{n:<{width}} | {'pass' if ok else 'FAIL':<6} | {d}" for n, ok, d in self.rows]
        return "\n".join(lines)


def image_loaded(page: Any, selector: str) -> int:
    """Wait until the first ``selector`` image has decoded; its natural width."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=TIMEOUT_MS,
    )
    return int(page.eval_on_selector(selector, "i => i.naturalWidth"))


def browser_checks(env: AirflowEnv, runs: dict[str, str], shots: Path, checks: Checks) -> None:
    from playwright.sync_api import sync_playwright

    base = env.base_url
    ti_page = f"{base}/dags/{VIEW_DAG}/runs/{quote(runs['stored'], safe='')}/tasks/generate"
    with tempfile.TemporaryDirectory(prefix="liangxin-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            checks.page = page

            def login() -> str:
                page.goto(base + "/")
                page.wait_for_selector("input[name=username], input#username", timeout=TIMEOUT_MS)
                page.fill("input[name=username], input#username", USER)
                page.fill("input[name=password], input#password", env.passwords[USER])
                page.click("button[type=submit]")
                page.wait_for_function(
                    "() => document.cookie.includes('_token') || !location.pathname.startsWith('/auth')",
                    timeout=TIMEOUT_MS,
                )
                page.wait_for_load_state("networkidle")
                return f"logged in as {USER!r}, at {page.url.removeprefix(base)}"

            def link_drawn() -> str:
                page.goto(ti_page + "/details")  # Airflow 3.3 draws extra links on the Details tab
                link = page.get_by_role("link", name="LiangXin result")
                link.wait_for(state="visible", timeout=TIMEOUT_MS)
                href = link.get_attribute("href") or ""
                if not href.startswith("/liangxin/v1/results?"):
                    raise AssertionError(f"link href {href!r}")
                page.screenshot(path=str(shots / "result-view-link.png"))
                return f"href {href[:60]}..."

            def click_shows_image() -> str:
                page.get_by_role("link", name="LiangXin result").click()
                page.wait_for_url("**/liangxin/v1/results?**", timeout=TIMEOUT_MS)
                width = image_loaded(page, ".media img")
                page.screenshot(path=str(shots / "result-view-single.png"), full_page=True)
                return f"image {width} px wide at {page.url.removeprefix(base)[:50]}..."

            def tab() -> str:
                page.goto(ti_page)
                page.get_by_role("link", name="LiangXin", exact=True).first.click()
                frame = page.frame_locator("iframe[title=LiangXin]")
                frame.locator(".media img").first.wait_for(state="visible", timeout=TIMEOUT_MS)
                width = frame.locator(".media img").first.evaluate("i => i.complete ? i.naturalWidth : 0")
                if not width:
                    frame.locator(".media img").first.evaluate("i => i.decode()")
                page.screenshot(path=str(shots / "result-view-tab.png"))
                return f"tab at {page.url.removeprefix(base)[:60]}..., iframe shows the image"

            def failed() -> str:
                page.goto(base + view_path(VIEW_DAG, runs["failed"]))
                page.wait_for_selector(".fail")
                text = page.inner_text(".fail")
                if "simulated generation failure" not in text:
                    raise AssertionError(text)
                page.set_viewport_size({"width": 1280, "height": 320})  # the page is short: no empty half
                page.screenshot(path=str(shots / "result-view-failed.png"), full_page=True)
                page.set_viewport_size({"width": 1280, "height": 900})
                return " ".join(text.split())[:80]

            def batch() -> str:
                page.goto(base + view_path(BATCH_DAG, runs["batch"]))
                cells = page.locator(".cell img")
                cells.first.wait_for()
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.cell img')].every(i => i.complete && i.naturalWidth > 0)",
                    timeout=TIMEOUT_MS,
                )
                count = cells.count()
                page.set_viewport_size({"width": 1280, "height": 680})
                page.screenshot(path=str(shots / "result-view-batch.png"), full_page=True)
                page.set_viewport_size({"width": 1280, "height": 900})
                return f"{count} thumbnails loaded, {page.locator('.cell-fail').count()} failed item"

            if checks.run("log in on the Airflow UI", login):
                if checks.run("extra link drawn on the task instance page", link_drawn):
                    checks.run("clicking it shows the image", click_shows_image)
                checks.run("'LiangXin' tab on the task instance page", tab)
                checks.run("failed task: failCode/failMsg", failed)
                checks.run("batch: grid of thumbnails", batch)
        finally:
            context.close()


def view_path(dag_id: str, run_id: str) -> str:
    return f"/liangxin/v1/results?dag_id={dag_id}&run_id={quote(run_id, safe='')}&task_id=generate"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", type=Path, default=REPO_ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    install_signal_handlers()
    args.screenshots.mkdir(parents=True, exist_ok=True)
    checks = Checks()
    say = Progress()
    before = len(STOP_REPORTS)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="liangxin-browser-output-") as output,
            liangxin_airflow(
                output_dir=Path(output),
                dag_folders={"e2e-dags": E2E_DAGS},
                sim_durations="0.5,0.5,2",
                users={USER: "viewer"},
                progress=say,
            ) as (env, _sim),
        ):
            env.wait_ready([VIEW_DAG, BATCH_DAG], timeout=240)
            runs = {
                "stored": env.trigger(VIEW_DAG, {"prompt": "a lighthouse at dusk, oil painting"}),
                "failed": env.trigger(VIEW_DAG, {"prompt": "a lighthouse [sim:fail]"}, unpause=False),
                "batch": env.trigger(BATCH_DAG),
            }
            say("waiting for the runs")
            states = {
                key: env.wait_for_run(VIEW_DAG if key != "batch" else BATCH_DAG, run_id, timeout=240)
                for key, run_id in runs.items()
            }
            checks.run(
                "runs ended as expected",
                lambda: _expect(states, {"stored": "success", "failed": "failed", "batch": "success"}),
            )
            browser_checks(env, runs, args.screenshots, checks)
    finally:
        stop_everything()  # the safety net: liangxin_airflow has stopped everything already
        report = StopReport()
        for item in STOP_REPORTS[before:]:
            report = report.merge(item)
        print(f"liangxin harness: {report.line()}", flush=True)
    print()
    print(checks.table())
    return 0 if report.clean and checks.rows and all(ok for _, ok, _ in checks.rows) else 1


def _expect(states: dict[str, str], wanted: dict[str, str]) -> str:
    if states != wanted:
        raise AssertionError(f"run states {states}")
    return ", ".join(f"{k} {v}" for k, v in states.items())


if __name__ == "__main__":
    sys.exit(main())
