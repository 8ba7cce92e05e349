"""notify_user end to end: the router's chain, sends through the real delivery pipeline (locmem
and Twilio SMS against the loopback fake), fallback on a send error, on a failed receipt and on
a missing acknowledgement, the REST API and its permissions, idempotency and the audit/event
trail (which never carries the content)."""
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from audit.models import AuditEvent
from connectors.models import Delivery, Event
from connectors.permissions import Principal
from connectors.platforms import locmem
from routing.models import ChannelIdentity, ConnectorPreference, Notification
from routing.notify import creation, inbox, settlement
from routing.router import cache as router_cache
from routing.router import decision as router_decision
from tests.clock import stepping_time
from tests.conftest import SYSTEM
from tests.connectors import twilio_support
from tests.connectors.twilio_support import PUBLIC, fixture, post_twilio

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

SECRET = "Ada, the reactor is at 97%"
ALL_TYPES = ["standard", "urgent", "digest"]


@pytest.fixture(autouse=True)
def _fresh_router_cache():
    router_cache.invalidate()
    yield
    router_cache.invalidate()


@pytest.fixture
def ada(make_user):
    return make_user("ada")


@pytest.fixture
def operator(make_user):
    return make_user("operator", superuser=True)


def reach(user, connector_id, address, priority, types=ALL_TYPES, **pref):
    """A verified identity and its preference, straight in the database (test set-up)."""
    identity = ChannelIdentity.objects.create(
        user=user, connector_id=connector_id, address=address, verified_at=timezone.now()
    )
    ConnectorPreference.objects.create(
        user=user, identity=identity, priority=priority, notification_types=types, **pref
    )
    return identity


def events(type_):
    return list(Event.objects.filter(type=type_).order_by("seq"))


def actions(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def assert_no_content_leaked():
    for event in Event.objects.all():
        assert SECRET not in str(event.data)
    for row in AuditEvent.objects.all():
        assert SECRET not in str(row.details)


# --- fallback on send errors --------------------------------------------------------------------


def test_first_channel_fails_and_the_second_is_used(make_connector, ada, monkeypatch):
    monkeypatch.setattr(router_decision, "time", stepping_time(0.004))  # each decision takes 4 ms exactly
    make_connector("loc_broken", config={"fail_with": "permanent"})
    make_connector("loc_ok")
    first = reach(ada, "loc_broken", "ada-broken", 1)
    second = reach(ada, "loc_ok", "ada-ok", 2)

    notification, replayed = creation.notify_user(SYSTEM, ada, SECRET, "standard")

    assert replayed is False
    assert notification.status == "delivered" and notification.step == 1
    assert notification.trace["chain"] == [first.pk, second.pk]
    assert [c["reason"] for c in notification.trace["candidates"]] == ["ok", "ok"]
    assert [(a["connector_id"], a["outcome"]) for a in notification.attempts] == [
        ("loc_broken", "failed"), ("loc_ok", "delivered")]
    assert notification.attempts[0]["reason"] == "delivery failed (platform)"
    assert [(c, m.recipient, m.content) for c, m in locmem.outbox] == [("loc_ok", "ada-ok", SECRET)]
    assert Delivery.objects.get(pk=notification.attempts[0]["delivery_id"]).status == "failed"

    [decision] = events("routing.decision")
    assert decision.data["notification_id"] == str(notification.id)
    assert decision.data["chain_length"] == 2 and decision.data["source"] == "preferences"
    assert decision.data["decision_ms"] == 4.0
    [fallback] = events("notification.fallback")
    assert (fallback.data["from_connector"], fallback.data["to_connector"]) == ("loc_broken", "loc_ok")
    assert fallback.data["reason"] == "delivery failed (platform)"
    assert len(events("notification.delivered")) == 1
    [audit_row] = actions("notification.fallback")
    assert audit_row.details["from_connector"] == "loc_broken" and audit_row.details["to_step"] == 1
    assert actions("notification.create")[0].details["chain_length"] == 2
    assert_no_content_leaked()


def test_every_channel_failing_exhausts_the_notification(make_connector, ada):
    make_connector("loc_bad1", config={"fail_with": "permanent"})
    make_connector("loc_bad2", config={"fail_with": "permanent"})
    reach(ada, "loc_bad1", "a1", 1)
    reach(ada, "loc_bad2", "a2", 2)

    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "digest")

    assert notification.status == "exhausted" and notification.step == 1
    assert [a["outcome"] for a in notification.attempts] == ["failed", "failed"]
    assert locmem.outbox == []
    [exhausted] = events("notification.exhausted")
    assert exhausted.data["steps"] == 2 and exhausted.data["reason"] == "delivery failed (platform)"
    assert actions("notification.exhausted")[0].result == "failure"
    assert_no_content_leaked()


