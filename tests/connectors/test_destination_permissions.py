"""Where a connector sends its credentials and messages is an admin decision (issue 14, item 2).

`manage_connector` may change a connector's config, but not the keys that decide where the
credentials or message content go (`api_base_url`, the webhook kind's `url`): changing, adding or
removing one needs `admin_connector`, like the credentials themselves. A refusal is a 403 audited as
`denied`; a change is audited with the old and new origin (scheme, host, port: never the path or
query, which can hold tokens). Checked through REST, the admin form and the service."""
import json

import pytest
from django.conf import settings as django_settings

from audit.models import AuditEvent
from brain_connectors.shared.errors import Conflict, PermissionDenied
from connectors import services
from connectors.models import PERM_ADMIN, PERM_MANAGE, Connector
from connectors.permissions import Principal
from connectors.registry import validation
from connectors.registry.kinds import get_connector_class
from tests.connectors import url_guard_support
from tests.connectors.url_guard_support import PUBLIC_ADDRESS

pytestmark = pytest.mark.django_db

dns = url_guard_support.dns

TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SECRET = "a-long-enough-plain-secret"
TG = {"mode": "polling", "api_base_url": "https://bot-api.example/base", "timeout": 5}


@pytest.fixture(autouse=True)
def names(dns):
    dns.update({"bot-api.example": [PUBLIC_ADDRESS], "attacker.example": [PUBLIC_ADDRESS],
                "hooks.example": [PUBLIC_ADDRESS]})
    return dns


@pytest.fixture
def tg(make_connector):
    return make_connector("tg_main", kind="telegram", start=False, config=dict(TG), credentials={"bot_token": TOKEN})


@pytest.fixture
def hook(make_connector):
    return make_connector("hook_main", kind="webhook", start=False, config={"url": "https://hooks.example/in"},
                          credentials={"signing_secret": SECRET})


@pytest.fixture
def people(make_user, grant, tg, hook):
    manager, admin = make_user("mia", staff=True), make_user("adam", staff=True)
    for connector in (tg, hook):
        grant(manager, PERM_MANAGE, connector)
        grant(admin, PERM_ADMIN, connector)
    return manager, admin


def patch(api, token_for, user, connector_id, config):
    return api(token_for(user)).patch(f"/api/v1/connectors/{connector_id}/", {"config": config}, format="json")


def update_rows(connector_id):
    return list(AuditEvent.objects.filter(action="connector.update", target_id=connector_id).order_by("id"))


@pytest.mark.parametrize(
    "connector_id, config",
    [
        ("tg_main", {**TG, "api_base_url": "https://attacker.example:8443/listen"}),  # changed
        ("tg_main", {"mode": "polling", "timeout": 5}),  # removed: back to the default server
        ("hook_main", {"url": "https://attacker.example/collect"}),
    ],
)
def test_a_manager_cannot_move_where_credentials_or_messages_go(people, api, token_for, connector_id, config):
    manager, _ = people
    before = Connector.objects.get(pk=connector_id).config
    r = patch(api, token_for, manager, connector_id, config)
    assert r.status_code == 403, r.content
    error = r.json()["error"]
    assert error["code"] == "permission_denied" and "admin_connector" in error["message"]
    assert Connector.objects.get(pk=connector_id).config == before
    (row,) = update_rows(connector_id)
    assert row.result == "denied" and row.principal == "user:mia"
    assert "attacker" not in json.dumps(row.details)  # the refusal names the key, not the value


def test_adding_a_destination_needs_admin_too(people, api, token_for, tg):
    manager, _ = people
    services.update_connector(Principal.system_actor("t"), "tg_main", config={"mode": "polling"})
    r = patch(api, token_for, manager, "tg_main", {"mode": "polling", "api_base_url": "https://attacker.example"})
    assert r.status_code == 403
    assert "api_base_url" not in Connector.objects.get(pk="tg_main").config


def test_a_manager_may_change_everything_else_in_the_config(people, api, token_for):
    manager, _ = people
    r = patch(api, token_for, manager, "tg_main", {**TG, "timeout": 20})
    assert r.status_code == 200, r.content
    assert Connector.objects.get(pk="tg_main").config["timeout"] == 20
    r = patch(api, token_for, manager, "hook_main", {"url": "https://hooks.example/in", "timeout": 3})
    assert r.status_code == 200, r.content
    (row,) = [r for r in update_rows("hook_main") if r.result == "success"]
    assert "destinations" not in row.details


