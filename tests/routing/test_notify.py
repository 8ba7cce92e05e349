"""notify_user end to end: the router's chain, sends through the real delivery pipeline (locmem
and Twilio SMS against the loopback fake), fallback on a send error, on a failed receipt and on
a missing acknowledgement, and the audit/event trail (which never carries the content); the REST
API, its permissions and idempotency are in test_notify_api.py."""
from datetime import timedelta

import pytest
from django.utils import timezone

from connectors.models import Delivery
from connectors.platforms import locmem
from routing.notify import creation, settlement
from routing.router import decision as router_decision
from tests.clock import stepping_time
from tests.conftest import SYSTEM
from tests.connectors import twilio_support
from tests.connectors.twilio_support import PUBLIC, fixture, post_twilio
from tests.routing import notify_support
from tests.routing.notify_support import SECRET, actions, assert_no_content_leaked, events, reach

pytestmark = pytest.mark.django_db(transaction=True)

twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

# The fixtures (_fresh_router_cache is autouse).
_fresh_router_cache = notify_support._fresh_router_cache
ada = notify_support.ada
operator = notify_support.operator


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
