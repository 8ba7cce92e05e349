"""A generated RBAC matrix: every REST operation, websocket subscription and MCP tool, for users A
(alice) and B (bob), each holding one permission level on their own connector and owning their
own routing and conversation data.

The cases are not written by hand: they are generated from the live surfaces, so a new endpoint
or tool cannot be forgotten.
- REST: every operation of the OpenAPI schema (drf-spectacular). An operationId that REST_OPS does
  not classify becomes a failing case, and so does a REST_OPS row the schema no longer has.
- Websocket: every route of the ASGI websocket router and every filter the consumer accepts.
- MCP: every tool the MCP server lists (an in-memory SDK client against build_server()).

For every (surface, operation, level, owner) alice acts on her own objects ("own") or on bob's
("other"). Acting on bob's objects is always refused (404 hiding existence, or 403 where the
code and README say so) and changes nothing; on her own objects it is allowed exactly when her
level allows it. Every refusal leaves a `denied` audit row naming the action. Listings never show
bob's objects, and show alice's exactly when she may view them.

The expectations for connector operations come from tests/connectors/rbac_matrix_support.py's
REST_MATRIX (the hand-written, deeper table of one connector's REST surface): one rule, two tests.
Reading other people's conversations follows its READS_CONVERSATIONS row: each person's connector
also carries a conversation with a stranger, which search and context show exactly at the levels
that read others' conversations (read, admin), while one's own conversations are always readable.
"""
import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.db.models import Max
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator
from guardian.models import UserObjectPermission

from audit.models import AuditEvent
from brain_connectors.mcp import server as mcp_server
from connectors import services
from connectors.events import sequencer, subscriptions
from connectors.events.stream_request import QUERY_PARAMETERS
from connectors.models import ApiToken, Attachment, Connector, Delivery, Event, EventSubscription
from connectors.permissions import Principal
from connectors.tokens import create_token
from conversations.models import Conversation, Message
from conversations.recording import record_pending
from routing.identities import add_identity
from routing.models import ChannelIdentity, ConnectorPreference, Notification, PairingCode
from routing.notify import creation
from routing.pairing import issue
from tests.conftest import SYSTEM
from tests.connectors.rbac_matrix_support import GRANTS, READS_CONVERSATIONS, REST_MATRIX
from tests.connectors.rbac_matrix_support import LEVELS as MATRIX_LEVELS
from tests.mcp_client import structured

LEVELS = ("none", "view", "send", "manage", "read", "admin")
OWNERS = ("own", "other")
CONNECTED, STOPPED, DISABLED = "CONNECTED", "STOPPED", "DISABLED"
ACTOR, VICTIM = "alice", "bob"


# --- the rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """How an operation is decided.

    connector: object permission on the connector, per REST_MATRIX[row]; someone else's is 404.
    listing:   always answers; shows one's own item (iff REST_MATRIX[row] allows viewing it, when
               row is set), never the other's.
    personal:  one's own data (or acting as oneself): allowed; the other's is refused with `other`.
    reads:     someone else's conversation on one's connector: needs READS_CONVERSATIONS[level] (403 where
               the connector is viewable, else 404); on the other's connector, 404.
    global:    needs a model permission no connector level gives: refused for everyone (403).
    open:      for every signed-in user, nothing private (the pairable channels).
    self:      creates something owned by the caller: allowed; there is no one else's to act on,
               so only the "own" cases exist.
    sends:     like self, but only for a caller who may send on some connector (REST_MATRIX[row] on
               their own); otherwise 403.
    """

    kind: str
    row: str = ""
    other: int = 404


def connector(row):
    return Rule("connector", row)


def listing(row=""):
    return Rule("listing", row)


def personal(other=404):
    return Rule("personal", other=other)


def reads(row):
    return Rule("reads", row)


GLOBAL, OPEN, SELF = Rule("global"), Rule("open"), Rule("self")


def matrix_status(row, level):
    return dict(zip(MATRIX_LEVELS, REST_MATRIX[row], strict=True))[level]


def shows_own(rule, level):
    return not rule.row or matrix_status(rule.row, level) < 300


def expected(rule, level, owner, ok):
    """(allowed, status) for a call; `ok` is the operation's success status."""
    if rule.kind == "connector":
        if owner == "other":
            return False, 404
        status = matrix_status(rule.row, level)
        return status < 300, (ok if status < 300 else status)
    if rule.kind in ("listing", "open", "self"):
        return True, ok
    if rule.kind == "sends":
        return (True, ok) if matrix_status(rule.row, level) < 300 else (False, 403)
    if rule.kind == "personal":
        return (True, ok) if owner == "own" else (False, rule.other)
    if rule.kind == "reads":
        if owner == "other":
            return False, 404
        if READS_CONVERSATIONS[level]:
            return True, ok
        return False, (403 if matrix_status(rule.row, level) < 300 else 404)
    if rule.kind == "global":
        return False, 403
    raise AssertionError(f"unknown rule {rule.kind}")


