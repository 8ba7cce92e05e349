"""Event subscriptions delivered end to end to the loopback receiver: signed envelopes, retries and backoff, filtering, URL checks at delivery time."""
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from connectors import services
from connectors.events import log as events
from connectors.events import subscription_delivery
from connectors.models import PERM_SEND, PERM_VIEW, DeliveryStatus, EventDelivery
from tests.conftest import SYSTEM
from tests.connectors import subscriptions_support
from tests.connectors.subscriptions_support import LIST_URL, audit_rows, deliveries_for, make_due, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

# The fixtures (_loopback_allowed is autouse).
_loopback_allowed = subscriptions_support._loopback_allowed
receiver = subscriptions_support.receiver
ada = subscriptions_support.ada
ada_api = subscriptions_support.ada_api
connector = subscriptions_support.connector


# --- delivery, end to end --------------------------------------------------------------------------


def test_message_events_arrive_signed_as_their_envelope_without_content(ada_api, connector, receiver):
    sub = subscribe(ada_api, receiver, ["connector.message.*"])
    services.send_message(SYSTEM, connector.pk, "someone", "The secret plan is in the drawer.")

    posts = receiver.requests
    sent_types = [p.json["type"] for p in posts]
    assert "connector.message.queued" in sent_types and "connector.message.sent" in sent_types
    assert all(t.startswith("connector.message.") for t in sent_types)
    for post in posts:
        assert post.verified, post.rejection  # checked by the receiver's own HMAC code
        assert post.status == 200
        assert post.headers["content-type"] == "application/json"
        assert post.headers["user-agent"].startswith("BRAIN-Connectors")
        event = events.Event.objects.get(event_id=post.json["id"])
        assert post.json == event.envelope()
        assert post.webhook_id == str(event.event_id)
        assert b"secret plan" not in post.body
    rows = deliveries_for(sub["id"])
    assert len(rows) == len(posts) and {r.status for r in rows} == {DeliveryStatus.SENT}
    assert all(r.attempts == 1 and r.response_status == 200 and r.sent_at for r in rows)
    assert len(audit_rows("subscription.delivery.sent")) == len(posts)

    listed = ada_api.get(f"{LIST_URL}{sub['id']}/deliveries/").json()["results"]
    assert {d["event_type"] for d in listed} == set(sent_types)
    assert all(d["status"] == "sent" and d["response_status"] == 200 and d["attempts"] == 1 for d in listed)


def test_a_503_is_retried_after_the_backoff_and_then_sent(ada_api, connector, receiver):
    sub = subscribe(ada_api, receiver, ["connector.health.check"])
    receiver.retry_after = 30
    receiver.queue_modes("error_503", "ok")
    events.publish("connector.health.check", connector_id=connector.pk, data={"ok": True})

    (delivery,) = deliveries_for(sub["id"])
    assert delivery.status == DeliveryStatus.QUEUED and delivery.attempts == 1
    assert delivery.response_status == 503 and "503" in delivery.last_error
    # Retry-After is honoured: not before 30 s from now.
    assert delivery.next_attempt_at >= timezone.now() + timedelta(seconds=25)
    assert len(receiver.requests) == 1

    # An early task (a duplicate, or the sweep before the time) changes nothing.
    subscription_delivery.deliver_event(delivery.pk)
    assert subscription_delivery.sweep()["event_deliveries_due"] == 0
    assert len(receiver.requests) == 1

    make_due(delivery)
    assert subscription_delivery.sweep()["event_deliveries_due"] == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 2 and delivery.response_status == 200
    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id == str(delivery.event.event_id)  # receivers can dedupe
    assert first.body == second.body and second.verified
    assert [r.action for r in AuditEvent.objects.filter(action__startswith="subscription.delivery").order_by("id")] == [
        "subscription.delivery.retry", "subscription.delivery.sent",
    ]


def test_a_400_fails_permanently(ada_api, connector, receiver):
    sub = subscribe(ada_api, receiver, ["connector.health.check"])
    receiver.queue_modes("error_400")
    events.publish("connector.health.check", connector_id=connector.pk, data={"ok": True})
    (delivery,) = deliveries_for(sub["id"])
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 1 and delivery.response_status == 400
    make_due(delivery)
    subscription_delivery.sweep()
    assert len(receiver.requests) == 1
    (row,) = audit_rows("subscription.delivery.failed")
    assert row.result == "failure" and row.details["response_status"] == 400


def test_transient_failures_end_dead_after_the_maximum_attempts(ada_api, connector, receiver, settings):
    settings.DELIVERY_MAX_ATTEMPTS = 3
    sub = subscribe(ada_api, receiver, ["connector.health.check"])
    receiver.mode = "error_500"
    events.publish("connector.health.check", connector_id=connector.pk, data={"ok": False})
    (delivery,) = deliveries_for(sub["id"])
    for _ in range(2):
        assert delivery.status == DeliveryStatus.QUEUED
        make_due(delivery)
        subscription_delivery.sweep()
        delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DEAD and delivery.attempts == 3
    assert len(receiver.requests) == 3


