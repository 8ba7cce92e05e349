"""/preferences/ in a real browser: headless Chromium (Debian's) driven by Playwright, against
daphne in a subprocess on the test database (helpers shared with the dashboard's browser test).

An end user (not staff) signs in at /accounts/login/ and pairs two channels from the page: a
Telegram chat, by a real-format `/start CODE` update posted to daphne's webhook as Telegram would
(the bot runs against the loopback fake Bot API), and a CLI user, by typing the code into
`manage.py chat`. Each new channel shows up without a reload. With the keyboard alone she moves
the CLI channel first, sets quiet hours and a time zone on the Telegram one (after a refused save
that shows the API's error and changes nothing), saves each row without a reload, reloads, and
finds it all again, as the database has it. The test also makes the README's screenshot
(docs/preferences.png).
"""
import copy
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import time as dtime

import httpx
import pytest
from django.contrib.auth.hashers import make_password
from django.db import connections

from connectors.models import Connector
from routing.models import ChannelIdentity, ConnectorPreference
from tests.conftest import BASE_DIR
from tests.connectors import test_dashboard_browser as dashboard
from tests.connectors.telegram_support import ADA, FIXTURES, TOKEN
from tests.fakes.telegram_server import FakeTelegram

# The dashboard's fixtures: daphne in a subprocess on the test database, and headless Chromium.
server = dashboard.server
browser = dashboard.browser

pytestmark = [pytest.mark.slow, pytest.mark.vendor_neutral, pytest.mark.django_db(transaction=True)]

SCREENSHOT = BASE_DIR / "docs" / "preferences.png"
PASSWORD = "preferences-test-password"
BROWSER_ZONE = "Europe/Berlin"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture
def subprocess_env(subprocess_env):
    """daphne and `manage.py chat` run BRAIN's reply task (which answers pairing codes) in-process
    even when REDIS_URL is set: these tests start no Celery worker."""
    return {**subprocess_env, "CELERY_TASK_ALWAYS_EAGER": "1", "BRAIN_BACKEND": "connectors.delivery.brain.EchoBrain"}


@pytest.fixture
def fake():
    bot_api = FakeTelegram().start()
    yield bot_api
    bot_api.stop()


@pytest.fixture
def channels(make_connector, fake, settings):
    """A Telegram bot (webhook mode, against the fake) and a CLI connector, both started; returns
    the webhook secret. Requested before `browser`: the ORM is refused once Playwright runs."""
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    make_connector("tg_ada", kind="telegram", display_name="BRAIN bot",
                   config={"mode": "webhook", "api_base_url": fake.url}, credentials={"bot_token": TOKEN})
    make_connector("cli", kind="cli", display_name="Command line")
    return Connector.objects.get(pk="tg_ada").platform_secret


@pytest.fixture
def ada(make_user):
    user = make_user("ada")
    # The server process checks passwords with the production hashers (the tests' MD5 is not one).
    user.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    user.save(update_fields=["password"])
    return user


def _db(fn):
    """Run an ORM read in a thread of its own (Playwright's loop runs in this one)."""

    def run():
        try:
            return fn()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def _stored_preferences():
    return _db(lambda: list(
        ConnectorPreference.objects.filter(user__username="ada").order_by("priority").values(
            "identity__connector_id", "identity__address", "priority", "enabled", "notification_types",
            "quiet_start", "quiet_end", "timezone")
    ))


def _start_update(code, update_id=820013400):
    update = copy.deepcopy(json.loads((FIXTURES / "message_start_payload.json").read_text()))
    update["update_id"] = update_id
    update["message"]["text"] = f"/start {code}"
    return update


def _open_page(browser, base):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, timezone_id=BROWSER_ZONE, locale="en-GB")
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status} {r.request.method} {r.url}"))
    page.on("request", lambda req: req.url.startswith(base) or problems.append(f"external request: {req.url}"))

    page.problems = problems
    page.goto(base + "/preferences/")
    assert "/accounts/login/" in page.url  # not the admin login: end users are not staff
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(base + "/preferences/")
    page.wait_for_selector("#preferences-app[data-ready=true]", timeout=10_000)
    return page, problems