# --- the world: alice's and bob's objects -------------------------------------------------------


@dataclass
class World:
    level: str
    users: dict
    token: str  # alice's bearer token
    objects: dict = field(default_factory=dict)  # owner username -> {name: value}

    def of(self, owner):
        return self.objects[ACTOR if owner == "own" else VICTIM]


def _person(username, level, make_user, grant, carol):
    user = make_user(username)
    conn_id = f"conn_{username}"
    conn = services.register_connector(SYSTEM, id=conn_id, kind="locmem", display_name=f"{username}'s")
    services.start_connector(SYSTEM, conn_id)
    if level in GRANTS:
        grant(user, GRANTS[level], conn)
    grant(carol, "send_via_connector", conn)  # a bystander whose grants the permission calls change
    identities = [
        add_identity(SYSTEM, user, conn_id, f"{username}-{n}", label=f"{username} {n}") for n in (1, 2, 3)
    ]
    ConnectorPreference.objects.filter(identity=identities[2]).delete()  # free for a new preference
    preferences = list(ConnectorPreference.objects.filter(user=user).order_by("priority").values_list("pk", flat=True))
    word = f"{username}word"
    delivery, _ = services.send_message(SYSTEM, conn_id, f"{username}-1", f"hello {word}")
    # Someone without an account on the person's own connector: theirs to read only with read_conversations.
    services.send_message(SYSTEM, conn_id, f"{username}-stranger", f"private {word}")
    notification, _ = creation.notify_user(SYSTEM, user, "please read", "standard")
    question = services.ask_question(SYSTEM, conn_id, f"{username}-1", "Deploy?", [{"id": "go", "label": "Go"}])
    subscription, _ = subscriptions.create_subscription(
        Principal.for_user(user, "test"), url="http://127.0.0.1:9/hook", event_types=["connector.*"], active=False
    )
    spare, _ = create_token(SYSTEM, user, name="spare")
    pairing = issue.request_pairing_code(SYSTEM, user, conn_id)
    return user, {
        "username": username,
        "connector": conn_id,
        "delivery": str(delivery.id),
        "identity": identities[0].pk,
        "free_identity": identities[2].pk,
        "preference": preferences[0],
        "preferences": preferences,
        "notification": str(notification.id),
        "question": str(question.id),
        "subscription": str(subscription.id),
        "token": spare.prefix,
        "pairing": pairing.pairing.pk,
        "word": word,
        "stranger": f"{username}-stranger",
    }


def set_state(connector_id, state):
    if state == STOPPED:
        services.stop_connector(SYSTEM, connector_id)
    elif state == DISABLED:
        services.set_disabled(SYSTEM, connector_id, True)


def build_world(level, state, make_user, grant, token_for):
    carol = make_user("carol")
    world = World(level, {}, "")
    for username in (ACTOR, VICTIM):
        user, objects = _person(username, level, make_user, grant, carol)
        world.users[username] = user
        world.objects[username] = objects
        set_state(objects["connector"], state)
    world.token = token_for(world.users[ACTOR])
    # The shared world is built in a transaction that never commits (and so never runs on-commit
    # work): number its events, as the sequencer does after commit on PostgreSQL, and store its
    # memory, as the consumer does (no call under test stores the world's own messages).
    sequencer.sequence_pending()
    record_pending()
    return world


