"""The event log: each operation emits exactly its event types, in the same transaction as the
change, never with message content; the REST listing filters and paginates on seq."""
import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import ServiceError
from connectors import services
from connectors.events import log as events
from connectors.models import PERM_VIEW, Event
from connectors.platforms.base import ConnectorError, IncomingMessage, Receipt
from tests.conftest import SYSTEM

SECRET_CONTENT = "the-secret-content-7f3a"
CREDENTIAL = "cred-value-9b1c"


def new_types(after):
    return list(Event.objects.filter(seq__gt=after).order_by("seq").values_list("type", flat=True))


def incoming(message_id):
    return IncomingMessage(platform_message_id=message_id, sender="ada", content=SECRET_CONTENT)


@pytest.fixture
def last_seq():
    return lambda: events.latest_seq()


# Each operation, run against fresh connectors, and the exact event types it must append.
OPERATIONS = [
    ("register", lambda: services.register_connector(SYSTEM, id="ev_new", kind="locmem", display_name="New",
                                                       credentials={"api_key": CREDENTIAL}),
     ["connector.registered"]),
    ("update", lambda: services.update_connector(SYSTEM, "ev_idle", display_name="Renamed",
                                                  credentials={"api_key": CREDENTIAL}),
     ["connector.updated"]),
    ("start", lambda: services.start_connector(SYSTEM, "ev_idle"), ["connector.started"]),
    ("start that fails", lambda: services.start_connector(SYSTEM, "ev_broken"), ["connector.error"]),
    ("stop", lambda: services.stop_connector(SYSTEM, "ev_live"), ["connector.stopped"]),
    ("disable", lambda: services.set_disabled(SYSTEM, "ev_idle", True), ["connector.stopped"]),
    ("delete", lambda: services.delete_connector(SYSTEM, "ev_idle"), ["connector.deleted"]),
    ("send", lambda: services.send_message(SYSTEM, "ev_live", "ada", SECRET_CONTENT),
     ["connector.message.queued", "connector.message.sent"]),
    ("send that fails", lambda: services.send_message(SYSTEM, "ev_failing", "ada", SECRET_CONTENT),
     ["connector.message.queued", "connector.message.failed"]),
    ("send that retries", lambda: services.send_message(SYSTEM, "ev_flaky", "ada", SECRET_CONTENT),
     ["connector.message.queued"]),
    # The embedded BRAIN (echo) answers at once, so its reply is queued and sent too.
    ("receive", lambda: services.receive_message("ev_live", incoming("m-1")),
     ["connector.message.received", "connector.message.queued", "connector.message.sent"]),
    ("receive a duplicate", lambda: (services.receive_message("ev_live", incoming("m-2")),
                                     services.receive_message("ev_live", incoming("m-2"))),
     ["connector.message.received", "connector.message.queued", "connector.message.sent"]),
    ("health check", lambda: services.test_connector(SYSTEM, "ev_live"), ["connector.health.check"]),
    ("connector error", lambda: services.record_connector_error(SYSTEM, "ev_live", ConnectorError("revoked", code="invalid_token")),
     ["connector.error"]),
    ("refused send", lambda: _refused(lambda: services.send_message(SYSTEM, "ev_idle", "ada", SECRET_CONTENT)), []),
    ("heartbeat", lambda: services.heartbeat(SYSTEM, "ev_live"), []),
]


def _refused(call):
    try:
        call()
    except ServiceError:
        return
    raise AssertionError("the call should have been refused")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name, operation, expected", OPERATIONS, ids=[op[0] for op in OPERATIONS])
def test_each_operation_emits_exactly_its_event_types(name, operation, expected, make_connector, last_seq):
    make_connector("ev_idle", start=False)
    make_connector("ev_live")
    make_connector("ev_failing", config={"fail_with": "permanent"})
    make_connector("ev_flaky", config={"fail_with": "transient"})
    make_connector("ev_broken", start=False)
    # A kind whose class is gone cannot start: the start fails and the connector goes to ERROR.
    from connectors.models import Connector

    Connector.objects.filter(pk="ev_broken").update(kind="vanished")
    before = last_seq()
    operation()
    assert new_types(before) == expected
    # Nothing persisted carries the content or the credentials.
    dumped = json.dumps([e.envelope() for e in Event.objects.all()])
    assert SECRET_CONTENT not in dumped and CREDENTIAL not in dumped


@pytest.mark.django_db(transaction=True)
def test_receipts_and_confirmations_emit_delivered_or_failed(make_connector):
    make_connector("ev_receipts")
    first, _ = services.send_message(SYSTEM, "ev_receipts", "ada", "one")
    second, _ = services.send_message(SYSTEM, "ev_receipts", "bob", "two")
    first.refresh_from_db()
    second.refresh_from_db()
    before = events.latest_seq()
    services.apply_receipt("ev_receipts", Receipt(platform_message_id=first.platform_message_id, status="delivered"))
    services.apply_receipt("ev_receipts", Receipt(platform_message_id=second.platform_message_id, status="failed"))
    services.apply_receipt("ev_receipts", Receipt(platform_message_id="unknown", status="delivered"))
    assert new_types(before) == ["connector.message.delivered", "connector.message.failed"]
    data = Event.objects.filter(seq__gt=before).first().data
    assert data == {"delivery_id": str(first.pk), "status": "delivered", "via": "receipt"}