def test_a_channel_refusing_the_send_at_once_is_skipped(make_connector, ada):
    """A stopped connector makes send_message refuse (Conflict): the next channel is tried in the
    same transaction, with the refusal as the reason."""
    make_connector("loc_first")
    make_connector("loc_second")
    reach(ada, "loc_first", "a1", 1)
    reach(ada, "loc_second", "a2", 2)
    decision = router_decision.decide(ada.pk, "standard")
    assert len(decision.chain) == 2
    from connectors import services

    services.stop_connector(SYSTEM, "loc_first")
    # The router would now exclude it; decide on the earlier snapshot to exercise the refusal.
    original = router_decision.decide
    router_decision.decide = lambda *args, **kwargs: decision
    try:
        notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "standard")
    finally:
        router_decision.decide = original
    assert notification.status == "delivered" and notification.step == 1
    assert notification.attempts[0]["outcome"] == "failed"
    assert notification.attempts[0]["reason"] == "send refused: connector_not_running"
    assert [c for c, _ in locmem.outbox] == ["loc_second"]


def test_a_late_duplicate_signal_never_advances_twice(make_connector, ada):
    make_connector("loc_one")
    make_connector("loc_two")
    make_connector("loc_three")
    for i, cid in enumerate(("loc_one", "loc_two", "loc_three"), start=1):
        reach(ada, cid, f"a{i}", i)
    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "urgent")
    assert notification.status == "sending" and notification.step == 0
    first_delivery = notification.current_delivery_id

    settlement.settle(first_delivery, "failed", via="receipt")
    settlement.settle(first_delivery, "failed", via="receipt")  # the same receipt again

    notification.refresh_from_db()
    assert notification.step == 1 and notification.status == "sending"
    assert len(events("notification.fallback")) == 1


# --- fallback on a failed receipt (Twilio SMS against the fake) ---------------------------------


def test_twilio_undelivered_receipt_moves_to_the_next_channel(
    client, settings, twilio_connector, twilio_fake, make_connector, ada
):
    settings.PUBLIC_BASE_URL = PUBLIC
    twilio_connector("sms_main", "sms")
    make_connector("loc_backup")
    reach(ada, "sms_main", "+14155550199", 1)
    reach(ada, "loc_backup", "ada-backup", 2)

    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "standard")
    [sms] = twilio_fake.messages
    assert sms.form["To"] == "+14155550199" and sms.form["Body"] == SECRET
    assert notification.status == "delivered" and notification.step == 0  # sent: Twilio accepted it
    assert locmem.outbox == []

    delivery = notification.current_delivery
    path = "/webhooks/twilio/sms_main/status/"
    sid = delivery.platform_message_id
    payload = fixture("message_status_undelivered", MessageSid=sid, SmsSid=sid)
    assert post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}").status_code == 200

    notification.refresh_from_db()
    assert notification.status == "delivered" and notification.step == 1
    assert [a["outcome"] for a in notification.attempts] == ["failed", "delivered"]
    assert notification.attempts[0]["reason"] == "delivery failed (receipt)"
    assert [(c, m.recipient) for c, m in locmem.outbox] == [("loc_backup", "ada-backup")]
    [fallback] = events("notification.fallback")
    assert (fallback.data["from_connector"], fallback.data["to_connector"]) == ("sms_main", "loc_backup")
    assert fallback.data["reason"] == "delivery failed (receipt)"
    assert_no_content_leaked()


