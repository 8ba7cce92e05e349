"""The live dashboard in a real browser: headless Chromium (Debian's) driven by Playwright,
against daphne in a subprocess on the test database.

A staff member logs in through the admin form and opens /dashboard/; messages sent through the
REST API show up in the feed and the chart without a reload (how fast: bench/dashboard_latency.py). When the socket
drops, the page says so, and on reconnecting it resumes with `since`: no event is missed or
shown twice. The test also makes the README's screenshot (docs/dashboard.png).
"""
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.contrib.auth.hashers import make_password
from django.db import connections

from connectors import services
from connectors.models import Event
from connectors.platforms.base import IncomingMessage
from tests.conftest import BASE_DIR, SYSTEM, free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = BASE_DIR / "docs" / "dashboard.png"
PASSWORD = "dashboard-test-password"


@pytest.fixture
def server(subprocess_env):
    """daphne on a free port; yields its base URL."""
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "brain_connectors.asgi:application"],
        cwd=BASE_DIR,
        env=subprocess_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def output():
        log.seek(0)
        return log.read().decode(errors="replace")[-5000:]

    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError("daphne did not start:\n" + output())
        time.sleep(0.2)
    yield base
    proc.kill()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def staff_member(make_user):
    user = make_user("boss", superuser=True)
    # The server process checks passwords with the production hashers (the tests' MD5 is not one).
    user.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    user.save(update_fields=["password"])
    return user


def _event_seqs():
    """Every seq in the event log (of numbered events: what readers see), newest first.
    Playwright's sync API runs an event loop in this thread (Django refuses ORM calls there), so
    the query runs in a thread of its own, which closes its connection."""

    def read():
        try:
            return sorted(Event.objects.filter(seq__isnull=False).values_list("seq", flat=True), reverse=True)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(read).result()


def _feed_seqs(page):
    return page.eval_on_selector_all("#event-feed tbody tr[data-seq]", "rows => rows.map(r => Number(r.dataset.seq))")


def _chart(page):
    return page.eval_on_selector("#chart", "c => ({...c.dataset})")


def _log_in_and_open(browser, base):
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg):
        where = msg.location.get("url", "")
        # The admin login page (Django's) has no icon, so Chromium asks for /favicon.ico there.
        if msg.type == "error" and not where.endswith("/favicon.ico"):
            problems.append(f"console: {msg.text} at {where}")

    page.on("console", on_console)
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    page.goto(base + "/dashboard/")
    assert "/admin/login/" in page.url  # staff only: the admin login first
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(base + "/dashboard/")
    page.wait_for_selector("#stream-status[data-state=live]", timeout=10_000)
    return page, problems


