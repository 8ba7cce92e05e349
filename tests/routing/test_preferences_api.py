"""REST /api/v1/identities/, /api/v1/pairing-codes/ and /api/v1/preferences/: people manage their
own, staff only with the routing model permissions, every bad input refused with a clear error and
nothing changed, every change audited and announced as `preference.updated`."""
import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from connectors.models import Event
from routing.models import ChannelIdentity, ConnectorPreference, PairingCode

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user, make_connector, token_for, api):
    """Ada with two identities (Telegram-like CLI and SMS-like locmem), Bob with one."""
    make_connector("cli_main", kind="cli")
    make_connector("locmem_main")
    ada, bob = make_user("ada"), make_user("bob")
    now = timezone.now()
    a1 = ChannelIdentity.objects.create(user=ada, connector_id="cli_main", address="ada", verified_at=now)
    a2 = ChannelIdentity.objects.create(user=ada, connector_id="locmem_main", address="+447700900123", verified_at=now)
    b1 = ChannelIdentity.objects.create(user=bob, connector_id="cli_main", address="bob", verified_at=now)
    return {"ada": ada, "bob": bob, "a1": a1, "a2": a2, "b1": b1, "client": api(token_for(ada)), "api": api,
            "token_for": token_for}


def snapshot():
    return list(ConnectorPreference.objects.order_by("pk").values()), list(ChannelIdentity.objects.order_by("pk").values())


def test_identities_are_listed_labelled_and_deleted(world):
    client, a1, a2 = world["client"], world["a1"], world["a2"]
    listed = client.get("/api/v1/identities/").json()
    assert [i["id"] for i in listed] == [a1.pk, a2.pk]  # never Bob's
    assert listed[0] == {
        "id": a1.pk, "connector": "cli_main", "connector_kind": "cli", "connector_name": "Cli Main",
        "address": "ada", "label": "", "verified_at": listed[0]["verified_at"],
    }
    response = client.patch(f"/api/v1/identities/{a1.pk}/", {"label": "Laptop"}, format="json")
    assert response.status_code == 200 and response.json()["label"] == "Laptop"
    assert client.patch(f"/api/v1/identities/{world['b1'].pk}/", {"label": "x"}, format="json").status_code == 404

    pref = client.post("/api/v1/preferences/", {"identity": a2.pk}, format="json").json()
    assert client.delete(f"/api/v1/identities/{a2.pk}/").status_code == 204
    assert not ChannelIdentity.objects.filter(pk=a2.pk).exists()
    assert not ConnectorPreference.objects.filter(pk=pref["id"]).exists()  # its preference went with it
    deleted = AuditEvent.objects.get(action="identity.deleted")
    assert deleted.details["preference_ids"] == [pref["id"]] and "+447700900123" not in str(deleted.details)
    assert Event.objects.filter(type="preference.updated", connector_id="locmem_main", data__change="identity.deleted").exists()