def test_a_delivered_receipt_keeps_it_delivered(client, settings, twilio_connector, twilio_fake, make_connector, ada):
    settings.PUBLIC_BASE_URL = PUBLIC
    twilio_connector("sms_ok", "sms")
    make_connector("loc_spare")
    reach(ada, "sms_ok", "+14155550199", 1)
    reach(ada, "loc_spare", "ada-spare", 2)
    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "standard")
    path = "/webhooks/twilio/sms_ok/status/"
    sid = notification.current_delivery.platform_message_id
    payload = fixture("message_status_delivered", MessageSid=sid, SmsSid=sid)
    assert post_twilio(client, path, payload, sign_url=f"{PUBLIC}{path}").status_code == 200
    notification.refresh_from_db()
    assert notification.status == "delivered" and notification.step == 0
    assert locmem.outbox == [] and events("notification.fallback") == []


# --- urgent: acknowledgement or the next channel ------------------------------------------------


def test_urgent_without_acknowledgement_moves_on_at_the_deadline(settings, make_connector, ada, api, token_for):
    settings.ROUTING_URGENT_ACK_SECONDS = 120
    make_connector("loc_pager")
    make_connector("loc_phone")
    make_connector("loc_mail")
    reach(ada, "loc_pager", "pager", 1)
    reach(ada, "loc_phone", "phone", 2)
    reach(ada, "loc_mail", "mail", 3)
    before = timezone.now()

    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "urgent")
    assert notification.status == "sending" and notification.step == 0
    assert notification.attempts[0]["outcome"] == "awaiting acknowledgement"
    assert before + timedelta(seconds=119) < notification.ack_deadline <= timezone.now() + timedelta(seconds=120)

    assert settlement.check_ack_deadlines(now=timezone.now()) == 0  # not yet due
    from routing.tasks import check_ack_deadlines

    later = notification.ack_deadline + timedelta(seconds=1)
    assert settlement.check_ack_deadlines(now=later) == 1
    notification.refresh_from_db()
    assert notification.step == 1 and notification.status == "sending"
    assert notification.attempts[0]["outcome"] == "no acknowledgement"
    assert [c for c, _ in locmem.outbox] == ["loc_pager", "loc_phone"]
    [fallback] = events("notification.fallback")
    assert fallback.data["reason"] == "no acknowledgement"
    assert (fallback.data["from_connector"], fallback.data["to_connector"]) == ("loc_pager", "loc_phone")

    # Ada acknowledges over the API: it is delivered, and the deadline no longer moves it.
    response = api(token_for(ada)).post(f"/api/v1/notifications/{notification.id}/acknowledge/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "delivered" and body["acknowledged_at"] and body["ack_deadline"] is None
    check_ack_deadlines.delay()  # the beat task (eager), then far in the future
    assert settlement.check_ack_deadlines(now=timezone.now() + timedelta(days=1)) == 0
    notification.refresh_from_db()
    assert notification.step == 1 and notification.status == "delivered"
    assert [c for c, _ in locmem.outbox] == ["loc_pager", "loc_phone"]
    assert notification.attempts[-1]["outcome"] == "acknowledged"
    assert actions("notification.acknowledge")[0].principal == "user:ada"
    # Twice is harmless.
    assert api(token_for(ada)).post(f"/api/v1/notifications/{notification.id}/acknowledge/").status_code == 200
    assert len(actions("notification.acknowledge")) == 1


def test_urgent_acknowledged_by_the_platform_is_delivered(make_connector, ada):
    """A call answered with 1 arrives as delivery_settled(acknowledged=True)."""
    from connectors import services

    make_connector("loc_call")
    make_connector("loc_after")
    reach(ada, "loc_call", "call", 1)
    reach(ada, "loc_after", "after", 2)
    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "urgent")
    services.acknowledge_delivery("loc_call", notification.current_delivery_id)
    notification.refresh_from_db()
    assert notification.status == "delivered" and notification.acknowledged_at is not None
    assert settlement.check_ack_deadlines(now=timezone.now() + timedelta(days=1)) == 0
    assert [c for c, _ in locmem.outbox] == ["loc_call"]