@pytest.mark.django_db(transaction=True)
def test_an_event_commits_or_rolls_back_with_its_change(make_connector):
    make_connector("ev_atomic", start=False)
    before = events.latest_seq()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            services.update_connector(SYSTEM, "ev_atomic", display_name="Rolled back")
            raise RuntimeError("crash after the change")
    assert events.latest_seq() == before  # neither the change nor its event
    assert not Event.objects.filter(type="connector.updated").exists()


@pytest.mark.django_db(transaction=True)
def test_seq_is_gapless_and_ordered_under_concurrent_publishers(make_connector):
    from tests.concurrency import run_at_once

    make_connector("ev_many")
    before = events.latest_seq()
    _, errors = run_at_once(lambda i: [services.send_message(SYSTEM, "ev_many", f"r{i}", "x") for _ in range(3)], 6, timeout=60)
    assert errors == []
    seqs = list(Event.objects.filter(seq__gt=before).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(before + 1, before + 1 + len(seqs)))
    assert len(seqs) == 6 * 3 * 2  # queued + sent for each message


def test_publish_refuses_unknown_types_and_content():
    with pytest.raises(ValueError, match="Unknown event type"):
        events.publish("connector.exploded")
    with pytest.raises(ValueError, match="content"):
        events.publish("connector.message.sent", connector_id="x", data={"content": "hello"})


# --- REST ------------------------------------------------------------------------------------


@pytest.fixture
def two_connectors(make_connector, make_user, grant, token_for, api):
    a = make_connector("ev_a")
    make_connector("ev_b")
    services.send_message(SYSTEM, "ev_a", "ada", "to a")
    services.send_message(SYSTEM, "ev_b", "bob", "to b")
    viewer = make_user("viewer")
    grant(viewer, PERM_VIEW, a)
    return api(token_for(viewer)), api(token_for(make_user("root", superuser=True)))


@pytest.mark.django_db(transaction=True)
def test_rest_lists_only_events_of_viewable_connectors(two_connectors):
    viewer, root = two_connectors
    seen = viewer.get("/api/v1/events/").json()["results"]
    assert {e["connector"] for e in seen} == {"ev_a"}
    assert [e["type"] for e in seen] == ["connector.registered", "connector.started",
                                         "connector.message.queued", "connector.message.sent"]
    assert {e["connector"] for e in root.get("/api/v1/events/").json()["results"]} == {"ev_a", "ev_b"}
    # Asking for a connector you may not view gives nothing rather than its events.
    assert viewer.get("/api/v1/events/?connector=ev_b").json()["results"] == []
    envelope = seen[0]
    assert envelope["specversion"] == "1.0" and envelope["source"] == "/brain-connectors"
    assert set(envelope) >= {"id", "type", "time", "subject", "data", "seq"}


@pytest.mark.django_db(transaction=True)
def test_rest_filters_by_type_connector_and_time_and_pages_on_seq(two_connectors):
    _, root = two_connectors
    body = root.get("/api/v1/events/?type=connector.message.*&connector=ev_b").json()
    assert [e["type"] for e in body["results"]] == ["connector.message.queued", "connector.message.sent"]
    everything = [e["seq"] for e in root.get("/api/v1/events/?limit=1000").json()["results"]]
    pages, url = [], "/api/v1/events/?limit=3"
    while url:
        body = root.get(url).json()
        pages.append([e["seq"] for e in body["results"]])
        url = body["next"]
    assert [seq for page in pages for seq in page] == everything and all(len(p) <= 3 for p in pages)
    future = (timezone.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    past = (timezone.now() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert root.get("/api/v1/events/", {"from": future}).json()["results"] == []
    assert len(root.get("/api/v1/events/", {"from": past, "to": future, "limit": 1000}).json()["results"]) == len(everything)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, field",
    [("colour=red", "colour"), ("type=connector.exploded", "type"), ("after=-1", "after"), ("after=abc", "after"),
     ("limit=0", "limit"), ("limit=5000", "limit"), ("limit=%C2%B2", "limit"), ("from=yesterday", "from"),
     ("to=2026-11-25T10:00:00", "to"), ("from=0001-01-01T00:00:00%2B01:00", "from")],
)
def test_rest_refuses_bad_filters_clearly(query, field, make_user, token_for, api):
    response = api(token_for(make_user("asker")))
    r = response.get(f"/api/v1/events/?{query}")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_query" and field in r.json()["error"]["details"]


@pytest.mark.django_db
def test_rest_takes_any_offset_python_can_read(make_connector, make_user, token_for, api, django_capture_on_commit_callbacks):
    """PostgreSQL refuses offsets beyond ±15:59 in a literal; the API compares in UTC instead (was a 500)."""
    with django_capture_on_commit_callbacks(execute=True):  # numbers the event on PostgreSQL
        make_connector("tg_offset")  # publishes connector.registered
    # A superuser, so that the query reaches the database (no viewable connector short-cuts it).
    r = api(token_for(make_user("root", superuser=True))).get("/api/v1/events/?from=0945-04-22T12:54:19%2B18:09")
    assert r.status_code == 200, r.content
    assert r.json()["results"], "every event is after the year 945"


@pytest.mark.django_db
def test_rest_needs_authentication(client):
    assert client.get("/api/v1/events/").status_code == 401
    assert AuditEvent.objects.filter(action="event.list").count() == 0
