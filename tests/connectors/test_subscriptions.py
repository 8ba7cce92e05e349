"""Event subscriptions: managed over REST and in the admin (owner-only, audited, unsafe URLs
refused), and delivered end to end to a loopback receiver that checks the Standard-Webhooks
signature with its own code: the body is the event's envelope, retries back off and settle."""
import base64
import json
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from connectors import services
from connectors.events import log as events
from connectors.events import subscription_delivery, subscriptions
from connectors.models import PERM_SEND, PERM_VIEW, DeliveryStatus, EventDelivery, EventSubscription
from tests.conftest import SYSTEM
from tests.fakes.receiver import FakeReceiver

pytestmark = pytest.mark.django_db(transaction=True)

LIST_URL = "/api/v1/subscriptions/"
PLACEHOLDER = "whsec_" + base64.b64encode(b"placeholder-until-we-know-it-000").decode()


@pytest.fixture(autouse=True)
def _loopback_allowed(settings):
    """The fake receiver listens on 127.0.0.1, which production refuses by default."""
    settings.BRAIN_ALLOW_PRIVATE_URLS = True
    settings.BRAIN_URL_ALLOWED_HOSTS = []
    subscriptions.invalidate_cache()
    yield
    subscriptions.invalidate_cache()


@pytest.fixture
def receiver():
    fake = FakeReceiver(secret=PLACEHOLDER).start()
    yield fake
    fake.stop()


@pytest.fixture
def ada(make_user):
    return make_user("ada")


@pytest.fixture
def ada_api(ada, api, token_for):
    return api(token_for(ada))


@pytest.fixture
def connector(make_connector, ada, grant):
    connector = make_connector("locmem_main")
    grant(ada, PERM_SEND, connector)  # send implies view: ada may see this connector's events
    return connector


def subscribe(client, receiver, event_types=("connector.message.*",), **extra):
    """Create through REST; the receiver learns the secret the server generated."""
    r = client.post(LIST_URL, {"url": receiver.url, "event_types": list(event_types), **extra}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    receiver.secrets = [body["secret"]]
    return body


def audit_rows(action, **filters):
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("id"))


def deliveries_for(subscription_id):
    return list(EventDelivery.objects.filter(subscription_id=subscription_id).select_related("event").order_by("created_at"))


def make_due(delivery):
    """Let the backoff elapse, and the sweep's grace period too."""
    past = timezone.now() - timedelta(seconds=3600)
    EventDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=past, updated_at=past)


# --- management over REST ------------------------------------------------------------------------


def test_create_returns_the_secret_once_and_never_again(ada_api, ada, receiver):
    r = ada_api.post(
        LIST_URL,
        {"url": receiver.url, "event_types": ["connector.message.*", "connector.error"], "description": "CRM"},
        format="json",
    )
    assert r.status_code == 201, r.content
    created = r.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert created["owner"] == "ada" and created["event_types"] == ["connector.message.*", "connector.error"]
    assert r["Cache-Control"] == "no-store"

    # Encrypted at rest: the column does not hold the secret.
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM connectors_eventsubscription")
        (stored,) = cursor.fetchone()
    assert secret not in stored and EventSubscription.objects.get().secret == secret

    for response in (
        ada_api.get(LIST_URL),
        ada_api.get(f"{LIST_URL}{created['id']}/"),
        ada_api.patch(f"{LIST_URL}{created['id']}/", {"description": "CRM (prod)"}, format="json"),
        ada_api.get(f"{LIST_URL}{created['id']}/deliveries/"),
    ):
        assert response.status_code == 200, response.content
        assert secret not in response.content.decode() and "whsec_" not in response.content.decode()
        assert "secret" not in json.dumps(response.json())
    listed = ada_api.get(LIST_URL).json()["results"]
    assert [s["id"] for s in listed] == [created["id"]]
    # The audit log knows what happened, never the secret nor the URL's path.
    for row in AuditEvent.objects.all():
        assert secret not in json.dumps(row.details) and "/hook" not in json.dumps(row.details)