def test_preferences_create_update_delete_with_audit_and_events(world):
    client, ada, a1, a2 = world["client"], world["ada"], world["a1"], world["a2"]
    first = client.post("/api/v1/preferences/", {"identity": a1.pk}, format="json")
    assert first.status_code == 201
    assert first.json() == {
        "id": first.json()["id"], "identity": a1.pk, "priority": 1, "enabled": True,
        "notification_types": ["standard", "urgent", "digest"], "quiet_start": None, "quiet_end": None,
        "timezone": "UTC",
    }
    second = client.post(
        "/api/v1/preferences/",
        {"identity": a2.pk, "notification_types": ["urgent"], "quiet_start": "22:00", "quiet_end": "07:30",
         "timezone": "Europe/London"},
        format="json",
    ).json()
    assert second["priority"] == 2 and second["quiet_start"] == "22:00" and second["quiet_end"] == "07:30"

    changed = client.patch(f"/api/v1/preferences/{second['id']}/", {"enabled": False, "quiet_start": None,
                                                                      "quiet_end": None}, format="json")
    assert changed.status_code == 200 and changed.json()["enabled"] is False and changed.json()["quiet_start"] is None
    assert [p["id"] for p in client.get("/api/v1/preferences/").json()] == [first.json()["id"], second["id"]]

    assert client.delete(f"/api/v1/preferences/{first.json()['id']}/").status_code == 204
    assert list(ConnectorPreference.objects.values_list("pk", flat=True)) == [second["id"]]

    actions = list(AuditEvent.objects.filter(target_type__in=["connector_preference"]).values_list("action", "result"))
    assert actions == [("preference.created", "success"), ("preference.created", "success"),
                       ("preference.updated", "success"), ("preference.deleted", "success")]
    update = AuditEvent.objects.get(action="preference.updated")
    assert update.principal == "user:ada" and update.details["fields"] == ["enabled", "quiet_end", "quiet_start"]
    events = Event.objects.filter(type="preference.updated").order_by("seq")
    assert [(e.connector_id, e.data["change"]) for e in events] == [
        ("cli_main", "created"), ("locmem_main", "created"), ("locmem_main", "updated"), ("cli_main", "deleted")]
    assert all(e.data["user_id"] == ada.pk for e in events)
    assert events[2].data["preference_id"] == second["id"] and events[2].data["fields"] == ["enabled", "quiet_end", "quiet_start"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"identity": "b1"}, "identity"),  # Bob's identity
        ({"identity": 999999}, "identity"),
        ({}, "identity"),
        ({"identity": "a1", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"identity": "a1", "timezone": "../../etc/passwd"}, "timezone"),
        ({"identity": "a1", "quiet_start": "22:00"}, "quiet_hours"),
        ({"identity": "a1", "quiet_start": "25:00", "quiet_end": "07:00"}, "quiet_start"),
        ({"identity": "a1", "quiet_start": "7am", "quiet_end": "08:00"}, "quiet_start"),
        ({"identity": "a1", "quiet_start": "08:00", "quiet_end": "08:00"}, "quiet_hours"),
        ({"identity": "a1", "notification_types": ["standard", "spam"]}, "notification_types"),
        ({"identity": "a1", "notification_types": "urgent"}, "notification_types"),
        ({"identity": "a1", "priority": 0}, "priority"),
        ({"identity": "a1", "priority": "1"}, "priority"),
        ({"identity": "a1", "enabled": "yes"}, "enabled"),
        ({"identity": "a1", "colour": "blue"}, "colour"),
    ],
)
def test_bad_preferences_are_refused_and_nothing_is_stored(world, body, field):
    body = {k: (world[v].pk if k == "identity" and isinstance(v, str) else v) for k, v in body.items()}
    before = snapshot()
    response = world["client"].post("/api/v1/preferences/", body, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]
    assert snapshot() == before
    assert AuditEvent.objects.filter(action="preference.created", result="failure").count() == 1


def test_a_priority_clash_is_a_409_with_a_clear_message(world):
    client = world["client"]
    first = client.post("/api/v1/preferences/", {"identity": world["a1"].pk, "priority": 3}, format="json").json()
    before = snapshot()
    clash = client.post("/api/v1/preferences/", {"identity": world["a2"].pk, "priority": 3}, format="json")
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "priority_taken"
    assert "Priority 3 is already taken" in clash.json()["error"]["message"]
    second = client.post("/api/v1/preferences/", {"identity": world["a2"].pk}, format="json").json()
    assert second["priority"] == 4
    moved = client.patch(f"/api/v1/preferences/{second['id']}/", {"priority": 3}, format="json")
    assert moved.status_code == 409
    assert ConnectorPreference.objects.get(pk=second["id"]).priority == 4
    # The same identity twice is a conflict too.
    assert client.post("/api/v1/preferences/", {"identity": world["a1"].pk}, format="json").status_code == 409
    assert ConnectorPreference.objects.get(pk=first["id"]).priority == 3 and len(before[0]) == 1


