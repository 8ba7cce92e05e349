"""Event subscriptions: managed over REST and in the admin (owner-only, audited, unsafe URLs
refused); their delivery end to end is in test_subscriptions_delivery.py."""
import base64
import json

import pytest
from django.db import connection

from audit.models import AuditEvent
from connectors.events import subscriptions
from connectors.models import EventSubscription
from tests.connectors import subscriptions_support
from tests.connectors.subscriptions_support import LIST_URL, audit_rows, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

# The fixtures (_loopback_allowed is autouse).
_loopback_allowed = subscriptions_support._loopback_allowed
receiver = subscriptions_support.receiver
ada = subscriptions_support.ada
ada_api = subscriptions_support.ada_api
connector = subscriptions_support.connector


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
