"""Issue 14, item 4: reading other people's conversations needs `read_conversations` on their
connector (admin_connector implies it; view, send and manage do not). It holds for search, context,
export, sentiment, the admin and MCP alike; a person always reads their own conversations."""
import asyncio

import pytest
from django.contrib.auth.models import Permission

from audit.models import AuditEvent
from brain_connectors.mcp import server as mcp_server
from brain_connectors.shared.errors import NotFound, PermissionDenied
from connectors import services
from connectors.models import Connector
from connectors.permissions import Principal
from connectors.platforms.base import IncomingMessage
from conversations import privacy
from conversations.models import Conversation
from conversations.recording import record_pending
from conversations.services import context_for_address, search
from routing import identities
from routing.notify import creation
from tests.conftest import SYSTEM
from tests.mcp_client import error_text, structured

SEARCH = "/api/v1/conversations/search/"
ALL_THREE = {"ada zebra diary", "zoe zebra medical note", "zebra parcel for bob"}


def as_user(user):
    return Principal.for_user(user, via="test")


@pytest.fixture
def shop(make_connector, make_user, grant, settings):
    """Connector "shop": Ada's own conversation, a stranger's (Zoe, no account) and a notification
    to Bob; one user per grant."""
    settings.BRAIN_BACKEND = "tests.connectors.broken.CountingBrain"  # replies without the words searched
    make_connector("shop")
    ada, bob = make_user("ada"), make_user("bob")
    identities.add_identity(SYSTEM, ada, "shop", "ada-addr")
    identities.add_identity(SYSTEM, bob, "shop", "bob-addr")
    services.receive_message("shop", IncomingMessage(sender="ada-addr", content="ada zebra diary", platform_message_id="1"))
    services.receive_message("shop", IncomingMessage(sender="zoe", content="zoe zebra medical note", platform_message_id="2"))
    creation.notify_user(SYSTEM, bob, "zebra parcel for bob", "standard")
    record_pending()  # in this one-transaction test, on-commit kicks never run: the consumer's turn
    people = {"ada": ada, "bob": bob}
    conn = Connector.objects.get(pk="shop")
    for name, perm in (("viewer", "view_connector"), ("sender", "send_via_connector"), ("manager", "manage_connector"),
                       ("reader", "read_conversations"), ("owner", "admin_connector")):
        people[name] = make_user(name)
        grant(people[name], perm, conn)
    people["outsider"] = make_user("outsider")
    return people


def found(user, **kwargs):
    return {m.content for m in search(as_user(user), "zebra", **kwargs)}


# --- search ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("viewer", set()), ("sender", set()), ("manager", set()), ("outsider", set()),
    ("reader", ALL_THREE), ("owner", ALL_THREE),
    ("ada", {"ada zebra diary"}), ("bob", {"zebra parcel for bob"}),  # their own, with no grant at all
])
def test_search_shows_other_peoples_messages_only_with_read_conversations(shop, name, expected, api, token_for):
    assert found(shop[name]) == expected
    response = api(token_for(shop[name])).get(SEARCH, {"q": "zebra"})
    assert response.status_code == 200
    assert {r["content"] for r in response.json()["results"]} == expected


def test_search_of_one_connector(shop, api, token_for):
    # A connector one may view, without read_conversations: one's own messages there, none of others'.
    assert found(shop["sender"], connector_id="shop") == set()
    assert found(shop["ada"], connector_id="shop") == {"ada zebra diary"}
    assert found(shop["reader"], connector_id="shop") == ALL_THREE
    with pytest.raises(NotFound):  # neither viewable nor one's own: hidden, as before
        search(as_user(shop["outsider"]), "zebra", connector_id="shop")
    assert api(token_for(shop["outsider"])).get(SEARCH, {"q": "zebra", "connector": "shop"}).status_code == 404


# --- context (the service behind MCP's get_conversation_context) --------------------------------------


def test_context_of_someone_elses_conversation_needs_read_conversations(shop):
    for name in ("viewer", "sender", "manager"):
        with pytest.raises(PermissionDenied, match="read_conversations"):
            context_for_address(as_user(shop[name]), "shop", "zoe")
    denied = AuditEvent.objects.filter(action="conversation.context", result="denied", principal="user:viewer")
    assert denied.get().target_id == "shop"
    with pytest.raises(NotFound):
        context_for_address(as_user(shop["outsider"]), "shop", "zoe")
    assert context_for_address(as_user(shop["reader"]), "shop", "zoe")[0]["content"] == "zoe zebra medical note"
    assert context_for_address(as_user(shop["owner"]), "shop", "zoe")[0]["content"] == "zoe zebra medical note"
    # One's own conversation, with no permission on the connector at all.
    assert context_for_address(as_user(shop["ada"]), "shop", "ada-addr")[0]["content"] == "ada zebra diary"