def test_a_preference_cannot_be_moved_onto_another_users_identity(world):
    client = world["client"]
    pref = client.post("/api/v1/preferences/", {"identity": world["a1"].pk}, format="json").json()
    response = client.patch(f"/api/v1/preferences/{pref['id']}/", {"identity": world["b1"].pk}, format="json")
    assert response.status_code == 400 and "identity" in response.json()["error"]["details"]
    assert ConnectorPreference.objects.get().identity_id == world["a1"].pk
    # Bob cannot see or change Ada's preference.
    bob = world["api"](world["token_for"](world["bob"]))
    assert bob.patch(f"/api/v1/preferences/{pref['id']}/", {"enabled": False}, format="json").status_code == 404
    assert bob.get("/api/v1/preferences/").json() == []


def test_reorder_renumbers_at_once(world, make_connector):
    client, ada = world["client"], world["ada"]
    make_connector("cli_two", kind="cli")
    a3 = ChannelIdentity.objects.create(user=ada, connector_id="cli_two", address="ada2", verified_at=timezone.now())
    ids = [client.post("/api/v1/preferences/", {"identity": i.pk}, format="json").json()["id"]
           for i in (world["a1"], world["a2"], a3)]
    new_order = [ids[2], ids[0], ids[1]]
    response = client.post("/api/v1/preferences/reorder/", {"order": new_order}, format="json")
    assert response.status_code == 200
    assert [(p["id"], p["priority"]) for p in response.json()] == [(ids[2], 1), (ids[0], 2), (ids[1], 3)]
    assert [(p.pk, p.priority) for p in ConnectorPreference.objects.order_by("priority")] == list(zip(new_order, [1, 2, 3], strict=True))
    reordered = AuditEvent.objects.get(action="preference.reordered")
    assert reordered.details["order"] == new_order and sorted(reordered.details["changed"]) == sorted(ids)
    assert Event.objects.filter(type="preference.updated", data__change="reordered").count() == 3

    before = snapshot()
    for bad in ([ids[0], ids[1]], [ids[0], ids[0], ids[1]], [*ids, world["b1"].pk], "1,2,3"):
        refused = client.post("/api/v1/preferences/reorder/", {"order": bad}, format="json")
        assert refused.status_code == 400 and "order" in refused.json()["error"]["details"]
    assert snapshot() == before


def test_staff_act_for_others_only_with_permission(world, make_user):
    ada = world["ada"]
    pref = ConnectorPreference.objects.create(user=ada, identity=world["a1"], priority=1, notification_types=["urgent"])
    staff = make_user("sam", staff=True)
    client = world["api"](world["token_for"](staff))
    assert client.get("/api/v1/preferences/?user=ada").status_code == 404
    assert client.patch(f"/api/v1/preferences/{pref.pk}/?user=ada", {"enabled": False}, format="json").status_code == 404
    assert client.get("/api/v1/identities/?user=ada").status_code == 404
    assert client.get("/api/v1/preferences/?user=nobody").status_code == 404

    staff.user_permissions.add(Permission.objects.get(codename="view_connectorpreference"))
    staff = type(staff).objects.get(pk=staff.pk)  # drop the permission cache
    assert [p["id"] for p in client.get("/api/v1/preferences/?user=ada").json()] == [pref.pk]
    assert client.patch(f"/api/v1/preferences/{pref.pk}/?user=ada", {"enabled": False}, format="json").status_code == 404
    staff.user_permissions.add(Permission.objects.get(codename="change_connectorpreference"))
    response = client.patch(f"/api/v1/preferences/{pref.pk}/?user=ada", {"enabled": False}, format="json")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert AuditEvent.objects.get(action="preference.updated", result="success").principal == "user:sam"

    # Not staff: even with the permission, no acting for others.
    plain = make_user("pat")
    plain.user_permissions.add(Permission.objects.get(codename="view_connectorpreference"))
    assert world["api"](world["token_for"](plain)).get("/api/v1/preferences/?user=ada").status_code == 404

    root = make_user("root", superuser=True)
    assert world["api"](world["token_for"](root)).get("/api/v1/identities/?user=ada").status_code == 200