@pytest.fixture(autouse=True)
def _routing_settings(settings):
    settings.ROUTING_PAIRABLE_KINDS = ("locmem",)  # pairing codes on the test connectors
    settings.BRAIN_ALLOW_PRIVATE_URLS = True  # subscription URLs on 127.0.0.1 (never called: inactive)


# --- what each side holds, to prove that refusals change nothing ---------------------------------


def state_of(world, username):
    """Everything of one person's that an operation could change (not the audit log, not the
    tokens' last use)."""
    user, objects = world.users[username], world.objects[username]
    conn = Connector.objects.filter(pk=objects["connector"]).first()
    return {
        "connector": None if conn is None else (conn.status, conn.display_name, conn.config, conn.last_heartbeat,
                                                conn.get_credentials()),
        "grants": sorted(UserObjectPermission.objects.filter(object_pk=objects["connector"])
                         .values_list("user__username", "permission__codename")),
        "deliveries": sorted(Delivery.objects.filter(connector_id=objects["connector"])
                             .values_list("id", "status")),
        "events": Event.objects.filter(connector_id=objects["connector"]).count(),
        "identities": sorted(ChannelIdentity.objects.filter(user=user).values_list("pk", "label")),
        "preferences": sorted(ConnectorPreference.objects.filter(user=user)
                              .values_list("pk", "priority", "enabled", "identity_id")),
        "pairing": sorted(PairingCode.objects.filter(user=user).values_list("pk", "used_at")),
        "conversations": sorted(Conversation.objects.filter(connector_id=objects["connector"])
                                .values_list("pk", "person_id")),
        "messages": Message.objects.filter(conversation__connector_id=objects["connector"]).count(),
        "notifications": sorted(Notification.objects.filter(user=user)
                                .values_list("pk", "status", "acknowledged_at")),
        "subscriptions": sorted((s.pk, s.url, s.active, s.description, s.secret)
                                for s in EventSubscription.objects.filter(owner=user)),
        "tokens": sorted(ApiToken.objects.filter(user=user).values_list("prefix", "revoked_at")),
        "uploads": Attachment.objects.filter(uploaded_by=f"user:{user.pk}").count(),
    }


def audit_mark():
    return AuditEvent.objects.aggregate(m=Max("id"))["m"] or 0


def denied_since(mark):
    return list(AuditEvent.objects.filter(id__gt=mark, principal=f"user:{ACTOR}", result="denied")
                .values_list("action", "target_id"))


def check_outcome(world, before, mark, allowed, action, writes, target_id=None):
    """The common half of every case: what changed, and what the audit log says."""
    after = {name: state_of(world, name) for name in (ACTOR, VICTIM)}
    assert after[VICTIM] == before[VICTIM], "bob's data changed"
    if not allowed:
        assert after[ACTOR] == before[ACTOR], "a refused call changed something"
        denied = denied_since(mark)
        assert any(a == action for a, _ in denied), f"no denied audit row for {action}: {denied}"
        if target_id is not None:
            assert (action, str(target_id)) in denied, f"the denied row does not name {target_id}: {denied}"
    else:
        assert denied_since(mark) == []
        if writes:
            assert after[ACTOR] != before[ACTOR], "an allowed write changed nothing"
        else:
            assert after[ACTOR] == before[ACTOR], "a read changed something"


# --- REST: the table, keyed by the schema's operationIds ----------------------------------------


@dataclass(frozen=True)
class RestOp:
    rule: Rule
    action: str = ""  # the audit action of a refusal
    ok: int = 200
    fill: str = ""  # the world object that fills the path parameter
    query: tuple = ()  # (name, world object or literal) pairs
    body: object = None  # a dict, or a callable(objects of the target owner) -> dict
    state: str = CONNECTED
    listed: tuple = ()  # (how to read ids from the body, which world object must/mustn't be in them)
    writes: bool = None  # default: every method but GET writes
    target: str = ""  # the world object a refusal's audit row must name (when it names one)
    format: str = "json"  # how the body is sent ("multipart" for a file upload)