def test_an_admin_change_is_audited_with_the_old_and_new_origin_only(people, api, token_for):
    _, admin = people
    config = {**TG, "api_base_url": "https://Attacker.example:8443/bot-path/s3cr3t"}
    r = patch(api, token_for, admin, "tg_main", config)
    assert r.status_code == 200, r.content
    assert Connector.objects.get(pk="tg_main").config == config
    (row,) = update_rows("tg_main")
    assert row.result == "success" and row.details["destinations"] == {
        "api_base_url": {"old": "https://bot-api.example", "new": "https://attacker.example:8443"}
    }
    assert "s3cr3t" not in json.dumps(row.details) and "bot-path" not in json.dumps(row.details)


def test_registration_records_where_a_connector_sends(make_connector):
    make_connector("hook2", kind="webhook", start=False, config={"url": "https://hooks.example/in?k=1"},
                   credentials={"signing_secret": SECRET})
    row = AuditEvent.objects.get(action="connector.register", target_id="hook2")
    assert row.details["destinations"] == {"url": {"old": None, "new": "https://hooks.example"}}


def test_the_admin_form_applies_the_same_rule(people, client):
    manager, admin = people
    client.force_login(manager)
    form = {"display_name": "Tg", "config": json.dumps({**TG, "api_base_url": "https://attacker.example"}),
            "quota_per_minute": "", "recipient_quota_per_minute": ""}
    r = client.post("/admin/connectors/connector/tg_main/change/", form, follow=True)
    assert any("admin_connector" in str(m) for m in r.context["messages"])
    assert Connector.objects.get(pk="tg_main").config == TG
    assert [row.result for row in update_rows("tg_main")] == ["denied"]
    client.force_login(admin)
    r = client.post("/admin/connectors/connector/tg_main/change/", {**form, "new_credentials": ""})
    assert r.status_code == 302, r.content.decode()[:2000]
    assert Connector.objects.get(pk="tg_main").config["api_base_url"] == "https://attacker.example"
    assert update_rows("tg_main")[-1].details["destinations"]["api_base_url"]["new"] == "https://attacker.example"


def test_the_service_refuses_a_manager_before_any_dns_lookup(people, names, monkeypatch):
    manager, _ = people
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("no DNS lookup for a refused caller"))
    with pytest.raises(PermissionDenied, match="api_base_url"):
        services.update_connector(Principal.for_user(manager, via="test"), "tg_main",
                                  config={**TG, "api_base_url": "https://attacker.example"})


def test_every_url_like_config_key_is_declared_a_destination():
    """A new platform key that names a server (…url, …host, …endpoint) must be declared, so that
    it needs admin_connector and passes the guard; this catches one added without it."""
    for kind, path in django_settings.CONNECTOR_CLASSES.items():
        cls = get_connector_class(kind)
        declared = set(cls.destination_config_keys)
        for key in cls.config_schema.get("properties", {}):
            if any(word in key.lower() for word in ("url", "host", "endpoint", "server", "uri")):
                assert key in declared, f"{kind}: config key {key!r} looks like a destination ({path})"
        assert declared <= set(cls.config_schema.get("properties", {})), kind


def test_a_destination_moved_by_someone_else_meanwhile_is_a_conflict(people, monkeypatch):
    """The permission is decided on a first read without the lock; if an admin moved the destination
    before the lock is taken, the manager's config (which would move it back) is refused, not saved."""
    manager, _ = people
    real_check = validation.check_destinations

    def admin_changes_it_meanwhile(kind_class, changes):
        real_check(kind_class, changes)
        Connector.objects.filter(pk="tg_main").update(config={**TG, "api_base_url": "https://hooks.example"})

    monkeypatch.setattr(validation, "check_destinations", admin_changes_it_meanwhile)
    with pytest.raises(Conflict) as caught:
        services.update_connector(Principal.for_user(manager, via="test"), "tg_main", config={**TG, "timeout": 9})
    assert caught.value.code == "config_changed"
    assert Connector.objects.get(pk="tg_main").config["api_base_url"] == "https://hooks.example"
