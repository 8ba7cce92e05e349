"""The Django admin as staff use it: forms go through services, credentials stay write-only."""
import json
import re

import pytest

from audit.models import AuditEvent
from connectors.models import Connector

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/connectors/connector/add/"


@pytest.fixture
def superuser_client(client, make_user):
    client.force_login(make_user("boss", superuser=True))
    return client


def add_form(**overrides):
    data = {
        "id": "admin_made",
        "kind": "locmem",
        "display_name": "Made in admin",
        "config": "{}",
        "new_credentials": json.dumps({"api_key": "top-secret-admin-key"}),
        "quota_per_minute": "",
        "recipient_quota_per_minute": "",
    }
    data.update(overrides)
    return data


def test_add_connector_through_the_admin_is_audited_and_hides_credentials(superuser_client):
    r = superuser_client.post(ADD_URL, add_form())
    assert r.status_code == 302, r.content.decode()[:2000]
    connector = Connector.objects.get(pk="admin_made")
    assert connector.get_credentials() == {"api_key": "top-secret-admin-key"}
    event = AuditEvent.objects.filter(action="connector.register", target_id="admin_made").get()
    assert event.details["via"] == "admin" and event.principal == "user:boss"

    page = superuser_client.get(f"/admin/connectors/connector/{connector.pk}/change/").content.decode()
    assert "top-secret-admin-key" not in page
    assert 'name="new_credentials"' in page
    listing = superuser_client.get("/admin/connectors/connector/").content.decode()
    assert "admin_made" in listing and "top-secret-admin-key" not in listing


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"config": json.dumps({"fail_with": "often"})}, "fail_with"),
        ({"new_credentials": json.dumps({"api_key": 42})}, "api_key"),
        ({"id": "Not A Slug"}, "lowercase"),
        ({"config": "{not json"}, "Enter a valid JSON"),
    ],
)
def test_invalid_admin_form_shows_errors_and_writes_nothing(superuser_client, overrides, message):
    r = superuser_client.post(ADD_URL, add_form(**overrides))
    assert r.status_code == 200  # the form again, with errors
    assert message in r.content.decode()
    assert not Connector.objects.exists()


def test_editing_without_new_credentials_keeps_the_old_ones(superuser_client, make_connector):
    make_connector("keep_creds", start=False, credentials={"api_key": "original-key"})
    r = superuser_client.post(
        "/admin/connectors/connector/keep_creds/change/",
        {"display_name": "Renamed", "config": "{}", "new_credentials": "", "quota_per_minute": "5",
         "recipient_quota_per_minute": ""},
    )
    assert r.status_code == 302, r.content.decode()[:2000]
    connector = Connector.objects.get(pk="keep_creds")
    assert connector.display_name == "Renamed" and connector.quota_per_minute == 5
    assert connector.get_credentials() == {"api_key": "original-key"}
    update = AuditEvent.objects.filter(action="connector.update", target_id="keep_creds").last()
    assert update.details["fields"] == ["display_name", "quota_per_minute"]


def test_start_stop_and_test_actions(superuser_client, make_connector):
    make_connector("act_one", start=False)
    url = "/admin/connectors/connector/"
    superuser_client.post(url, {"action": "start_selected", "_selected_action": ["act_one"]})
    assert Connector.objects.get(pk="act_one").status == "CONNECTED"
    r = superuser_client.post(url, {"action": "test_selected", "_selected_action": ["act_one"]}, follow=True)
    assert any("act_one: healthy" in str(m) for m in r.context["messages"])
    superuser_client.post(url, {"action": "stop_selected", "_selected_action": ["act_one"]})
    assert Connector.objects.get(pk="act_one").status == "STOPPED"
    actions = list(AuditEvent.objects.filter(target_id="act_one").values_list("action", flat=True))
    assert {"connector.start", "connector.test", "connector.stop"} <= set(actions)


def test_object_permission_page_grants_through_the_service(superuser_client, make_connector, make_user):
    make_connector("perm_page", start=False)
    staff = make_user("helper", staff=True)
    url = f"/admin/connectors/connector/perm_page/permissions/user-manage/{staff.pk}/"
    page = superuser_client.get(url).content.decode()
    offered = set(re.findall(r'value="([a-z_]+_connector)"', page))
    assert offered == {"view_connector", "send_via_connector", "manage_connector", "admin_connector"}
    r = superuser_client.post(url, {"permissions": ["manage_connector"]})
    assert r.status_code == 302
    assert staff.has_perm("connectors.manage_connector", Connector.objects.get(pk="perm_page"))
    grant = AuditEvent.objects.filter(action="permission.grant", target_id="perm_page").get()
    assert grant.details["grantee"] == "user:helper" and grant.details["permission"] == "manage_connector"

    # A browser always posts something (the CSRF token); an empty POST would leave guardian's form unbound.
    superuser_client.post(url, {"permissions": [], "submit": "Save"})
    fresh = type(staff).objects.get(pk=staff.pk)
    assert not fresh.has_perm("connectors.manage_connector", Connector.objects.get(pk="perm_page"))
    assert AuditEvent.objects.filter(action="permission.revoke", target_id="perm_page").exists()


def test_audit_log_admin_is_read_only(superuser_client, make_connector):
    make_connector("audited_one", start=False)
    event = AuditEvent.objects.first()
    assert superuser_client.get("/admin/audit/auditevent/").status_code == 200
    assert superuser_client.get("/admin/audit/auditevent/add/").status_code == 403
    assert superuser_client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    change = superuser_client.post(f"/admin/audit/auditevent/{event.pk}/change/", {"action": "forged"})
    assert change.status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).action == event.action


def test_ensure_admin_prints_a_working_password_once(manage, django_user_model, client):
    first = manage("ensure_admin")
    assert first.returncode == 0, first.stderr
    password = re.search(r"password: (\S+)", first.stdout).group(1)
    assert client.login(username="admin", password=password)
    second = manage("ensure_admin")
    assert second.returncode == 0 and password not in second.stdout and "exists" in second.stdout


@pytest.mark.django_db(transaction=True)
def test_send_test_message_page_sends_through_the_pipeline(client, make_user, make_connector, grant):
    from connectors.platforms import locmem

    connector = make_connector("test_send")
    sender, viewer = make_user("sender", staff=True), make_user("viewer", staff=True)
    grant(sender, "send_via_connector", connector)
    grant(viewer, "view_connector", connector)
    url = "/admin/connectors/connector/test_send/send-test/"

    client.force_login(viewer)
    r = client.post(url, {"recipient": "+15550100", "content": "ping"})
    assert r.status_code == 200 and "send_via_connector" in r.content.decode()
    assert locmem.outbox == []
    assert AuditEvent.objects.filter(action="message.send", result="denied", principal="user:viewer").exists()

    client.force_login(sender)
    assert "Send test message" in client.get("/admin/connectors/connector/test_send/change/").content.decode()
    r = client.post(url, {"recipient": "+15550100", "content": "ping"}, follow=True)
    assert [(m.recipient, m.content) for _, m in locmem.outbox] == [("+15550100", "ping")]
    page = r.content.decode()
    assert "+15550100" in page and "sent" in page  # the per-connector delivery list, with status

    client.force_login(make_user("stranger", staff=True))
    assert client.get(url).status_code == 404
