"""A generated RBAC matrix: every REST operation, websocket subscription and MCP tool, for users A
(alice) and B (bob), each holding one permission level on their own connector and owning their
own routing and conversation data.

The cases are not written by hand: they are generated from the live surfaces, so a new endpoint
or tool cannot be forgotten.
- REST: every operation of the OpenAPI schema (drf-spectacular). An operationId that REST_OPS does
  not classify becomes a failing case, and so does a REST_OPS row the schema no longer has.
- Websocket: every route (test_rbac_generated_ws.py) of the ASGI websocket router and every filter the consumer accepts.
- MCP: every tool the MCP server lists (an in-memory SDK client against build_server(); test_rbac_generated_mcp.py).
Shared rules and the world are in rbac_support.py.

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
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator

from connectors import services
from connectors.tokens import create_token
from tests.conftest import SYSTEM
from tests.project import rbac_support
from tests.project.rbac_support import (
    ACTOR,
    CONNECTED,
    DISABLED,
    GLOBAL,
    LEVELS,
    OPEN,
    OWNERS,
    SELF,
    STOPPED,
    VICTIM,
    Rule,
    audit_mark,
    build_world,
    check_outcome,
    check_search_results,
    connector,
    expected,
    listing,
    personal,
    set_state,
    shows_own,
    state_of,
)

_routing_settings = rbac_support._routing_settings


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
