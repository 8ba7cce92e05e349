"""notify_user over the REST API (idempotency keys, input checks, permissions, who sees what), the trace of excluded channels and the admin."""
import re

import pytest
from django.contrib.auth.models import Permission

from connectors.models import Delivery, Event
from connectors.permissions import Principal
from connectors.platforms import locmem
from routing.models import Notification
from routing.notify import creation, inbox
from tests.conftest import SYSTEM
from tests.routing import notify_support
from tests.routing.notify_support import SECRET, actions, events, reach

pytestmark = pytest.mark.django_db(transaction=True)


# The fixtures (_fresh_router_cache is autouse).
_fresh_router_cache = notify_support._fresh_router_cache
ada = notify_support.ada
operator = notify_support.operator


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