def _send(base, token, connector_id, content, recipient="ada"):
    response = httpx.post(
        f"{base}/api/v1/connectors/{connector_id}/send/",
        json={"recipient": recipient, "content": content},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


def test_static_assets_are_served_by_the_app_under_daphne(server):
    for asset, kind in (("dashboard/dashboard.js", "javascript"), ("dashboard/dashboard.css", "css")):
        response = httpx.get(f"{server}/static/{asset}", timeout=10)
        assert response.status_code == 200, asset
        assert kind in response.headers["content-type"]
    # Staff only, even for the snapshot.
    assert httpx.get(f"{server}/dashboard/state/", timeout=10).status_code == 302


@pytest.fixture
def history(make_connector):
    """Some history, made by the real pipeline: a send and a message in (BRAIN answers it), a
    connector whose sends wait for a retry, one whose sends fail, and one stopped.

    Requested before `browser`: once Playwright's loop runs in this thread, Django refuses the ORM
    here (see _event_seqs).
    """
    make_connector("locmem_main", display_name="Support line")
    make_connector("locmem_flaky", display_name="Flaky gateway", config={"fail_with": "transient"})
    make_connector("locmem_broken", display_name="Broken gateway", config={"fail_with": "permanent"})
    make_connector("locmem_spare", display_name="Spare line", start=False)
    services.receive_message("locmem_main", IncomingMessage(sender="bob", content="hello?", platform_message_id="in-1"))
    services.send_message(SYSTEM, "locmem_flaky", "ada", "will wait")
    services.send_message(SYSTEM, "locmem_broken", "ada", "will fail")


@pytest.fixture
def token(staff_member, token_for):
    return token_for(staff_member)


def test_feed_and_chart_update_live_and_the_stream_resumes_after_a_drop(token, history, server, browser):
    page, problems = _log_in_and_open(browser, server)
    page.evaluate("window.__marker = 1")
    assert page.eval_on_selector('#connector-table tr[data-connector="locmem_main"]', "r => r.dataset.status") == "CONNECTED"
    assert page.eval_on_selector('#connector-table tr[data-connector="locmem_spare"]', "r => r.dataset.status") == "STOPPED"
    assert page.text_content("#queue-depth") == "1"  # the flaky connector's message waits
    before = _chart(page)
    assert (int(before["totalSent"]), int(before["totalReceived"]), int(before["totalFailed"])) == (1, 1, 1)
    seqs_before = _feed_seqs(page)
    assert seqs_before == _event_seqs()

    # 1. A message is sent: the feed and the chart follow, with no reload. (The latency goal is bench/dashboard_latency.py's.)
    delivery = _send(server, token, "locmem_main", "live one")
    page.wait_for_function(
        """([delivery, sentBefore]) => {
            const rows = [...document.querySelectorAll('#event-feed tbody tr[data-seq]')];
            const mine = rows.filter(r => r.querySelector('td.data').textContent.includes(delivery));
            const types = new Set(mine.map(r => r.dataset.type));
            return types.has('connector.message.queued') && types.has('connector.message.sent')
                && Number(document.getElementById('chart').dataset.totalSent) > sentBefore;
        }""",
        arg=[delivery["delivery_id"], int(before["totalSent"])],
        timeout=15_000,
    )
    after = _chart(page)
    assert int(after["totalSent"]) == int(before["totalSent"]) + 1
    assert int(after["draws"]) > int(before["draws"])
    assert page.evaluate("window.__marker") == 1  # the same page: no reload
    page.wait_for_timeout(1300)  # let the row highlight fade, for the screenshot
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # 2. The socket drops: the page says so at once and receives nothing while disconnected.
    last_seq = page.evaluate("window.dashboard.state.lastSeq")
    assert last_seq == _event_seqs()[0]
    page.evaluate("window.dashboard.holdReconnect = true; window.dashboard.socket.close()")
    page.wait_for_selector("#stream-status[data-state=stale]", timeout=2000)
    assert page.text_content("#stream-status") == "reconnecting…"
    missed = [_send(server, token, "locmem_main", f"while away {i}")["delivery_id"] for i in range(3)]
    # Nothing arrived while disconnected: the reconnect below asks for since=<last_seq>, the page's cursor at that point.

    # 3. It reconnects with since=<last seq received>, and catches up: nothing missed or doubled.
    page.evaluate("window.dashboard.holdReconnect = false; window.dashboard.reconnectNow()")
    page.wait_for_selector("#stream-status[data-state=live]", timeout=5000)
    urls = page.evaluate("window.dashboard.socketUrls")
    assert len(urls) == 2 and urls[1].endswith(f"/ws/events/?since={last_seq}")
    expected = _event_seqs()
    page.wait_for_function(
        "n => document.querySelector('#event-feed tbody tr[data-seq]').dataset.seq == n", arg=expected[0], timeout=2000
    )
    assert _feed_seqs(page) == expected  # every event once, newest first, no gaps
    feed_text = page.text_content("#event-feed")
    assert all(d in feed_text for d in missed)
    assert int(_chart(page)["totalSent"]) == int(before["totalSent"]) + 4
    assert page.evaluate("window.__marker") == 1
    assert problems == []


def _in_a_thread(work):
    """ORM work from a test that drives Playwright (see _event_seqs)."""

    def run():
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def checked(make_connector, settings):
    """A connector checked by the health round before the page opens, whose failed manual test left an error."""
    from connectors import tasks

    settings.HEALTH_CHECK_MIN_SPACING_SECONDS = 0
    make_connector("locmem_main", display_name="Support line")
    tasks.health_checks()
    services.update_connector(SYSTEM, "locmem_main", config={"health": "fail"})
    services.test_connector(SYSTEM, "locmem_main")
    services.update_connector(SYSTEM, "locmem_main", config={})


def test_health_after_a_reload_and_a_passing_check_clears_the_last_error(checked, staff_member, server, browser):
    from connectors import tasks

    page, problems = _log_in_and_open(browser, server)
    row = '#connector-table tr[data-connector="locmem_main"]'
    # Straight from the snapshot, before any live event: the manual test's failure is the last check.
    assert page.eval_on_selector(row, "r => r.children[4].textContent").startswith("failing")
    assert page.eval_on_selector(row, "r => r.children[6].textContent") != ""

    _in_a_thread(tasks.health_checks)  # passes: the live event empties "Last error"
    page.wait_for_function(
        """sel => { const r = document.querySelector(sel);
                    return r.children[4].textContent.startsWith("ok") && r.children[6].textContent === ""; }""",
        arg=row, timeout=10_000)

    page.reload()  # ...and a reload says the same, from the log
    page.wait_for_selector("#stream-status[data-state=live]", timeout=10_000)
    assert page.eval_on_selector(row, "r => r.children[4].textContent").startswith("ok · ")
    assert page.eval_on_selector(row, "r => r.children[6].textContent") == ""
    assert problems == []