def test_every_change_is_audited_and_rotation_shows_the_new_secret_once(ada_api, receiver):
    created = subscribe(ada_api, receiver)
    sid = created["id"]
    assert ada_api.patch(f"{LIST_URL}{sid}/", {"active": False, "event_types": ["connector.*"]},
                         format="json").status_code == 200
    r = ada_api.post(f"{LIST_URL}{sid}/rotate-secret/")
    assert r.status_code == 200
    new_secret = r.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != created["secret"]
    assert EventSubscription.objects.get(pk=sid).secret == new_secret
    assert ada_api.delete(f"{LIST_URL}{sid}/").status_code == 204
    assert not EventSubscription.objects.filter(pk=sid).exists()

    actions = [row.action for row in AuditEvent.objects.filter(target_type="event_subscription").order_by("id")]
    assert actions == [
        "subscription.create", "subscription.update", "subscription.rotate_secret", "subscription.delete",
    ]
    rows = AuditEvent.objects.filter(target_type="event_subscription").order_by("id")
    assert all(row.result == "success" and row.principal == "user:ada" and row.target_id == sid for row in rows)
    update = audit_rows("subscription.update")[0]
    assert update.details["fields"] == ["active", "event_types"] and update.details["active"] is False
    assert audit_rows("subscription.create")[0].details["host"] == "127.0.0.1"


@pytest.mark.parametrize(
    "url, allow_private",
    [
        ("ftp://example.org/hook", True),
        ("file:///etc/passwd", True),
        ("http://127.0.0.1:9/hook", False),
        ("http://localhost:9/hook", False),
        ("http://[::1]/hook", False),
        ("http://[::ffff:127.0.0.1]/hook", False),
        ("http://169.254.169.254/latest/meta-data/", True),
        ("http://[fe80::1]/hook", True),
        ("http://0.0.0.0/hook", True),
        ("http://224.0.0.1/hook", True),
        ("http://10.1.2.3/hook", False),
        ("http://192.168.1.10/hook", False),
        ("http://[2002:7f00:1::]/hook", True),  # 6to4 around 127.0.0.1
        ("https://user:pw@example.org/hook", True),
    ],
)
def test_unsafe_urls_are_refused_and_the_refusal_is_audited(ada_api, settings, url, allow_private):
    settings.BRAIN_ALLOW_PRIVATE_URLS = allow_private
    r = ada_api.post(LIST_URL, {"url": url, "event_types": ["connector.*"]}, format="json")
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "unsafe_url" and "url" in error["details"]
    assert not EventSubscription.objects.exists()
    (row,) = audit_rows("subscription.create")
    assert row.result == "failure" and row.details["error"] == "unsafe_url" and row.principal == "user:ada"