def test_context_stays_on_the_connector_read_even_with_cross_channel_context(shop, make_connector, settings):
    settings.CONVERSATION_CONTEXT_CROSS_CHANNEL = True  # BRAIN's context spans Ada's channels…
    make_connector("clinic")
    identities.add_identity(SYSTEM, shop["ada"], "clinic", "ada-clinic")
    services.receive_message("clinic", IncomingMessage(sender="ada-clinic", content="ada clinic results",
                                                       platform_message_id="c1"))
    # …but a reader of "shop" reads Ada's conversation there only, not what she said elsewhere.
    seen = [m["content"] for m in context_for_address(as_user(shop["reader"]), "shop", "ada-addr")]
    assert "ada zebra diary" in seen and "ada clinic results" not in seen


# --- export and sentiment -----------------------------------------------------------------------------


def staff_with(make_user, name, *codenames):
    user = make_user(name, staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def test_exporting_someone_else_needs_read_conversations_on_their_connectors(shop, make_user, grant, api, token_for):
    officer = staff_with(make_user, "officer", "view_conversation")
    grant(officer, "manage_connector", Connector.objects.get(pk="shop"))
    client = api(token_for(officer))
    export = "/api/v1/conversations/people/ada/export/"
    sentiment = "/api/v1/conversations/people/ada/sentiment/"

    assert client.get(export).status_code == 403
    assert client.get(sentiment).status_code == 403
    assert AuditEvent.objects.filter(action="conversations.export", result="denied", principal="user:officer").exists()
    with pytest.raises(PermissionDenied):
        privacy.export_person(as_user(officer), "ada")

    grant(officer, "read_conversations", Connector.objects.get(pk="shop"))
    answer = client.get(export)
    assert answer.status_code == 200 and "ada zebra diary" in answer.content.decode()
    assert client.get(sentiment).status_code == 200
    # One's own export needs nothing.
    assert api(token_for(shop["ada"])).get(export).status_code == 200


# --- the admin ----------------------------------------------------------------------------------------


def test_the_admin_lists_only_conversations_one_may_read(shop, make_user, grant, client):
    staff = staff_with(make_user, "clerk", "view_conversation")
    grant(staff, "view_connector", Connector.objects.get(pk="shop"))
    client.force_login(staff)
    url = "/admin/conversations/conversation/"

    assert client.get(url).context["cl"].result_count == 0
    zoe = Conversation.objects.get(address="zoe")
    assert client.get(f"{url}{zoe.pk}/change/").status_code in (302, 404)

    grant(staff, "read_conversations", Connector.objects.get(pk="shop"))
    assert client.get(url).context["cl"].result_count == 3
    assert client.get(f"{url}{zoe.pk}/change/").status_code == 200


# --- the permission itself -------------------------------------------------------------------------------


def test_read_conversations_is_granted_like_the_other_levels_and_implies_view_only(shop, api, token_for):
    owner = api(token_for(shop["owner"]))
    granted = owner.post("/api/v1/connectors/shop/permissions/", {"username": "outsider",
                                                                   "permission": "read_conversations"}, format="json")
    assert granted.status_code == 200, granted.content
    assert owner.get("/api/v1/connectors/shop/permissions/").json()["users"]["outsider"] == ["read_conversations"]

    reader = api(token_for(shop["outsider"]))
    assert reader.get("/api/v1/connectors/shop/").status_code == 200  # implies view
    assert reader.post("/api/v1/connectors/shop/send/", {"recipient": "x", "content": "hi"},
                       format="json").status_code == 403
    assert reader.post("/api/v1/connectors/shop/stop/").status_code == 403
    assert found(shop["outsider"]) == ALL_THREE


def test_the_admin_permission_page_offers_read_conversations(shop, make_user, client):
    client.force_login(make_user("root", superuser=True))
    page = client.get("/admin/connectors/connector/shop/permissions/user-manage/%d/" % shop["reader"].pk)
    assert page.status_code == 200
    assert b'value="read_conversations"' in page.content


# --- MCP, through the SDK client ------------------------------------------------------------------------


def call_tool(token, name, arguments):
    from mcp import Client

    async def scenario():
        async with Client(mcp_server.build_server(stdio_token=token)) as client:
            return await client.call_tool(name, arguments)

    return asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.django_db(transaction=True)
def test_mcp_context_and_search_follow_the_same_rule(shop, token_for):
    viewer, reader, ada = (token_for(shop[name]) for name in ("viewer", "reader", "ada"))
    zoe = {"connector_id": "shop", "address": "zoe"}

    refused = call_tool(viewer, "get_conversation_context", zoe)
    assert "read_conversations" in error_text(refused)
    contents = [m["content"]["untrusted_user_content"] for m in structured(
        call_tool(reader, "get_conversation_context", zoe))["messages"]]
    assert "zoe zebra medical note" in contents
    own = structured(call_tool(ada, "get_conversation_context", {"connector_id": "shop", "address": "ada-addr"}))
    assert own["messages"][0]["content"] == {"untrusted_user_content": "ada zebra diary"}

    assert structured(call_tool(viewer, "search_conversations", {"query": "zebra"}))["results"] == []
    assert len(structured(call_tool(reader, "search_conversations", {"query": "zebra"}))["results"]) == 3
