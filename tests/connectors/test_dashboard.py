"""The staff dashboard: who may open it, and the snapshot the page starts from."""
import pytest
from django.test import Client

from connectors import services
from connectors.events import log as events
from connectors.events import sequencer
from connectors.models import PERM_VIEW, Event
from connectors.platforms.base import ConnectorError, IncomingMessage
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


def _client(user=None):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def send(django_capture_on_commit_callbacks):
    """Queue messages and run what follows the commit (the delivery task, eager)."""

    def do(connector_id, n, recipient="ada"):
        for i in range(n):
            with django_capture_on_commit_callbacks(execute=True):
                services.send_message(SYSTEM, connector_id, recipient, f"message {i}")
        _number_events()

    return do


def _number_events():
    """Number the events published so far, as the sequencer does after a real commit on
    PostgreSQL. A `db` test never commits, and its first publish registered the sequencer once
    for the whole test transaction, outside any capture of on-commit callbacks."""
    sequencer.sequence_pending()


def _receive(connector_id, n):
    """Store inbound messages (their BRAIN replies would run after commit: not here)."""
    for i in range(n):
        services.receive_message(
            connector_id, IncomingMessage(platform_message_id=f"in-{connector_id}-{i}", sender="bob", content="hi")
        )
    _number_events()


# --- access ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/state/"])
def test_anonymous_and_non_staff_are_sent_to_the_admin_login(path, make_user):
    for client in (_client(), _client(make_user("plain_user"))):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=" + path)


def test_staff_get_the_page_with_its_own_static_assets(make_user):
    response = _client(make_user("staffer", staff=True)).get("/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    for marker in ('id="stream-status"', 'id="event-feed"', 'id="connector-table"', 'id="chart"',
                   'data-state-url="/dashboard/state/"', 'data-ws-path="/ws/events/"',
                   "/static/dashboard/dashboard.js", "/static/dashboard/dashboard.css"):
        assert marker in html, marker
    # No CDN: every script and stylesheet comes from this origin; and no inline script (CSP).
    assert "https://" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert html.count("<script") == html.count("<script src=") > 0
    assert response["Cache-Control"].startswith("max-age=0")

    for asset in ("/static/dashboard/dashboard.js", "/static/dashboard/dashboard.css"):
        served = Client().get(asset)
        assert served.status_code == 200, asset
        body = b"".join(served.streaming_content) if served.streaming else served.content
        assert len(body) > 1000


# --- the snapshot ----------------------------------------------------------------------------


def test_snapshot_shows_connectors_queue_depth_chart_and_recent_events(make_user, make_connector, send):
    make_connector("locmem_main")
    make_connector("locmem_flaky", config={"fail_with": "transient"})
    make_connector("locmem_broken", config={"fail_with": "permanent"})
    make_connector("locmem_idle", start=False)
    send("locmem_main", 3)
    send("locmem_flaky", 2)  # retried later: stays queued
    send("locmem_broken", 1)
    _receive("locmem_main", 2)
    services.record_connector_error(SYSTEM, "locmem_broken", ConnectorError("x" * 500, permanent=True))
    _number_events()

    response = _client(make_user("boss", superuser=True)).get("/dashboard/state/")
    assert response.status_code == 200
    state = response.json()

    assert state["latest_seq"] == events.latest_seq() > 0
    by_id = {c["id"]: c for c in state["connectors"]}
    assert list(by_id) == ["locmem_broken", "locmem_flaky", "locmem_idle", "locmem_main"]
    assert by_id["locmem_main"]["status"] == "CONNECTED" and by_id["locmem_idle"]["status"] == "STOPPED"
    assert by_id["locmem_main"]["kind"] == "locmem" and by_id["locmem_main"]["display_name"] == "Locmem Main"
    assert {c["id"]: c["queue_depth"] for c in state["connectors"]} == {
        "locmem_broken": 0, "locmem_flaky": 2, "locmem_idle": 0, "locmem_main": 0}
    assert state["queue_depth"] == 2
    assert len(by_id["locmem_broken"]["last_error"]) == 200 and by_id["locmem_broken"]["last_error"].endswith("…")

    chart = state["chart"]
    assert chart["minutes"] == 30 and set(chart["series"]) == set(by_id)
    totals = {cid: {k: sum(v) for k, v in s.items()} for cid, s in chart["series"].items()}
    assert totals["locmem_main"] == {"sent": 3, "received": 2, "failed": 0}
    assert totals["locmem_flaky"] == {"sent": 0, "received": 0, "failed": 0}
    assert totals["locmem_broken"] == {"sent": 0, "received": 0, "failed": 1}
    # Everything happened just now: in the last bucket.
    assert chart["series"]["locmem_main"]["sent"][-1] == 3

    recent = state["recent_events"]
    assert [e["seq"] for e in recent] == list(Event.objects.order_by("-seq").values_list("seq", flat=True)[:50])
    assert recent[0]["seq"] == state["latest_seq"] and recent[0]["specversion"] == "1.0"
    assert not any("content" in e["data"] for e in recent)

    assert state["stream"]["unpushed"] == Event.objects.filter(pushed_at__isnull=True).count()
    assert state["ws_path"] == "/ws/events/"

    polled = _client(make_user("boss2", superuser=True)).get("/dashboard/state/?chart=0").json()
    assert "chart" not in polled and "recent_events" not in polled
    assert polled["queue_depth"] == 2


