"""A connector's permission page: levels in plain words, a user picker, grants and revocations through the service."""
import re

import pytest

from audit.models import AuditEvent
from connectors.models import Connector

pytestmark = pytest.mark.django_db


@pytest.fixture
def page_url(make_connector):
    make_connector("granted", start=False)
    return "/admin/connectors/connector/granted/permissions/"


def test_the_page_offers_users_and_the_levels_in_plain_words(client, make_user, page_url):
    client.force_login(make_user("boss", superuser=True))
    make_user("helper", staff=True)
    page = client.get(page_url).content.decode()
    assert re.search(r'<select name="user"[^>]*>.*<option value="\d+">helper</option>', page, re.S)
    levels = re.findall(r'<input type="radio" name="level" value="([a-z_]+)"', page)
    assert levels == ["view_connector", "send_via_connector", "manage_connector", "read_conversations",
                      "admin_connector"]
    assert "Send: send messages through it" in page
    assert "USERNAME_FIELD" not in page and "add_connector" not in page and "change_connector" not in page


def test_granting_and_revoking_go_through_the_service(client, make_user, page_url):
    client.force_login(make_user("boss", superuser=True))
    helper = make_user("helper", staff=True)
    r = client.post(page_url, {"grant": "Grant", "user": helper.pk, "level": "send_via_connector"})
    assert r.status_code == 302
    connector = Connector.objects.get(pk="granted")
    assert helper.has_perm("connectors.send_via_connector", connector)
    grant = AuditEvent.objects.get(action="permission.grant", target_id="granted")
    assert grant.details["grantee"] == "user:helper" and grant.principal == "user:boss"
    page = client.get(page_url).content.decode()
    assert "helper" in page and "Send: send messages through it" in page

    r = client.post(page_url, {"revoke": f"user:{helper.pk}:send_via_connector"})
    assert r.status_code == 302
    fresh = type(helper).objects.get(pk=helper.pk)
    assert not fresh.has_perm("connectors.send_via_connector", connector)
    assert AuditEvent.objects.filter(action="permission.revoke", target_id="granted").exists()


def test_a_grant_without_a_user_says_so_once(client, make_user, page_url):
    client.force_login(make_user("boss", superuser=True))
    page = client.post(page_url, {"grant": "Grant", "user": "", "level": "view_connector"}).content.decode()
    assert page.count("This field is required.") == 1
    assert not AuditEvent.objects.filter(action="permission.grant").exists()


def test_only_connector_admins_open_it(client, make_user, grant, page_url):
    manager = make_user("manager", staff=True)
    grant(manager, "manage_connector", Connector.objects.get(pk="granted"))
    client.force_login(manager)
    assert client.get(page_url).status_code == 403
    r = client.post(page_url, {"grant": "Grant", "user": manager.pk, "level": "admin_connector"})
    assert r.status_code == 403
    assert not manager.has_perm("connectors.admin_connector", Connector.objects.get(pk="granted"))
    client.force_login(make_user("stranger", staff=True))
    assert client.get(page_url).status_code == 404