def _row(identity_id):
    return f'#preference-list li[data-identity-id="{identity_id}"]'


def _order(page):
    return page.eval_on_selector_all("#preference-list li[data-preference-id]", "rows => rows.map(r => r.dataset.identityId)")


def _status(page):
    return page.eval_on_selector("#status", "s => s.dataset.message || ''")


def _pair(page, connector_id):
    previous = page.text_content("#pair-code") or ""
    page.select_option("#pair-channel", connector_id)
    page.focus("#pair-button")
    page.keyboard.press("Enter")
    try:
        page.wait_for_function(
            "previous => { const c = document.getElementById('pair-code').textContent; return c && c !== previous; }",
            arg=previous,
            timeout=5000,
        )
    except Exception:
        raise AssertionError(f"no code shown; status: {_status(page)!r}, problems: {page.problems}") from None
    code = page.text_content("#pair-code")
    assert len(code) == 8 and page.evaluate("document.activeElement.id") == "pair-result"
    assert page.is_visible("#pair-expires")
    assert code.split()[0] in _status(page).replace(" ", "")
    return code


def test_pair_reorder_set_quiet_hours_reload_and_find_it_persisted(channels, ada, server, browser, manage):
    page, problems = _open_page(browser, server)
    page.evaluate("window.__marker = 1")
    assert page.text_content("#identity-list").strip() == "No channels yet. Pair one below."
    options = page.eval_on_selector_all("#pair-channel option", "os => os.map(o => o.value)")
    assert set(options) == {"tg_ada", "cli"}

    # 1. Telegram: the page shows a code; the person sends /start CODE to the bot (Telegram posts
    # the update to the webhook); the page, polling every 2 s, shows the new channel.
    code = _pair(page, "tg_ada")
    assert "/start" in page.text_content("#pair-instructions")
    assert page.get_attribute("#pair-waiting", "data-state") == "waiting"
    response = httpx.post(f"{server}/webhooks/telegram/tg_ada/", json=_start_update(code),
                          headers={SECRET_HEADER: channels}, timeout=10)
    assert response.status_code == 200, response.text
    page.wait_for_selector('#identity-list li[data-kind="telegram"]', timeout=6000)
    page.wait_for_selector("#pair-waiting[data-state=paired]")
    tg = page.get_attribute('#identity-list li[data-kind="telegram"]', "data-identity-id")
    assert page.text_content('#identity-list li[data-kind="telegram"] .identity-address') == ADA
    assert _order(page) == [tg]  # pairing put it in the list, first of one
    assert page.evaluate("window.__marker") == 1  # no reload

    # The same chat pairs again: no new channel to show, but the used code ends the waiting.
    code = _pair(page, "tg_ada")
    assert page.get_attribute("#pair-waiting", "data-state") == "waiting"
    response = httpx.post(f"{server}/webhooks/telegram/tg_ada/", json=_start_update(code, update_id=820013401),
                          headers={SECRET_HEADER: channels}, timeout=10)
    assert response.status_code == 200, response.text
    page.wait_for_selector("#pair-waiting[data-state=paired]", timeout=6000)
    assert page.text_content("#pair-waiting") == "Paired."
    assert _order(page) == [tg]

    # 2. CLI: the code typed into `manage.py chat` (a terminal session as the CLI user "ada").
    code = _pair(page, "cli")
    # The command to type is shown as code, not between backticks (here and in the status line).
    assert page.text_content("#pair-instructions code") == "manage.py chat --connector cli"
    assert "`" not in page.text_content("#pair-instructions") and "`" not in _status(page)
    chat = manage("chat", "--connector", "cli", "--as", "ada", input=f"{code}\n/quit\n", timeout=60)
    assert chat.returncode == 0, chat.stderr
    assert "Paired with ada" in chat.stdout
    page.wait_for_selector('#identity-list li[data-kind="cli"]', timeout=6000)
    cli = page.get_attribute('#identity-list li[data-kind="cli"]', "data-identity-id")
    assert _order(page) == [tg, cli]
    assert page.evaluate("window.__marker") == 1

    # 3. Reorder with the keyboard: "Up" on the CLI row; the focus stays on that row's buttons.
    page.focus(f"{_row(cli)} .move-up")
    assert "Move" in page.evaluate("document.activeElement.getAttribute('aria-label')")
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.querySelector('#preference-list li[data-preference-id]')"
                           ".dataset.identityId === id", arg=cli)
    assert _order(page) == [cli, tg]
    focused = page.evaluate("[document.activeElement.className, document.activeElement.closest('li').dataset.identityId]")
    assert focused == ["icon move-down", cli]  # "Up" is disabled at the top; focus moved next to it
    assert "position 1 of 2" in _status(page)
    assert [(p["identity__connector_id"], p["priority"]) for p in _stored_preferences()] == [("cli", 1), ("tg_ada", 2)]

    # 4. Quiet hours on the Telegram row. The zone select starts at this device's zone.
    row = _row(tg)
    assert page.input_value(f"{row} .pref-timezone") == BROWSER_ZONE
    # A half-set quiet period is refused: the API's message shows on the row; nothing is stored.
    before = _stored_preferences()
    page.fill(f"{row} .quiet-start", "22:00")
    page.focus(f"{row} .save-pref")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{row} .row-error:not([hidden])")
    error = page.text_content(f"{row} .row-error")
    assert error == "Quiet hours: give both a start and an end time, or neither."  # plain words, no field names
    assert page.get_attribute(f"{row} .row-error", "role") == "alert"
    assert _stored_preferences() == before
    # Now properly: the end time too, another zone, no digest; saved with the keyboard.
    page.fill(f"{row} .quiet-end", "07:30")
    assert page.input_value(f"{row} .quiet-end") == "07:30"
    page.select_option(f"{row} .pref-timezone", "America/New_York")
    page.focus(f"{row} [value=digest]")
    page.keyboard.press("Space")  # Telegram no longer gets the digest
    assert not page.is_checked(f"{row} [value=digest]")
    page.focus(f"{row} .save-pref")
    page.keyboard.press("Enter")
    page.wait_for_function("sel => document.querySelector(sel).dataset.saved", arg=row)
    assert page.is_hidden(f"{row} .row-error")
    assert "Saved" in _status(page)
    # And the CLI row does not take urgent ones.
    page.focus(f"{_row(cli)} [value=urgent]")
    page.keyboard.press("Space")
    page.focus(f"{_row(cli)} .save-pref")
    page.keyboard.press("Enter")
    page.wait_for_function("sel => document.querySelector(sel).dataset.saved", arg=_row(cli))
    assert page.evaluate("window.__marker") == 1  # every save without a reload

    # A label for the Telegram chat: typed, Enter saves it; the list shows it at once.
    page.focus(f'#identity-list li[data-identity-id="{tg}"] .identity-label')
    page.keyboard.type("My phone")
    page.keyboard.press("Enter")
    page.wait_for_function("sel => document.querySelector(sel).textContent.includes('My phone')",
                           arg=f"{row} .pref-title")
    assert "Label saved" in _status(page)
    assert _db(lambda: ChannelIdentity.objects.get(pk=tg).label) == "My phone"

    page.wait_for_timeout(2100)  # let the highlight of the new channel fade, for the screenshot
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # 5. Reload: everything is as saved, on the page and in the database.
    page.reload()
    page.wait_for_selector("#preferences-app[data-ready=true]")
    assert page.evaluate("window.__marker") is None
    assert _order(page) == [cli, tg]
    assert page.input_value(f"{row} .quiet-start") == "22:00"
    assert page.input_value(f"{row} .quiet-end") == "07:30"
    assert page.input_value(f"{row} .pref-timezone") == "America/New_York"
    assert not page.is_checked(f"{row} [value=digest]") and page.is_checked(f"{row} [value=urgent]")
    assert not page.is_checked(f"{_row(cli)} [value=urgent]")
    assert _stored_preferences() == [
        {"identity__connector_id": "cli", "identity__address": "ada", "priority": 1, "enabled": True,
         "notification_types": ["standard", "digest"], "quiet_start": None, "quiet_end": None,
         "timezone": BROWSER_ZONE},
        {"identity__connector_id": "tg_ada", "identity__address": ADA, "priority": 2, "enabled": True,
         "notification_types": ["standard", "urgent"], "quiet_start": dtime(22, 0), "quiet_end": dtime(7, 30),
         "timezone": "America/New_York"},
    ]
    assert _db(lambda: ChannelIdentity.objects.filter(user__username="ada").count()) == 2

    # Take the CLI channel off the list (two presses), then add it back: it goes last.
    page.focus(f"{_row(cli)} .remove-pref")
    page.keyboard.press("Enter")
    assert page.text_content(f"{_row(cli)} .remove-pref") == "Really remove?"
    page.keyboard.press("Enter")
    page.wait_for_selector("#add-preference:not([hidden])")
    assert _order(page) == [tg]
    assert page.eval_on_selector_all("#add-identity option", "os => os.map(o => o.value)") == [cli]
    page.focus("#add-button")
    page.keyboard.press("Enter")
    page.wait_for_function("n => document.querySelectorAll('#preference-list li[data-preference-id]').length === n", arg=2)
    assert _order(page) == [tg, cli] and page.is_hidden("#add-preference")
    assert [(p["identity__connector_id"], p["priority"], p["timezone"]) for p in _stored_preferences()] == [
        ("tg_ada", 2, "America/New_York"), ("cli", 3, BROWSER_ZONE)]

    # The one refused save is the only HTTP error; nothing came from another origin.
    expected = [p for p in problems if p.startswith("HTTP 400 PATCH") and "/api/v1/preferences/" in p]
    assert len(expected) == 1
    assert [p for p in problems if p not in expected and "the server responded with a status of 400" not in p] == []