def test_urgent_unacknowledged_on_the_last_channel_is_exhausted(settings, make_connector, ada):
    make_connector("loc_only")
    reach(ada, "loc_only", "only", 1)
    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "urgent")
    assert settlement.check_ack_deadlines(now=notification.ack_deadline + timedelta(seconds=1)) == 1
    notification.refresh_from_db()
    assert notification.status == "exhausted"
    assert events("notification.exhausted")[0].data["reason"] == "no acknowledgement"


# --- the REST API ---------------------------------------------------------------------------------


def test_api_creates_replays_and_refuses_a_reused_key(make_connector, ada, operator, api, token_for):
    make_connector("loc_api")
    reach(ada, "loc_api", "ada-api", 1)
    client = api(token_for(operator))
    body = {"user": "ada", "notification_type": "standard", "content": SECRET}

    created = client.post("/api/v1/notifications/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert data["status"] == "delivered" and data["user"] == "ada"
    assert data["content"] == SECRET  # the requester may read what they sent
    assert data["trace"]["source"] == "preferences" and len(data["attempts"]) == 1

    replay = client.post("/api/v1/notifications/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert replay.status_code == 200 and replay.json()["id"] == data["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert Notification.objects.count() == 1 and len(locmem.outbox) == 1

    other = client.post("/api/v1/notifications/", {**body, "content": "other"}, format="json",
                        HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert Notification.objects.count() == 1 and len(locmem.outbox) == 1

    detail = client.get(f"/api/v1/notifications/{data['id']}/")
    assert detail.status_code == 200 and detail.json()["attempts"][0]["connector_id"] == "loc_api"
    listing = client.get("/api/v1/notifications/").json()
    assert [row["id"] for row in listing["results"]] == [data["id"]]
    assert "content" not in listing["results"][0]


def test_api_refuses_bad_input_without_side_effects(make_connector, ada, operator, api, token_for):
    client = api(token_for(operator))
    cases = [
        ({"user": "nobody", "content": "hi"}, "unknown_user"),
        ({"user": "ada", "content": "hi", "notification_type": "shouting"}, "validation_error"),
        ({"user": "ada", "content": ""}, "validation_error"),
        ({"user": "ada", "content": "x" * 10_001}, "validation_error"),
    ]
    for body, code in cases:
        response = client.post("/api/v1/notifications/", body, format="json")
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == code
    assert Notification.objects.count() == 0 and Event.objects.filter(type="routing.decision").count() == 0


def test_notifying_needs_the_add_notification_permission(make_connector, make_user, ada, api, token_for):
    make_connector("loc_perm")
    reach(ada, "loc_perm", "ada-perm", 1)
    mallory = make_user("mallory", staff=True)
    body = {"user": "ada", "notification_type": "urgent", "content": SECRET}

    refused = api(token_for(mallory)).post("/api/v1/notifications/", body, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert Notification.objects.count() == 0 and Delivery.objects.count() == 0 and locmem.outbox == []
    [denied] = actions("notification.create")
    assert denied.result == "denied" and denied.principal == "user:mallory"

    mallory.user_permissions.add(Permission.objects.get(codename="add_notification", content_type__app_label="routing"))
    allowed = api(token_for(mallory)).post("/api/v1/notifications/", body, format="json")
    assert allowed.status_code == 201
    assert len(locmem.outbox) == 1


def test_who_sees_what(make_connector, make_user, ada, operator, api, token_for):
    make_connector("loc_view")
    reach(ada, "loc_view", "ada-view", 1)
    notification, _ = creation.notify_user(Principal.for_user(operator, via="test"), ada, SECRET, "standard")
    auditor = make_user("auditor", staff=True)
    auditor.user_permissions.add(Permission.objects.get(codename="view_notification", content_type__app_label="routing"))
    stranger = make_user("stranger")
    url = f"/api/v1/notifications/{notification.id}/"

    mine = api(token_for(ada)).get(url)
    assert mine.status_code == 200 and mine.json()["content"] == SECRET
    assert api(token_for(ada)).get("/api/v1/notifications/").json()["count"] == 1
    audited = api(token_for(auditor)).get(url)
    assert audited.status_code == 200 and audited.json()["content"] is None and audited.json()["trace"]
    assert api(token_for(stranger)).get(url).status_code == 404
    assert api(token_for(stranger)).get("/api/v1/notifications/").json()["count"] == 0
    assert api(token_for(stranger)).post(url + "acknowledge/").status_code == 404
    # The auditor may look but not acknowledge for Ada.
    assert api(token_for(auditor)).post(url + "acknowledge/").status_code == 403
    assert api().get(url).status_code == 401


def test_without_identities_the_notification_is_unroutable(ada, operator, api, token_for):
    response = api(token_for(operator)).post(
        "/api/v1/notifications/", {"user": "ada", "content": SECRET, "notification_type": "urgent"}, format="json"
    )
    assert response.status_code == 201
    data = response.json()
    assert data["status"] == "unroutable" and data["attempts"] == []
    assert data["trace"]["chain"] == [] and data["trace"]["source"] == "default_order"
    assert Delivery.objects.count() == 0
    [decision] = events("routing.decision")
    assert decision.data["chain_length"] == 0 and decision.data["status"] == "unroutable"
    acknowledged = api(token_for(ada)).post(f"/api/v1/notifications/{data['id']}/acknowledge/")
    assert acknowledged.status_code == 409


def test_excluded_channels_are_explained_in_the_trace(make_connector, ada):
    make_connector("loc_on")
    make_connector("loc_off", start=False)
    make_connector("loc_urgent_only")
    reach(ada, "loc_on", "on", 1)
    reach(ada, "loc_off", "off", 2)
    reach(ada, "loc_urgent_only", "u", 3, types=["urgent"])
    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "standard")
    summary = inbox.summary(notification)
    assert [c["connector_id"] for c in summary["chain"]] == ["loc_on"]
    assert {c["connector_id"]: c["reason"] for c in summary["excluded"]} == {
        "loc_off": "connector not connected", "loc_urgent_only": "type not served"}
    assert all("address" not in c for c in summary["chain"] + summary["excluded"])


def test_admin_shows_the_trace_but_not_the_content(client, make_connector, ada, operator):
    make_connector("loc_admin")
    reach(ada, "loc_admin", "ada-admin", 1)
    notification, _ = creation.notify_user(SYSTEM, ada, SECRET, "standard")
    client.force_login(operator)
    page = client.get(f"/admin/routing/notification/{notification.id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "loc_admin" in html and "&quot;source&quot;: &quot;preferences&quot;" in html
    # Readable: the decision and each channel tried as tables, the raw JSON only folded away below them.
    assert "from the person&#x27;s preferences" in html and "<th>In the chain</th>" in html
    assert re.search(r"<tr><td>1</td><td>locmem</td><td>loc_admin</td><td>[^<]*</td><td>yes</td><td>ok</td></tr>", html)
    assert re.search(r"<tr><td>0</td><td>locmem</td><td>loc_admin</td><td>[0-9a-f-]{36}</td><td>[a-z ]+</td>", html)
    assert SECRET not in html
    assert client.get("/admin/routing/notification/add/").status_code == 403
