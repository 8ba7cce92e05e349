"""The MCP tool notify_user through the official SDK client against `manage.py runmcp` (stdio):
the chain and the router's reasons come back, the notification is stored and sent, and a
principal without routing.add_notification gets a tool error and a denied audit row."""
import pytest
from django.utils import timezone

from audit.models import AuditEvent
from connectors.models import Delivery
from routing.models import ChannelIdentity, ConnectorPreference, Notification
from tests.mcp_client import error_text, run, stdio_session, structured

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def reach(user, connector_id, address, priority):
    identity = ChannelIdentity.objects.create(user=user, connector_id=connector_id, address=address,
                                              verified_at=timezone.now())
    ConnectorPreference.objects.create(user=user, identity=identity, priority=priority,
                                       notification_types=["standard", "urgent", "digest"])
    return identity


def call(subprocess_env, token, arguments):
    async def scenario():
        async with stdio_session({**subprocess_env, "BRAIN_MCP_TOKEN": token}) as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            return tools, await session.call_tool("notify_user", arguments)

    return run(scenario())


def test_notify_user_tool_returns_the_chain_and_the_reasons(make_connector, make_user, token_for, subprocess_env):
    make_connector("loc_down", start=False)
    make_connector("loc_up")
    ada = make_user("ada")
    down = reach(ada, "loc_down", "ada-down", 1)
    up = reach(ada, "loc_up", "ada-up", 2)
    token = token_for(make_user("claude", superuser=True))

    tools, result = call(subprocess_env, token,
                         {"username": "ada", "content": "Standup moved to 10:30", "notification_type": "standard"})

    assert "notify_user" in tools
    data = structured(result)
    notification = Notification.objects.get(pk=data["notification_id"])
    assert data["status"] in ("sending", "delivered") and notification.user == ada
    assert data["replayed"] is False and data["source"] == "preferences"
    assert [(c["identity_id"], c["connector_id"]) for c in data["chain"]] == [(up.pk, "loc_up")]
    assert [(c["identity_id"], c["reason"]) for c in data["included"]] == [(up.pk, "ok")]
    assert [(c["identity_id"], c["reason"]) for c in data["excluded"]] == [(down.pk, "connector not connected")]
    assert "ada-up" not in str(data)  # addresses only as masked hints
    assert Delivery.objects.get(pk=notification.current_delivery_id).recipient == "ada-up"
    row = AuditEvent.objects.get(action="notification.create")
    assert (row.principal, row.details["via"]) == ("user:claude", "mcp")


def test_notify_user_tool_without_permission_is_a_tool_error(make_connector, make_user, token_for, subprocess_env):
    make_connector("loc_up")
    ada = make_user("ada")
    reach(ada, "loc_up", "ada-up", 1)
    token = token_for(make_user("intern"))

    _, result = call(subprocess_env, token, {"username": "ada", "content": "hi", "notification_type": "urgent"})

    assert "routing.add_notification" in error_text(result)
    assert Notification.objects.count() == 0 and Delivery.objects.count() == 0
    row = AuditEvent.objects.get(action="notification.create")
    assert (row.principal, row.result) == ("user:intern", "denied")