def test_session_auth_needs_csrf(world):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world["ada"])
    assert client.get("/api/v1/preferences/").status_code == 200
    refused = client.post("/api/v1/preferences/", {"identity": world["a1"].pk}, format="json")
    assert refused.status_code == 403 and ConnectorPreference.objects.count() == 0
    assert APIClient().get("/api/v1/preferences/").status_code in (401, 403)


def test_pairing_codes_over_rest(world, make_connector):
    client = world["client"]
    make_connector("cli_off", kind="cli", start=False)
    channels = client.get("/api/v1/pairing-codes/channels/").json()
    assert [(c["id"], c["kind"]) for c in channels] == [("cli_main", "cli")]  # connected and pairable only
    assert "CODE" in channels[0]["how"]
    created = client.post("/api/v1/pairing-codes/", {"connector": "cli_main"}, format="json")
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    body = created.json()
    assert len(body["code"]) == 8 and body["code"] in body["instructions"] and body["expires_at"]
    pending = client.get("/api/v1/pairing-codes/").json()
    assert len(pending) == 1 and body["code"] not in str(pending) and pending[0]["connector"] == "cli_main"
    for _ in range(2):
        client.post("/api/v1/pairing-codes/", {"connector": "cli_main"}, format="json")
    fourth = client.post("/api/v1/pairing-codes/", {"connector": "cli_main"}, format="json")
    assert fourth.status_code == 409 and fourth.json()["error"]["code"] == "too_many_pending_codes"
    assert client.post("/api/v1/pairing-codes/", {"connector": "locmem_main"}, format="json").status_code == 400
    assert client.post("/api/v1/pairing-codes/", {}, format="json").status_code == 400
    assert PairingCode.objects.count() == 3


def test_the_schema_documents_the_endpoints(world):
    schema = world["client"].get("/api/schema/?format=json").json()
    for path in ("/api/v1/identities/", "/api/v1/pairing-codes/", "/api/v1/pairing-codes/channels/",
                 "/api/v1/preferences/", "/api/v1/preferences/reorder/", "/api/v1/preferences/{id}/"):
        assert path in schema["paths"], path


def test_admin_pages_and_a_preference_saved_through_the_service(world, make_user, client):
    root = make_user("root", superuser=True)
    client.force_login(root)
    for name in ("channelidentity", "connectorpreference", "pairingcode"):
        assert client.get(f"/admin/routing/{name}/").status_code == 200
    response = client.post(
        "/admin/routing/connectorpreference/add/",
        {"user": world["ada"].pk, "identity": world["a1"].pk, "priority": 5, "enabled": "on",
         "notification_types": '["urgent"]', "quiet_start": "", "quiet_end": "", "timezone": "Mars/Base"},
    )
    assert ConnectorPreference.objects.count() == 0 and response.status_code in (200, 302)
    response = client.post(
        "/admin/routing/connectorpreference/add/",
        {"user": world["ada"].pk, "identity": world["a1"].pk, "priority": 5, "enabled": "on",
         "notification_types": '["urgent"]', "quiet_start": "", "quiet_end": "", "timezone": "UTC"},
    )
    assert response.status_code == 302
    assert ConnectorPreference.objects.get().notification_types == ["urgent"]
    assert AuditEvent.objects.get(action="preference.created", result="success").principal == "user:root"
    code = PairingCode.objects.create(user=world["ada"], connector_id="cli_main", digest="d" * 64,
                                      expires_at=timezone.now())
    page = client.get(f"/admin/routing/pairingcode/{code.pk}/change/")
    assert page.status_code == 200 and b"d" * 64 not in page.content