def test_an_unreachable_receiver_is_retried_and_a_stuck_delivery_is_redriven(ada_api, connector, receiver):
    sub = subscribe(ada_api, receiver, ["connector.health.check"])
    receiver.down()
    events.publish("connector.health.check", connector_id=connector.pk, data={"ok": True})
    (delivery,) = deliveries_for(sub["id"])
    assert delivery.status == DeliveryStatus.QUEUED and "unreachable" in delivery.last_error
    receiver.up()
    # A worker died mid-POST: the row sits in `sending`.
    long_ago = timezone.now() - timedelta(hours=1)
    EventDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SENDING, updated_at=long_ago)
    assert subscription_delivery.sweep()["event_deliveries_redriven"] == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 2
    assert len(audit_rows("subscription.delivery.redrive")) == 1
    assert receiver.requests[-1].verified


def test_event_types_select_what_is_delivered(ada_api, connector, receiver):
    errors_only = subscribe(ada_api, receiver, ["connector.error"])
    messages = ada_api.post(LIST_URL, {"url": receiver.url, "event_types": ["connector.message.*"]}, format="json").json()
    everything = ada_api.post(LIST_URL, {"url": receiver.url, "event_types": ["connector.*"]}, format="json").json()
    receiver.require_signature = False  # three secrets; the signature is covered elsewhere
    for event_type in ("connector.message.sent", "connector.error", "connector.health.check"):
        events.publish(event_type, connector_id=connector.pk, data={})

    def types(sub):
        return [d.event.type for d in deliveries_for(sub["id"])]

    assert types(errors_only) == ["connector.error"]
    assert types(messages) == ["connector.message.sent"]
    assert types(everything) == ["connector.message.sent", "connector.error", "connector.health.check"]
    assert len(receiver.requests) == 5


def test_inactive_subscriptions_receive_nothing(ada_api, connector, receiver):
    sub = subscribe(ada_api, receiver, ["connector.*"], active=False)
    events.publish("connector.error", connector_id=connector.pk, data={})
    assert deliveries_for(sub["id"]) == [] and receiver.requests == []


def test_events_of_connectors_the_owner_cannot_view_are_not_delivered(ada, ada_api, make_connector, connector, receiver):
    sub = subscribe(ada_api, receiver, ["connector.*"])
    make_connector("hidden_one", start=False)  # ada has no permission on it
    events.publish("connector.error", connector_id="hidden_one", data={})
    events.publish("connector.error", connector_id="", data={})  # about no connector: superusers only
    assert deliveries_for(sub["id"]) == [] and receiver.requests == []

    # Visible when published, no longer when delivered: the delivery fails, nothing is sent.
    with transaction.atomic():
        events.publish("connector.error", connector_id=connector.pk, data={})
        services.revoke_permission(SYSTEM, connector.pk, PERM_SEND, user=ada)
        assert not ada.has_perm(PERM_VIEW, connector)
    (delivery,) = deliveries_for(sub["id"])
    assert delivery.status == DeliveryStatus.FAILED and delivery.last_error == subscription_delivery.NOT_VISIBLE
    assert receiver.requests == []


def test_a_url_that_became_unsafe_fails_at_delivery_time(ada_api, connector, receiver, settings):
    sub = subscribe(ada_api, receiver, ["connector.error"])
    settings.BRAIN_ALLOW_PRIVATE_URLS = False  # as if the name now resolved to loopback
    events.publish("connector.error", connector_id=connector.pk, data={})
    (delivery,) = deliveries_for(sub["id"])
    assert delivery.status == DeliveryStatus.FAILED and delivery.last_error.startswith("unsafe url")
    assert receiver.requests == []


def test_a_host_name_is_resolved_checked_and_pinned(ada_api, connector, receiver):
    url = receiver.url.replace("127.0.0.1", "localhost")
    r = ada_api.post(LIST_URL, {"url": url, "event_types": ["connector.error"]}, format="json")
    assert r.status_code == 201, r.content
    receiver.secrets = [r.json()["secret"]]
    events.publish("connector.error", connector_id=connector.pk, data={})
    (post,) = receiver.requests
    assert post.verified and post.headers["host"] == url.split("/")[2]  # the name, not the address


def test_publishing_without_subscriptions_costs_no_subscription_query(connector):
    events.publish("connector.error", connector_id=connector.pk, data={})  # warms the cache
    with CaptureQueriesContext(connection) as queries:
        events.publish("connector.error", connector_id=connector.pk, data={})
    assert not [q for q in queries.captured_queries if "eventsubscription" in q["sql"].lower()]


def test_a_new_subscription_is_seen_at_once_by_this_process(ada_api, connector, receiver):
    events.publish("connector.error", connector_id=connector.pk, data={})  # caches "none"
    sub = subscribe(ada_api, receiver, ["connector.error"])
    events.publish("connector.error", connector_id=connector.pk, data={})
    assert len(deliveries_for(sub["id"])) == 1 and len(receiver.verified) == 1