def test_the_chart_counts_only_the_last_30_minutes(make_user, make_connector, send):
    from datetime import timedelta

    from django.utils import timezone

    make_connector("locmem_main")
    send("locmem_main", 2)
    # An hour ago (the event log is append-only for services; only its time is moved here).
    old = Event.objects.filter(type="connector.message.sent").order_by("seq").first()
    Event.objects.filter(pk=old.pk).update(time=timezone.now() - timedelta(hours=1))
    state = _client(make_user("boss", superuser=True)).get("/dashboard/state/").json()
    assert sum(state["chart"]["series"]["locmem_main"]["sent"]) == 1


def test_staff_without_view_permission_do_not_see_the_connector(make_user, make_connector, grant, send):
    seen = make_connector("locmem_seen")
    make_connector("locmem_hidden")
    make_connector("locmem_hidden_flaky", config={"fail_with": "transient"})
    send("locmem_seen", 2)
    send("locmem_hidden", 3)
    send("locmem_hidden_flaky", 1)
    staffer = make_user("staffer", staff=True)
    grant(staffer, PERM_VIEW, seen)

    state = _client(staffer).get("/dashboard/state/").json()
    assert [c["id"] for c in state["connectors"]] == ["locmem_seen"]
    assert list(state["chart"]["series"]) == ["locmem_seen"]
    assert sum(state["chart"]["series"]["locmem_seen"]["sent"]) == 2
    assert state["queue_depth"] == 0
    assert state["recent_events"] and {e["connector"] for e in state["recent_events"]} == {"locmem_seen"}
    page = _client(staffer).get("/dashboard/")
    assert page.status_code == 200 and b"locmem_hidden" not in page.content

    nobody = make_user("staffer_without_grants", staff=True)
    empty = _client(nobody).get("/dashboard/state/").json()
    assert empty["connectors"] == [] and empty["recent_events"] == [] and empty["chart"]["series"] == {}


# --- what the table says after a reload ------------------------------------------------------


def test_last_health_check_comes_from_the_log(make_user, make_connector, settings):
    from connectors import tasks

    settings.HEALTH_CHECK_MIN_SPACING_SECONDS = 0
    make_connector("locmem_checked")
    make_connector("locmem_never")
    tasks.health_checks()
    services.update_connector(SYSTEM, "locmem_checked", config={"health": "fail"})
    tasks.health_checks()  # the latest check is the one shown: this failure
    _number_events()

    state = _client(make_user("boss", superuser=True)).get("/dashboard/state/?chart=0").json()
    by_id = {c["id"]: c for c in state["connectors"]}
    latest = Event.objects.filter(type="connector.health.check", connector_id="locmem_checked").order_by("-seq").first()
    health = by_id["locmem_checked"]["health"]
    assert health["ok"] is False and health["trigger"] == "schedule"
    assert health["latency_ms"] == latest.data["latency_ms"]
    assert health["time"] == latest.time.isoformat().replace("+00:00", "Z")
    assert by_id["locmem_never"]["health"] is not None  # checked once, and passed
    assert by_id["locmem_never"]["health"]["ok"] is True


def test_a_later_passing_check_clears_the_last_error(make_user, make_connector, settings):
    from connectors import tasks

    settings.HEALTH_CHECK_MIN_SPACING_SECONDS = 0
    make_connector("locmem_main")
    services.update_connector(SYSTEM, "locmem_main", config={"health": "fail"})
    services.test_connector(SYSTEM, "locmem_main")  # a failing manual test records its error, still CONNECTED
    _number_events()
    boss = _client(make_user("boss", superuser=True))
    [row] = boss.get("/dashboard/state/?chart=0").json()["connectors"]
    assert row["status"] == "CONNECTED" and row["last_error"]

    services.update_connector(SYSTEM, "locmem_main", config={})
    tasks.health_checks()
    _number_events()
    [row] = boss.get("/dashboard/state/?chart=0").json()["connectors"]
    assert row["health"]["ok"] is True and row["last_error"] == ""
    check = Event.objects.filter(type="connector.health.check", connector_id="locmem_main").order_by("-seq").first()
    assert check.data["cleared_error"] is True


def test_an_errored_connector_keeps_its_reason_after_a_passing_check(make_user, make_connector, settings):
    from connectors import tasks

    settings.HEALTH_CHECK_MIN_SPACING_SECONDS = 0
    settings.HEALTH_AUTO_RESTART = False  # stays in ERROR: its reason is still the news
    make_connector("locmem_down")
    services.record_connector_error(SYSTEM, "locmem_down", ConnectorError("token revoked", permanent=True))
    tasks.health_checks()
    _number_events()
    [row] = _client(make_user("boss", superuser=True)).get("/dashboard/state/?chart=0").json()["connectors"]
    assert row["status"] == "ERROR" and row["last_error"] == "token revoked" and row["health"]["ok"] is True
