"""RBAC matrix: every permission level against every REST endpoint for a connector (admin: test_rbac_matrix_admin.py).

Levels imply lower ones (admin ⊇ manage ⊇ view, admin ⊇ send ⊇ view, admin ⊇ read_conversations ⊇ view).
Reading other people's conversations on the connector needs read_conversations (or admin): the
"search" row's check reads READS_CONVERSATIONS. A connector the caller may not
view answers "not found" (existence hidden); one they may view without the needed permission
answers 403. Every refusal leaves a `denied` audit row for the action and changes nothing; every
allowed write changes exactly what it should.

The tables (rbac_matrix_support.py and below) are the whole specification; the test functions only replay them.
"""
from dataclasses import dataclass
from typing import Callable

import pytest

from tests.connectors import rbac_matrix_support
from tests.connectors.rbac_matrix_support import (
    CONNECTED,
    DISABLED,
    HIDDEN,
    NEW,
    READS_CONVERSATIONS,
    REST_MATRIX,
    STOPPED,
    TARGET,
    Changed,
    assert_no_refusal_audited,
    assert_refusal_audited,
    audit_mark,
    audit_since,
    bystander_holds,
    can,
    cases,
    created,
    deleted,
    one_more_delivery,
    snapshot,
    target_becomes,
    unchanged,
)

pytestmark = pytest.mark.django_db

build_world = rbac_matrix_support.build_world


# --- REST --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestOp:
    method: str
    path: str
    action: str  # the audit action a refusal is recorded under
    state: str = CONNECTED  # the target's status before the call
    body: dict | None = None
    effect: Callable = unchanged  # expected snapshot after an allowed call, from the one before
    target_id: str = "{id}"  # what the refusal's audit row names
    check: Callable | None = None  # extra checks on an allowed response: check(body, world)


def listed_ids(body, world):
    expected = {TARGET} if can("retrieve", world.level) else set()
    if world.level == "superuser":
        expected.add(HIDDEN)
    assert {c["id"] for c in body["results"]} == expected


def listed_deliveries(body, world):
    expected = {str(world.deliveries["target"])} if can("retrieve", world.level) else set()
    if world.level == "superuser":
        expected.add(str(world.deliveries["hidden"]))
    assert {d["delivery_id"] for d in body["results"]} == expected


def body_has(**fields):
    """Check fields of the response body; a callable value is computed from the world."""

    def check(body, world):
        for name, value in fields.items():
            assert body[name] == (value(world) if callable(value) else value), name

    return check


def shows_target(body, world):
    assert body["id"] == TARGET and "credentials" not in body


def finds_others_messages(body, world):
    # The target's only conversation is with a stranger: found exactly when the level reads others'.
    expected = {"to target"} if READS_CONVERSATIONS[world.level] else set()
    assert {r["content"] for r in body["results"]} == expected


def shows_grants(body, world):
    assert body["users"]["bystander"] == ["send_via_connector"] and "groups" in body


CONNECTOR = "/api/v1/connectors/{id}/"
REST_OPS = {
    "list": RestOp("GET", "/api/v1/connectors/", "", check=listed_ids),
    "create": RestOp(
        "POST", "/api/v1/connectors/", "connector.register", body={"id": NEW, "kind": "locmem", "display_name": "New"},
        effect=created, target_id=NEW, check=body_has(id=NEW),
    ),
    "retrieve": RestOp("GET", CONNECTOR, "connector.get", check=shows_target),
    "rename": RestOp("PATCH", CONNECTOR, "connector.update", body={"display_name": "Renamed"},
                     effect=target_becomes(display_name="Renamed")),
    "set_config": RestOp("PATCH", CONNECTOR, "connector.update", body={"config": {"fail_with": "transient"}},
                         effect=target_becomes(config={"fail_with": "transient"})),
    "set_credentials": RestOp("PATCH", CONNECTOR, "connector.update", body={"credentials": {"api_key": "new-secret"}},
                              effect=target_becomes(credentials={"api_key": "new-secret"})),
    "delete_stopped": RestOp("DELETE", CONNECTOR, "connector.delete", state=STOPPED, effect=deleted),
    "delete_running": RestOp("DELETE", CONNECTOR, "connector.delete"),
    "start": RestOp("POST", CONNECTOR + "start/", "connector.start", state=STOPPED,
                    effect=target_becomes(status=CONNECTED, last_heartbeat=Changed)),
    "stop": RestOp("POST", CONNECTOR + "stop/", "connector.stop", effect=target_becomes(status=STOPPED)),
    "disable": RestOp("POST", CONNECTOR + "disable/", "connector.disable", effect=target_becomes(status=DISABLED)),
    "enable": RestOp("POST", CONNECTOR + "enable/", "connector.enable", state=DISABLED,
                     effect=target_becomes(status=STOPPED)),
    "test": RestOp("POST", CONNECTOR + "test/", "connector.test", effect=target_becomes(last_heartbeat=Changed),
                   check=body_has(ok=True)),
    "send": RestOp("POST", CONNECTOR + "send/", "message.send", body={"recipient": "+4470000003", "content": "hi"},
                   effect=one_more_delivery, check=body_has(connector_id=TARGET)),
    "permissions_get": RestOp("GET", CONNECTOR + "permissions/", "connector.get", check=shows_grants),
    "permissions_grant": RestOp(
        "POST", CONNECTOR + "permissions/", "permission.grant",
        body={"username": "bystander", "permission": "view_connector"},
        effect=bystander_holds("send_via_connector", "view_connector"),
    ),
    "permissions_revoke": RestOp(
        "DELETE", CONNECTOR + "permissions/", "permission.revoke",
        body={"username": "bystander", "permission": "send_via_connector"}, effect=bystander_holds(),
    ),
    "deliveries": RestOp("GET", "/api/v1/deliveries/", "", check=listed_deliveries),
    "delivery": RestOp("GET", "/api/v1/deliveries/{delivery}/", "delivery.get", target_id="{delivery}",
                       check=body_has(delivery_id=lambda world: str(world.deliveries["target"]))),
    "search": RestOp("GET", "/api/v1/conversations/search/?q=target&connector={id}", "conversation.search",
                     check=finds_others_messages),
}
assert set(REST_OPS) == set(REST_MATRIX)


@pytest.mark.parametrize("level, op_name, expected", cases(REST_MATRIX))
def test_rest(level, op_name, expected, build_world, token_for, api):
    op = REST_OPS[op_name]
    world = build_world(level, op.state)
    client = api(token_for(world.actor))
    before, mark = snapshot(world), audit_mark()

    response = getattr(client, op.method.lower())(world.format(op.path), op.body, format="json")

    assert response.status_code == expected, response.content
    after = snapshot(world)
    if expected in (403, 404):
        assert response.json()["error"]["code"] == {403: "permission_denied", 404: "not_found"}[expected]
        assert after == before
        assert_refusal_audited(mark, world, op.action, world.format(op.target_id))
    elif expected == 409:
        assert after == before
        assert audit_since(mark, world.actor).filter(action=op.action, result="failure").exists()
        assert_no_refusal_audited(mark, world)
    else:
        assert after == op.effect(before)
        assert_no_refusal_audited(mark, world)
        if op.check:
            op.check(response.json(), world)
