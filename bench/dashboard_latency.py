"""Dashboard latency: from a message sent through the REST API to its row in a staff member's live
dashboard (/dashboard/), in a real browser.

Headless Chromium (Debian's /usr/bin/chromium, or CHROMIUM_PATH) driven by Playwright logs in through
the admin form and opens the dashboard on daphne (PostgreSQL, Redis channel layer), as
tests/connectors/test_dashboard_browser.py does. Then `--messages` messages are sent one by one
(`--interval` apart) with POST /api/v1/connectors/<id>/send/ to a local connector. Celery runs eagerly
in daphne, so the send is done within the request and its `connector.message.sent` event is committed
before the response: the path measured is commit → push → websocket → page script → DOM.

Latency = the moment a MutationObserver in the page sees the message's `connector.message.sent` row
added to the feed (performance.timeOrigin + performance.now()) − the wall-clock time just before the
POST; both clocks are this machine's. The first `--warmup` messages are sent but not counted.

Goal (README, "Live dashboard"): p99 < 1,000 ms, and no message missing. The script exits 1 when the
goal is missed (bench/report.py passes --no-goal-exit and judges the goal itself), 2 when it cannot run.

    .venv/bin/python bench/dashboard_latency.py --messages 100 --interval 0.2
"""
import argparse
import os
import sys
import time

import httpx
from common import emit, flush_redis, fresh_database, percentile, prepare_environment, setup_django, summary_ms

DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/brain_bench_dashboard"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
GOAL_P99_MS = 1000
CONNECTOR = "bench_dash"
USER, PASSWORD = "bench", "bench-dashboard-password"

# Notes when each message's `sent` row is added to the feed: {row's data text: epoch ms}.
OBSERVER = """() => {
    window.__sentRows = {};
    new MutationObserver((mutations) => {
        const at = performance.timeOrigin + performance.now();
        for (const m of mutations) for (const row of m.addedNodes) {
            if (row.dataset && row.dataset.type === "connector.message.sent") {
                const data = row.querySelector("td.data");
                if (data) window.__sentRows[data.textContent] = at;
            }
        }
    }).observe(document.querySelector("#event-feed tbody"), {childList: true});
}"""


def prepare(args):
    env = prepare_environment(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE), CELERY_TASK_ALWAYS_EAGER="true")
    fresh_database(env["DATABASE_URL"])
    flush_redis(env["REDIS_URL"])
    setup_django()
    from django.contrib.auth import get_user_model

    from connectors import services
    from connectors.permissions import Principal
    from connectors.tokens import create_token

    system = Principal.system_actor("bench", via="bench")
    staff = get_user_model().objects.create_superuser(USER, password=PASSWORD, email="")
    token = create_token(system, staff)[1]
    services.register_connector(system, id=CONNECTOR, kind="locmem", display_name="Bench dashboard")
    services.start_connector(system, CONNECTOR)
    return env, token


def open_dashboard(browser, base):
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.goto(base + "/dashboard/")
    page.fill("#id_username", USER)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(base + "/dashboard/")
    page.wait_for_selector("#stream-status[data-state=live]", timeout=30_000)
    page.evaluate(OBSERVER)
    return page


def measure(page, base, token, args):
    sends = []  # (delivery id, epoch ms just before the POST)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for i in range(args.warmup + args.messages):
            started = time.time() * 1000
            response = client.post(f"/api/v1/connectors/{CONNECTOR}/send/",
                                   json={"recipient": "ada", "content": f"dashboard bench {i}"})
            if response.status_code not in (200, 201, 202):
                raise SystemExit(f"send {i} failed: HTTP {response.status_code} {response.text[:200]}")
            sends.append((response.json()["delivery_id"], started))
            time.sleep(args.interval)  # pacing of the offered load, not a wait for a result
    total = len(sends)
    try:
        page.wait_for_function("n => Object.keys(window.__sentRows).length >= n", arg=total, timeout=args.drain * 1000)
    except Exception:  # noqa: BLE001 - counted as missing below
        pass
    rows = page.evaluate("window.__sentRows")
    latencies, missing = [], 0
    for delivery_id, started in sends[args.warmup:]:
        seen = [at for text, at in rows.items() if delivery_id in text]
        if seen:
            latencies.append((seen[0] - started) / 1000)
        else:
            missing += 1
    return latencies, missing


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100, help="messages counted")
    parser.add_argument("--warmup", type=int, default=3, help="messages sent first and not counted")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between sends")
    parser.add_argument("--drain", type=float, default=30, help="seconds to wait for the last rows")
    parser.add_argument("--port", type=int, default=8741)
    parser.add_argument("--no-goal-exit", action="store_true", help="exit 0 even when the goal is missed")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"needs Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)", file=sys.stderr)
        return 2
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("needs the playwright package (requirements-dev.txt)", file=sys.stderr)
        return 2

    from webhook_ingest import start_daphne

    env, token = prepare(args)
    base = f"http://127.0.0.1:{args.port}"
    (server,) = start_daphne(env, args.port, 1)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                latencies, missing = measure(open_dashboard(browser, base), base, token, args)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    if not latencies:
        print("no message reached the dashboard", file=sys.stderr)
        return 2
    p99 = percentile(latencies, 99) * 1000
    met = p99 < GOAL_P99_MS and missing == 0
    emit(bench="dashboard_latency", messages=args.messages, warmup_not_counted=args.warmup,
         interval_s=args.interval, shown=len(latencies), missing=missing, **summary_ms(latencies),
         goal=f"p99 < {GOAL_P99_MS} ms, none missing", goal_met=met)
    return 0 if met or args.no_goal_exit else 1


if __name__ == "__main__":
    sys.exit(main())