def results(key):
    return lambda body: {str(row[key]) for row in (body["results"] if isinstance(body, dict) else body)}


OTHER_USER = (("user", "username"),)  # acting for someone: ?user=<owner>; one's own name is oneself

REST_OPS = {
    # connectors (object permissions; expectations from REST_MATRIX)
    "v1_connectors_list": RestOp(listing("retrieve"), listed=(results("id"), "connector")),
    "v1_connectors_create": RestOp(GLOBAL, "connector.register", ok=201,
                                   body={"id": "conn_new", "kind": "locmem", "display_name": "New"}),
    "v1_connectors_retrieve": RestOp(connector("retrieve"), "connector.get", fill="connector", target="connector"),
    "v1_connectors_partial_update": RestOp(connector("rename"), "connector.update", fill="connector",
                                           body={"display_name": "Renamed"}, target="connector"),
    "v1_connectors_destroy": RestOp(connector("delete_stopped"), "connector.delete", ok=204, fill="connector",
                                    state=STOPPED, target="connector"),
    "v1_connectors_disable_create": RestOp(connector("disable"), "connector.disable", fill="connector",
                                           target="connector"),
    "v1_connectors_enable_create": RestOp(connector("enable"), "connector.enable", fill="connector", state=DISABLED,
                                          target="connector"),
    "v1_connectors_start_create": RestOp(connector("start"), "connector.start", fill="connector", state=STOPPED,
                                         target="connector"),
    "v1_connectors_stop_create": RestOp(connector("stop"), "connector.stop", fill="connector", target="connector"),
    "v1_connectors_test_create": RestOp(connector("test"), "connector.test", fill="connector", target="connector"),
    "v1_connectors_send_create": RestOp(connector("send"), "message.send", ok=202, fill="connector",
                                        body={"recipient": "+4470000003", "content": "hi"}, target="connector"),
    "v1_connectors_permissions_retrieve": RestOp(connector("permissions_get"), "connector.get", fill="connector",
                                                 target="connector"),
    "v1_connectors_permissions_create": RestOp(connector("permissions_grant"), "permission.grant", fill="connector",
                                               body={"username": "carol", "permission": "view_connector"}),
    "v1_connectors_permissions_destroy": RestOp(connector("permissions_revoke"), "permission.revoke", fill="connector",
                                                body={"username": "carol", "permission": "send_via_connector"}),
    "v1_deliveries_list": RestOp(listing("retrieve"), listed=(results("delivery_id"), "delivery")),
    "v1_deliveries_retrieve": RestOp(connector("delivery"), "delivery.get", fill="delivery", target="delivery"),
    "v1_events_retrieve": RestOp(listing("retrieve"), listed=(results("connector"), "connector")),
    # a file for later sends: anyone who may send somewhere
    "v1_attachments_create": RestOp(Rule("sends", "send"), "attachment.upload", ok=201, format="multipart",
                                    body=lambda _: {"file": SimpleUploadedFile("note.txt", b"hello",
                                                                               "text/plain")}),
    # one's own API tokens
    "v1_tokens_list": RestOp(listing(), listed=(results("prefix"), "token")),
    "v1_tokens_destroy": RestOp(personal(), "token.revoke", ok=204, fill="token", target="token"),
    # event subscriptions (owned by a user)
    "v1_subscriptions_list": RestOp(listing(), listed=(results("id"), "subscription")),
    "v1_subscriptions_create": RestOp(SELF, "subscription.create", ok=201,
                                      body={"url": "http://127.0.0.1:9/new", "event_types": ["connector.*"],
                                            "active": False}),
    "v1_subscriptions_retrieve": RestOp(personal(), "subscription.get", fill="subscription", target="subscription"),
    "v1_subscriptions_partial_update": RestOp(personal(), "subscription.update", fill="subscription",
                                              body={"description": "changed"}, target="subscription"),
    "v1_subscriptions_destroy": RestOp(personal(), "subscription.delete", ok=204, fill="subscription",
                                       target="subscription"),
    "v1_subscriptions_rotate_secret_create": RestOp(personal(), "subscription.rotate_secret", fill="subscription",
                                                    target="subscription"),
    "v1_subscriptions_deliveries_list": RestOp(personal(), "subscription.deliveries", fill="subscription",
                                               target="subscription"),
    # routing: a person's identities, pairing codes, preferences (someone else's: ?user=, or their ids)
    "v1_identities_list": RestOp(personal(), "routing.act_for", query=OTHER_USER),
    "v1_identities_partial_update": RestOp(personal(), "identity.updated", fill="identity", body={"label": "new"},
                                           target="identity"),
    "v1_identities_destroy": RestOp(personal(), "identity.deleted", ok=204, fill="identity", target="identity"),
    "v1_pairing_codes_list": RestOp(personal(), "routing.act_for", query=OTHER_USER),
    "v1_pairing_codes_create": RestOp(personal(), "routing.act_for", ok=201, query=OTHER_USER,
                                      body=lambda o: {"connector": o["connector"]}),
    "v1_pairing_codes_channels_list": RestOp(OPEN),
    "v1_preferences_list": RestOp(personal(), "routing.act_for", query=OTHER_USER),
    "v1_preferences_create": RestOp(personal(), "routing.act_for", ok=201, query=OTHER_USER,
                                    body=lambda o: {"identity": o["free_identity"]}),
    "v1_preferences_partial_update": RestOp(personal(), "preference.updated", fill="preference",
                                            body={"enabled": False}, target="preference"),
    "v1_preferences_destroy": RestOp(personal(), "preference.deleted", ok=204, fill="preference", target="preference"),
    "v1_preferences_reorder_create": RestOp(personal(), "routing.act_for", query=OTHER_USER,
                                            body=lambda o: {"order": list(reversed(o["preferences"]))}),
    # notifications
    "v1_notifications_list": RestOp(listing(), listed=(results("id"), "notification")),
    "v1_notifications_create": RestOp(GLOBAL, "notification.create", ok=201,
                                      body=lambda o: {"user": o["username"], "content": "hi"}),
    "v1_notifications_retrieve": RestOp(personal(), "notification.get", fill="notification", target="notification"),
    "v1_notifications_acknowledge_create": RestOp(personal(), "notification.acknowledge", fill="notification",
                                                  target="notification"),
    # conversation memory and privacy (someone else's: 403, README "Privacy")
    "v1_conversations_people_export_retrieve": RestOp(personal(403), "conversations.export", fill="username"),
    "v1_conversations_people_sentiment_retrieve": RestOp(personal(403), "conversations.sentiment", fill="username"),
    "v1_conversations_people_destroy": RestOp(personal(403), "conversations.erase", fill="username"),
    "v1_conversations_search_retrieve": RestOp(personal(), "conversation.search",
                                               query=(("q", "word"), ("connector", "connector")),
                                               listed=(results("conversation_id"), None), target="connector"),
}