def test_an_update_to_an_unsafe_url_is_refused(ada_api, receiver):
    sid = subscribe(ada_api, receiver)["id"]
    r = ada_api.patch(f"{LIST_URL}{sid}/", {"url": "http://169.254.169.254/"}, format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsafe_url"
    assert EventSubscription.objects.get(pk=sid).url == receiver.url
    (row,) = audit_rows("subscription.update")
    assert row.result == "failure" and row.target_id == sid


def test_settings_open_private_ranges_and_named_hosts(ada_api, settings):
    settings.BRAIN_ALLOW_PRIVATE_URLS = False
    assert subscriptions.url_safety_problem("http://10.1.2.3/hook") is not None
    settings.BRAIN_ALLOW_PRIVATE_URLS = True
    assert subscriptions.url_safety_problem("http://10.1.2.3/hook") is None
    # Link-local stays refused whatever the ranges allowed: it is where cloud metadata lives.
    assert subscriptions.url_safety_problem("http://169.254.169.254/") is not None
    settings.BRAIN_ALLOW_PRIVATE_URLS = False
    assert subscriptions.url_safety_problem("http://localhost:8080/hook") is not None
    settings.BRAIN_URL_ALLOWED_HOSTS = ["localhost"]
    r = ada_api.post(LIST_URL, {"url": "http://localhost:8080/hook", "event_types": ["connector.*"]}, format="json")
    assert r.status_code == 201, r.content


@pytest.mark.parametrize("event_types", [[], ["connector.nonsense"], ["nope.*"], "connector.*"])
def test_unknown_or_missing_event_types_are_refused(ada_api, receiver, event_types):
    r = ada_api.post(LIST_URL, {"url": receiver.url, "event_types": event_types}, format="json")
    assert r.status_code == 400, r.content
    assert not EventSubscription.objects.exists()


def test_other_users_get_404_and_the_attempts_are_audited_as_denied(ada_api, receiver, make_user, api, token_for):
    sid = subscribe(ada_api, receiver)["id"]
    eve = api(token_for(make_user("eve")))
    assert eve.get(LIST_URL).json()["results"] == []
    for method, path, data in (
        ("get", f"{LIST_URL}{sid}/", None),
        ("patch", f"{LIST_URL}{sid}/", {"url": "https://evil.example/"}),
        ("delete", f"{LIST_URL}{sid}/", None),
        ("post", f"{LIST_URL}{sid}/rotate-secret/", None),
        ("get", f"{LIST_URL}{sid}/deliveries/", None),
    ):
        r = getattr(eve, method)(path, data, format="json") if data else getattr(eve, method)(path)
        assert r.status_code == 404, (method, path, r.content)
        assert r.json()["error"]["code"] == "not_found"
    denied = AuditEvent.objects.filter(principal="user:eve", result="denied").order_by("id")
    assert [row.action for row in denied] == [
        "subscription.get", "subscription.update", "subscription.delete", "subscription.rotate_secret",
        "subscription.deliveries",
    ]
    assert EventSubscription.objects.get(pk=sid).url == receiver.url
    # A superuser sees everybody's.
    boss = api(token_for(make_user("boss", superuser=True)))
    assert [s["id"] for s in boss.get(LIST_URL).json()["results"]] == [sid]
    assert boss.get(f"{LIST_URL}{sid}/").status_code == 200
    assert api().get(LIST_URL).status_code == 401


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


# --- the admin -------------------------------------------------------------------------------------


def test_admin_creates_through_the_service_shows_the_secret_once_and_rotates(client, make_user, receiver):
    staff = make_user("sam", staff=True)
    client.force_login(staff)
    r = client.post(
        "/admin/connectors/eventsubscription/add/",
        {"url": receiver.url, "event_types": "connector.message.*, connector.error", "description": "ops", "active": "on"},
        follow=True,
    )
    assert r.status_code == 200
    sub = EventSubscription.objects.get()
    assert sub.owner == staff and sub.event_types == ["connector.message.*", "connector.error"]
    assert sub.secret in r.content.decode()  # the one-time message
    assert audit_rows("subscription.create")[0].details["via"] == "admin"

    page = client.get(f"/admin/connectors/eventsubscription/{sub.pk}/change/").content.decode()
    assert sub.secret not in page and "whsec_" not in page

    r = client.post(
        "/admin/connectors/eventsubscription/",
        {"action": "rotate_secret_selected", "_selected_action": [str(sub.pk)]},
        follow=True,
    )
    sub.refresh_from_db()
    assert sub.secret in r.content.decode()
    assert len(audit_rows("subscription.rotate_secret")) == 1

    r = client.post("/admin/connectors/eventsubscription/add/",
                    {"url": "http://169.254.169.254/", "event_types": "connector.*", "active": "on"}, follow=True)
    assert "refused" in r.content.decode() and EventSubscription.objects.count() == 1
    assert audit_rows("subscription.create")[-1].result == "failure"
