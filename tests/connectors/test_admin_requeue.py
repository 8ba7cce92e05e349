"""Staff re-queue a dead or stuck delivery from the admin's delivery list: through the service, audited, refused
without send permission."""
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from audit.models import AuditEvent
from connectors.models import Delivery, DeliveryStatus
from connectors.platforms import locmem

pytestmark = pytest.mark.django_db

LIST = "/admin/connectors/delivery/"


def requeue(client, *deliveries):
    return client.post(LIST, {"action": "requeue_selected", "_selected_action": [str(d.pk) for d in deliveries],
                              "index": "0", "select_across": "0"})


@pytest.fixture
def connector(make_connector):
    return make_connector("requeue_me")


def delivery_in(connector, status, *, attempts=5, age=0):
    row = Delivery.objects.create(connector=connector, recipient="+15550100", content="the message", status=status,
                                  attempts=attempts, principal="system:test", last_error="boom")
    Delivery.objects.filter(pk=row.pk).update(updated_at=timezone.now() - timedelta(seconds=age))
    return row


def test_a_dead_delivery_is_queued_again_audited_and_sent(client, make_user, grant, connector,
                                                          django_capture_on_commit_callbacks):
    dead = delivery_in(connector, DeliveryStatus.DEAD)
    sender = make_user("sender", staff=True)
    grant(sender, "send_via_connector", connector)
    client.force_login(sender)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = requeue(client, dead)
    assert r.status_code == 302
    dead.refresh_from_db()
    assert (dead.status, dead.attempts, dead.next_attempt_at) == (DeliveryStatus.QUEUED, 0, None)
    row = AuditEvent.objects.get(action="message.requeue", result=AuditEvent.Result.SUCCESS)
    assert row.principal == "user:sender" and row.target_id == "requeue_me"
    assert row.details["delivery_id"] == str(dead.pk) and row.details["previous"] == "dead"
    assert row.details["attempts"] == 5 and "the message" not in str(row.details)
    # It is due: the commit hands it to the sender, and it goes out.
    assert callbacks
    for callback in callbacks:
        callback()
    dead.refresh_from_db()
    assert dead.status == DeliveryStatus.SENT
    assert [m.content for _, m in locmem.outbox] == ["the message"]


def test_stuck_sending_qualifies_only_past_the_timeout(client, make_user, connector, settings):
    settings.DELIVERY_SENDING_TIMEOUT = 120
    stuck = delivery_in(connector, DeliveryStatus.SENDING, age=600)
    busy = delivery_in(connector, DeliveryStatus.SENDING, age=5)
    sent = delivery_in(connector, DeliveryStatus.SENT)
    client.force_login(make_user("boss", superuser=True))
    r = requeue(client, stuck, busy, sent)
    texts = [m.message for m in get_messages(r.wsgi_request)]
    assert Delivery.objects.get(pk=stuck.pk).status == DeliveryStatus.QUEUED
    assert Delivery.objects.get(pk=busy.pk).status == DeliveryStatus.SENDING
    assert Delivery.objects.get(pk=sent.pk).status == DeliveryStatus.SENT
    assert sum("can be re-queued" in t for t in texts) == 2 and "1 delivery queued again." in texts
    assert AuditEvent.objects.filter(action="message.requeue", result=AuditEvent.Result.FAILURE).count() == 2


def test_refused_without_send_permission(client, make_user, grant, connector):
    failed = delivery_in(connector, DeliveryStatus.FAILED)
    manager = make_user("manager", staff=True)
    grant(manager, "manage_connector", connector)
    client.force_login(manager)
    r = requeue(client, failed)
    assert any("send_via_connector" in m.message for m in get_messages(r.wsgi_request))
    assert Delivery.objects.get(pk=failed.pk).status == DeliveryStatus.FAILED
    row = AuditEvent.objects.get(action="message.requeue")
    assert row.result == AuditEvent.Result.DENIED and row.principal == "user:manager"