def schema_operations():
    """{operationId: (method, path)} of the live OpenAPI schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {
        op["operationId"]: (method.upper(), path)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    }


SCHEMA_OPS = schema_operations()


def test_every_classified_rest_operation_exists():
    """A REST_OPS row for an operation the schema no longer has is stale (its cases test nothing)."""
    assert set(REST_OPS) - set(SCHEMA_OPS) == set()


def rest_cases():
    """(operationId, owner) for every operation of the schema; the levels come from shared_world."""
    for op_id in sorted(SCHEMA_OPS):
        op = REST_OPS.get(op_id)
        if op is None:  # a new endpoint: it fails until someone says who may call it
            yield pytest.param(op_id, "own", id=f"rest-{op_id}-UNCLASSIFIED")
            continue
        for owner in OWNERS if op.rule.kind not in ("self", "sends") else ("own",):
            yield pytest.param(op_id, owner, id=f"rest-{op_id}-{owner}")


def fill_path(path, value):
    start, end = path.index("{"), path.index("}")
    return path[:start] + str(value) + path[end + 1:]


def _plain_make_user(username):
    return User.objects.create_user(username=username, password="pw-for-tests-only")


def _plain_grant(user, perm, conn):
    services.grant_permission(SYSTEM, conn.pk, perm, user=user)


def _plain_token(user):
    return create_token(SYSTEM, user)[1]


@pytest.fixture(scope="class")
def shared_world(request, django_db_setup, django_db_blocker):
    """One world per level for the whole class, built once in an outer
    transaction; each test runs in a savepoint of it (pytest-django's `db`) that is rolled back.
    pytest groups the cases by this parameter, so each world is built once."""
    level = request.param
    with django_db_blocker.unblock(), override_settings(ROUTING_PAIRABLE_KINDS=("locmem",),
                                                        BRAIN_ALLOW_PRIVATE_URLS=True):
        outer = transaction.atomic()
        outer.__enter__()
        try:
            yield build_world(level, CONNECTED, _plain_make_user, _plain_grant, _plain_token)
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


@pytest.mark.django_db
class TestRest:
    @pytest.mark.parametrize("shared_world", LEVELS, indirect=True)
    @pytest.mark.parametrize("op_id, owner", list(rest_cases()))
    def test_rest(self, op_id, shared_world, owner, api):
        check_rest(op_id, shared_world, owner, api)


def check_rest(op_id, world, owner, api):
    op = REST_OPS.get(op_id)
    assert op is not None, f"{op_id} {SCHEMA_OPS[op_id]} is not in the RBAC matrix (REST_OPS): classify it"
    method, path = SCHEMA_OPS[op_id]
    level = world.level
    for name in (ACTOR, VICTIM):  # both connectors in the state the operation needs (rolled back after)
        set_state(world.objects[name]["connector"], op.state)
    target = world.of(owner)
    if "{" in path:
        path = fill_path(path, target[op.fill])
    query = {name: (target[key] if key in target else key) for name, key in op.query}
    if owner == "own":
        query.pop("user", None)  # acting as oneself needs no ?user=
    if query:
        path += "?" + urlencode(query)
    body = op.body(target) if callable(op.body) else op.body
    allowed, status = expected(op.rule, level, owner, op.ok)
    before = {name: state_of(world, name) for name in (ACTOR, VICTIM)}
    mark = audit_mark()

    response = getattr(api(world.token), method.lower())(path, body, format=op.format)

    assert response.status_code == status, (response.status_code, response.content[:500])
    if not allowed:
        assert response.json()["error"]["code"] == {403: "permission_denied", 404: "not_found"}[status]
    writes = op.writes if op.writes is not None else method != "GET"
    target_id = target[op.target] if op.target and not allowed else None
    check_outcome(world, before, mark, allowed, op.action, writes and allowed, target_id)
    if op.listed and allowed:
        ids = op.listed[0](response.json())
        key = op.listed[1]
        if key is None:
            check_search_results(world, ids)
        elif owner == "own":
            assert (str(target[key]) in ids) == shows_own(op.rule, level), ids
        else:
            assert str(target[key]) not in ids, f"bob's {key} is listed to alice"


def check_search_results(world, ids):
    """Search on alice's connector: her own conversations always, the stranger's exactly when her
    level reads other people's conversations, nothing else (never bob's)."""
    conn = world.objects[ACTOR]["connector"]
    own = {str(pk) for pk in Conversation.objects.filter(person=world.users[ACTOR], connector_id=conn)
           .values_list("pk", flat=True)}
    stranger = {str(pk) for pk in Conversation.objects.filter(connector_id=conn, address=world.objects[ACTOR]["stranger"])
                .values_list("pk", flat=True)}
    assert own and stranger
    assert own <= ids and ids <= own | stranger, ids
    assert (stranger <= ids) == READS_CONVERSATIONS[world.level], ids


# --- MCP: every tool the server lists ------------------------------------------------------------


@dataclass(frozen=True)
class McpOp:
    rule: Rule
    action: str = ""
    args: object = None  # callable(objects of the target owner) -> the tool's arguments
    writes: bool = False
    listed: tuple = ()
    target: str = ""


MCP_OPS = {
    "send_message": McpOp(connector("send"), "message.send", writes=True, target="connector",
                          args=lambda o: {"connector_id": o["connector"], "recipient": "+4470000003", "content": "hi"}),
    "list_active_connectors": McpOp(listing("retrieve"),
                                    listed=(lambda data: {c["id"] for c in data["connectors"]}, "connector")),
    "get_connector_status": McpOp(connector("retrieve"), "connector.get", target="connector",
                                  args=lambda o: {"connector_id": o["connector"]}),
    "get_delivery_status": McpOp(connector("delivery"), "delivery.get", target="delivery",
                                 args=lambda o: {"delivery_id": o["delivery"]}),
    "notify_user": McpOp(GLOBAL, "notification.create", args=lambda o: {"username": o["username"], "content": "hi"}),
    "ask_user": McpOp(connector("send"), "question.ask", writes=True, target="connector",
                      args=lambda o: {"connector_id": o["connector"], "recipient": "+4470000004", "question": "Go?",
                                      "options": [{"id": "go", "label": "Go"}], "wait_seconds": 0}),
    # Its asker may read it too (tests/routing/test_ask_user_mcp.py); here SYSTEM asked: view on its connector.
    "get_question_answer": McpOp(connector("delivery"), "question.get", target="question",
                                 args=lambda o: {"question_id": o["question"]}),
    # A stranger's conversation (one's own is readable at every level: tests/conversations/test_read_permission.py).
    "get_conversation_context": McpOp(reads("retrieve"), "conversation.context", target="connector",
                                      args=lambda o: {"connector_id": o["connector"], "address": o["stranger"]}),
    "search_conversations": McpOp(personal(), "conversation.search", target="connector",
                                  args=lambda o: {"query": o["word"], "connector_id": o["connector"]},
                                  listed=(lambda data: {str(r["conversation_id"]) for r in data["results"]}, None)),
}


def mcp_tool_names():
    return sorted(tool.name for tool in asyncio.run(mcp_server.build_server().list_tools()))


MCP_TOOLS = mcp_tool_names()


def test_every_classified_mcp_tool_exists():
    assert set(MCP_OPS) - set(MCP_TOOLS) == set()


def mcp_cases():
    for name in MCP_TOOLS:
        if name not in MCP_OPS:
            yield pytest.param(name, "none", "own", id=f"mcp-{name}-UNCLASSIFIED")
            continue
        for level in LEVELS:
            for owner in OWNERS:
                yield pytest.param(name, level, owner, id=f"mcp-{name}-{level}-{owner}")


def call_tool(token, name, arguments):
    """The official SDK client, in memory, against the server `runmcp` would start with this token."""
    from mcp import Client

    async def scenario():
        async with Client(mcp_server.build_server(stdio_token=token)) as client:
            return await client.call_tool(name, arguments)

    return asyncio.run(asyncio.wait_for(scenario(), 30))


# The tools run in the SDK's worker threads, on their own database connections: the world must be committed.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name, level, owner", list(mcp_cases()))
def test_mcp(name, level, owner, make_user, grant, token_for):
    op = MCP_OPS.get(name)
    assert op is not None, f"MCP tool {name} is not in the RBAC matrix (MCP_OPS): classify it"
    world = build_world(level, CONNECTED, make_user, grant, token_for)
    target = world.of(owner)
    allowed, _ = expected(op.rule, level, owner, 200)
    before = {n: state_of(world, n) for n in (ACTOR, VICTIM)}
    mark = audit_mark()

    result = call_tool(world.token, name, op.args(target) if op.args else {})

    assert result.is_error == (not allowed), result.content
    target_id = target[op.target] if op.target and not allowed else None
    check_outcome(world, before, mark, allowed, op.action, op.writes and allowed, target_id)
    if op.listed and allowed:
        ids = op.listed[0](structured(result))
        key = op.listed[1]
        if key is None:
            check_search_results(world, ids)
        elif owner == "own":
            assert (target[key] in ids) == shows_own(op.rule, level), ids
        else:
            assert target[key] not in ids, f"bob's {key} is listed to alice"


# --- websocket: every route and every filter of /ws/events/ ---------------------------------------


@dataclass(frozen=True)
class WsOp:
    route: str
    rule: Rule
    query: tuple  # (name, world object or literal)
    action: str = ""
    target: str = ""


WS_OPS = {
    # the whole stream from the start of the log: alice's connector's events iff she may view it, never bob's
    "stream": WsOp("ws/events/", listing("retrieve"), (("since", "0"),)),
    # one connector's events, of some types: someone else's (or one alice may not view) is 4404, like a missing one
    "connector_filter": WsOp("ws/events/", connector("retrieve"),
                             (("since", "0"), ("connector", "connector"), ("types", "connector.*")),
                             "event.subscribe", "connector"),
}


def websocket_routes():
    from brain_connectors.asgi import websocket_routes as router

    return {str(route.pattern) for route in router.routes}


def test_every_websocket_route_and_filter_is_classified():
    assert {op.route for op in WS_OPS.values()} == websocket_routes()
    assert {name for op in WS_OPS.values() for name, _ in op.query} == set(QUERY_PARAMETERS)


def ws_cases():
    for name in WS_OPS:
        for level in LEVELS:
            for owner in OWNERS:
                yield pytest.param(name, level, owner, id=f"ws-{name}-{level}-{owner}")


@pytest.fixture
def fresh_channel_layer(settings):
    """Each async test has its own loop; channels_redis binds itself to the first (see test_event_stream)."""
    from channels.layers import channel_layers

    settings.EVENTS_WS_CATCHUP_SECONDS = settings.EVENTS_WS_ACCESS_SECONDS = 60
    settings.EVENTS_WS_PING_SECONDS = 0.05  # the end marker of receive_stream
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def receive_stream(communicator):
    """(close code or None, the events received before the first ping). The end marker: the timer that pings starts
    after the replay of the whole log, so anything the replay sent, allowed or not, came before it."""
    received = []
    while True:
        output = await communicator.receive_output(3)
        if output["type"] == "websocket.close":
            return output.get("code"), received
        message = json.loads(output["text"])
        if message["type"] == "ping":
            return None, received
        if message["type"] == "event":
            received.append(message["event"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name, level, owner", list(ws_cases()))
async def test_websocket(name, level, owner, make_user, grant, token_for, fresh_channel_layer):
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from brain_connectors.asgi import application

    op = WS_OPS[name]
    world = await database_sync_to_async(build_world)(level, CONNECTED, make_user, grant, token_for)
    target = world.of(owner)
    allowed, _ = expected(op.rule, level, owner, 200)
    before = await database_sync_to_async(lambda: {n: state_of(world, n) for n in (ACTOR, VICTIM)})()
    mark = await database_sync_to_async(audit_mark)()
    query = urlencode({key: (target[value] if value in target else value) for key, value in op.query})

    communicator = WebsocketCommunicator(application, f"/{op.route}?{query}",
                                         headers=[(b"authorization", f"Bearer {world.token}".encode())])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    first = await communicator.receive_output(3)
    if first["type"] == "websocket.close":  # refused before the stream opens
        code, received = first.get("code"), []
    else:
        assert json.loads(first["text"])["type"] == "hello", first
        code, received = await receive_stream(communicator)
    if not communicator.future.done():
        await communicator.disconnect()

    assert code == (None if allowed else 4404)
    seen = {event["connector"] for event in received}
    await database_sync_to_async(check_outcome)(
        world, before, mark, allowed, op.action, False, target[op.target] if op.target and not allowed else None
    )
    if owner == "other" or not allowed:
        assert world.of("other")["connector"] not in seen, "bob's events reached alice"
    if allowed and op.rule.kind == "connector":
        assert seen == {target["connector"]} and all(e["type"].startswith("connector.") for e in received)
    if allowed and op.rule.kind == "listing":
        assert seen == ({world.of("own")["connector"]} if shows_own(op.rule, level) else set())