@pytest.fixture
def mailbox(tmp_path):
    return tmp_path / "mail"


@pytest.fixture
def email_channel(make_connector, subprocess_env, mailbox):
    """An email connector; the server process writes its mails into `mailbox` (Django's file backend)."""
    make_connector("mail", kind="email", display_name="Email", config={"from_address": "brain@example.org"})
    # django-environ takes the path after the third slash: a fourth keeps it absolute.
    subprocess_env["EMAIL_URL"] = f"filemail:///{mailbox}"
    return "mail"


def _mailed_link(mailbox, base, timeout=15):
    import re
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(mailbox.glob("*")) if mailbox.exists() else []:
            match = re.search(r"/preferences/pair/[A-Z0-9]{8}/", path.read_text())
            if match:
                return base + match.group(0)
        time.sleep(0.2)
    raise AssertionError("no pairing mail arrived")


def test_an_emailed_link_confirmed_in_another_tab_shows_as_paired(email_channel, ada, server, browser, mailbox):
    page, problems = _open_page(browser, server)
    page.select_option("#pair-channel", email_channel)
    page.fill("#pair-address", "ada@example.org")
    page.focus("#pair-button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#pair-waiting[data-state=waiting]")
    assert page.text_content("#pair-result-title") == "Check your inbox"
    assert page.text_content("#pair-waiting") == "Waiting for you to confirm the link…"

    # The mail opens in another tab of the same browser; confirming there pairs the address.
    link_tab = page.context.new_page()
    link_tab.goto(_mailed_link(mailbox, server))
    link_tab.click("button[type=submit]")
    link_tab.wait_for_selector("text=Paired with ada")

    page.wait_for_selector("#pair-waiting[data-state=paired]", timeout=6000)
    assert page.text_content("#pair-waiting").startswith("Paired: ")
    assert "Waiting" not in page.text_content("#pair-result")
    assert page.text_content('#identity-list li[data-kind="email"] .identity-address') == "ada@example.org"
    assert problems == []
