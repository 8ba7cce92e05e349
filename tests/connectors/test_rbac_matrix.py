"""RBAC matrix: every permission level against every REST endpoint and admin action for a connector.

Levels imply lower ones (admin ⊇ manage ⊇ view, admin ⊇ send ⊇ view, admin ⊇ read_conversations ⊇ view).
Reading other people's conversations on the connector needs read_conversations (or admin): the
"search" row's check reads READS_CONVERSATIONS. A connector the caller may not
view answers "not found" (existence hidden); one they may view without the needed permission
answers 403. Every refusal leaves a `denied` audit row for the action and changes nothing; every
allowed write changes exactly what it should.

The tables below are the whole specification; the test functions only replay them.
"""
from dataclasses import dataclass, field
from typing import Callable

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import constants as message_levels
from django.contrib.messages import get_messages
from django.db.models import Max
from guardian.shortcuts import get_user_perms

from audit.models import AuditEvent
from connectors import services
from connectors.models import Connector, Delivery
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

TARGET, HIDDEN, NEW = "target_conn", "hidden_conn", "new_conn"
STOPPED, CONNECTED, DISABLED = "STOPPED", "CONNECTED", "DISABLED"

# "creator" holds only the global model permission connectors.add_connector, no object permission.
LEVELS = ("none", "creator", "view", "send", "manage", "read", "admin", "superuser")
GRANTS = {"view": "view_connector", "send": "send_via_connector", "manage": "manage_connector",
          "read": "read_conversations", "admin": "admin_connector"}


# --- the expectations ------------------------------------------------------------------------

# REST: 403 and 404 are refusals (audited as `denied`); 409 is a failed, allowed attempt.
REST_MATRIX = {
    #                      none creator view  send  manage read  admin super
    "list":               (200, 200,    200,  200,  200,   200,  200,  200),
    "create":             (403, 201,    403,  403,  403,   403,  403,  201),
    "retrieve":           (404, 404,    200,  200,  200,   200,  200,  200),
    "rename":             (404, 404,    403,  403,  200,   403,  200,  200),
    "set_config":         (404, 404,    403,  403,  200,   403,  200,  200),
    "set_credentials":    (404, 404,    403,  403,  403,   403,  200,  200),
    "delete_stopped":     (404, 404,    403,  403,  403,   403,  204,  204),
    "delete_running":     (404, 404,    403,  403,  403,   403,  409,  409),
    "start":              (404, 404,    403,  403,  200,   403,  200,  200),
    "stop":               (404, 404,    403,  403,  200,   403,  200,  200),
    "disable":            (404, 404,    403,  403,  200,   403,  200,  200),
    "enable":             (404, 404,    403,  403,  200,   403,  200,  200),
    "test":               (404, 404,    403,  403,  200,   403,  200,  200),
    "send":               (404, 404,    403,  202,  403,   403,  202,  202),
    "permissions_get":    (404, 404,    403,  403,  403,   403,  200,  200),
    "permissions_grant":  (404, 404,    403,  403,  403,   403,  200,  200),
    "permissions_revoke": (404, 404,    403,  403,  403,   403,  200,  200),
    "deliveries":         (200, 200,    200,  200,  200,   200,  200,  200),
    "delivery":           (404, 404,    200,  200,  200,   200,  200,  200),
    "search":             (404, 404,    200,  200,  200,   200,  200,  200),
}
# Whether a level reads other people's conversations on the connector (search, context, export, admin).
READS_CONVERSATIONS = dict(zip(LEVELS, (False, False, False, False, False, True, True, True), strict=True))

# Admin (staff users): "<status>", "<status> denied" (refused: `denied` audit row) or "<status> failure"
# (allowed but impossible: `failure` audit row). Hidden connectors' change pages redirect to the
# admin index, as missing ones do; other refusals from a service redirect back with an error message.
ADMIN_MATRIX = {
    #                      none          creator       view          send          manage        read          admin          super
    "changelist":         ("200",        "200",        "200",        "200",        "200",        "200",        "200",         "200"),
    "change_page":        ("302 denied", "302 denied", "200",        "200",        "200",        "200",        "200",         "200"),
    "change_save":        ("302 denied", "302 denied", "403 denied", "403 denied", "302",        "403 denied", "302",         "302"),
    "change_credentials": ("302 denied", "302 denied", "403 denied", "403 denied", "302 denied", "403 denied", "302",         "302"),
    "delete_page":        ("403 denied", "403 denied", "403 denied", "403 denied", "403 denied", "403 denied", "200",         "200"),
    "delete":             ("403 denied", "403 denied", "403 denied", "403 denied", "403 denied", "403 denied", "302",         "302"),
    "delete_running":     ("403 denied", "403 denied", "403 denied", "403 denied", "403 denied", "403 denied", "302 failure", "302 failure"),
    "start_selected":     ("302 denied", "302 denied", "302 denied", "302 denied", "302",        "302 denied", "302",         "302"),
    "stop_selected":      ("302 denied", "302 denied", "302 denied", "302 denied", "302",        "302 denied", "302",         "302"),
    "test_selected":      ("302 denied", "302 denied", "302 denied", "302 denied", "302",        "302 denied", "302",         "302"),
    "permissions_page":   ("404 denied", "404 denied", "403 denied", "403 denied", "403 denied", "403 denied", "200",         "200"),
    "permissions_grant":  ("404 denied", "404 denied", "403 denied", "403 denied", "403 denied", "403 denied", "302",         "302"),
}


def _row(matrix, op):
    return dict(zip(LEVELS, matrix[op], strict=True))


def can(op, level):
    """Whether the REST table allows `op` at `level` (used for what lists and pages must show)."""
    return _row(REST_MATRIX, op)[level] < 300


# --- state: a snapshot of everything an operation could change ---------------------------------


def snapshot(world):
    target = Connector.objects.filter(pk=TARGET).first()
    return {
        "connectors": sorted(Connector.objects.values_list("id", flat=True)),
        "deliveries": sorted(Delivery.objects.values_list("connector_id", flat=True)),
        "target": None
        if target is None
        else {
            "status": target.status,
            "display_name": target.display_name,
            "config": target.config,
            "credentials": target.get_credentials(),
            "last_heartbeat": target.last_heartbeat,
        },
        "bystander": sorted(get_user_perms(world.bystander, target)) if target else [],
    }


class Changed:
    """Equal to any value except `old`: for timestamps the call sets to 'now'."""

    def __init__(self, old):
        self.old = old

    def __eq__(self, other):
        return other != self.old

    def __repr__(self):
        return f"<anything but {self.old!r}>"


def unchanged(s):
    return s


def target_becomes(**changes):
    """Values may be callables of the old value, e.g. `Changed`."""

    def effect(s):
        values = {k: (v(s["target"][k]) if callable(v) else v) for k, v in changes.items()}
        return {**s, "target": {**s["target"], **values}}

    return effect


def deleted(s):
    # Its deliveries go with it.
    others = [c for c in s["connectors"] if c != TARGET]
    return {**s, "connectors": others, "deliveries": [c for c in s["deliveries"] if c != TARGET], "target": None,
            "bystander": []}


def created(s):
    return {**s, "connectors": sorted([*s["connectors"], NEW])}


def one_more_delivery(s):
    return {**s, "deliveries": sorted([*s["deliveries"], TARGET])}


def bystander_holds(*perms):
    return lambda s: {**s, "bystander": sorted(perms)}


# --- the world each case runs in ---------------------------------------------------------------


@dataclass
class World:
    level: str
    actor: object
    bystander: object  # holds send_via_connector on the target; the permission operations change that
    deliveries: dict = field(default_factory=dict)  # "target"/"hidden" -> delivery id

    def format(self, text):
        return text.format(id=TARGET, delivery=self.deliveries.get("target"), bystander=self.bystander.pk)


@pytest.fixture
def build_world(make_connector, make_user, grant):
    def build(level, state):
        make_connector(TARGET)
        make_connector(HIDDEN)  # nobody but superusers may see it
        deliveries = {
            "target": services.send_message(SYSTEM, TARGET, "+4470000001", "to target")[0].id,
            "hidden": services.send_message(SYSTEM, HIDDEN, "+4470000002", "to hidden")[0].id,
        }
        if state == STOPPED:
            services.stop_connector(SYSTEM, TARGET)
        elif state == DISABLED:
            services.set_disabled(SYSTEM, TARGET, True)
        target = Connector.objects.get(pk=TARGET)
        assert target.status == state

        actor = make_user(f"{level}_user", staff=True, superuser=level == "superuser")
        if level in GRANTS:
            grant(actor, GRANTS[level], target)
        if level == "creator":
            actor.user_permissions.add(Permission.objects.get(content_type__app_label="connectors", codename="add_connector"))
        bystander = make_user("bystander")
        grant(bystander, "send_via_connector", target)
        return World(level, actor, bystander, deliveries)

    return build


def audit_mark():
    return AuditEvent.objects.aggregate(m=Max("id"))["m"] or 0


def audit_since(mark, actor):
    return AuditEvent.objects.filter(id__gt=mark, principal=f"user:{actor.get_username()}")


def assert_refusal_audited(mark, world, action, target_id):
    rows = audit_since(mark, world.actor)
    denied = set(rows.filter(result="denied").values_list("action", "target_id"))
    assert (action, str(target_id)) in denied, f"no denied audit row for {action} on {target_id}: {denied}"


def assert_no_refusal_audited(mark, world):
    denied = list(audit_since(mark, world.actor).filter(result="denied").values_list("action", "target_id"))
    assert denied == []


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


def cases(matrix):
    return [
        pytest.param(level, op, expected, id=f"{op}-{level}-{expected}".replace(" ", "-"))
        for op, row in matrix.items()
        for level, expected in zip(LEVELS, row, strict=True)
    ]


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


# --- Django admin ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminOp:
    method: str
    path: str
    action: str = ""  # the audit action a refusal is recorded under
    state: str = CONNECTED
    data: dict | None = None
    effect: Callable = unchanged
    check: Callable | None = None  # check(response, world) on an allowed call


CHANGELIST = "/admin/connectors/connector/"
ADMIN_PAGE = CHANGELIST + "{id}/"


def admin_action(name):
    return {"action": name, "_selected_action": [TARGET], "index": "0", "select_across": "0"}


def changelist_rows(response, world):
    expected = {TARGET} if can("retrieve", world.level) else set()
    if world.level == "superuser":
        expected.add(HIDDEN)
    assert {c.pk for c in response.context["cl"].result_list} == expected


def change_page_fields(response, world):
    # View-only staff get a read-only page; the credentials box is shown to admins only.
    assert response.context["has_change_permission"] == can("rename", world.level)
    assert ('name="new_credentials"' in response.content.decode()) == can("set_credentials", world.level)


def redirects_to(url):
    def check(response, world):
        assert response["Location"] == url

    return check


def nothing_blocks_deletion(response, world):
    # The connector's deliveries go with it; their read-only admin must not block the deletion.
    assert not response.context["perms_lacking"] and not response.context["protected"]


def change_form(**values):
    return {"display_name": "Target Conn", "config": "{}", "quota_per_minute": "", "recipient_quota_per_minute": "",
            "new_credentials": "", "_save": "Save", **values}


ADMIN_OPS = {
    "changelist": AdminOp("GET", CHANGELIST, check=changelist_rows),
    "change_page": AdminOp("GET", ADMIN_PAGE + "change/", "connector.get", check=change_page_fields),
    "change_save": AdminOp(
        "POST", ADMIN_PAGE + "change/", "connector.update",
        data=change_form(display_name="Renamed"), effect=target_becomes(display_name="Renamed"),
        check=redirects_to(CHANGELIST),
    ),
    "change_credentials": AdminOp(
        "POST", ADMIN_PAGE + "change/", "connector.update", data=change_form(new_credentials='{"api_key": "new-secret"}'),
        effect=target_becomes(credentials={"api_key": "new-secret"}), check=redirects_to(CHANGELIST),
    ),
    "delete_page": AdminOp("GET", ADMIN_PAGE + "delete/", "connector.delete", state=STOPPED,
                           check=nothing_blocks_deletion),
    "delete": AdminOp("POST", ADMIN_PAGE + "delete/", "connector.delete", state=STOPPED, data={"post": "yes"},
                      effect=deleted, check=redirects_to(CHANGELIST)),
    "delete_running": AdminOp("POST", ADMIN_PAGE + "delete/", "connector.delete", data={"post": "yes"}),
    "start_selected": AdminOp("POST", CHANGELIST, "connector.start", state=STOPPED, data=admin_action("start_selected"),
                              effect=target_becomes(status=CONNECTED, last_heartbeat=Changed)),
    "stop_selected": AdminOp("POST", CHANGELIST, "connector.stop", data=admin_action("stop_selected"),
                             effect=target_becomes(status=STOPPED)),
    "test_selected": AdminOp("POST", CHANGELIST, "connector.test", data=admin_action("test_selected"),
                             effect=target_becomes(last_heartbeat=Changed)),
    "permissions_page": AdminOp("GET", ADMIN_PAGE + "permissions/", "connector.get"),
    "permissions_grant": AdminOp(
        "POST", ADMIN_PAGE + "permissions/user-manage/{bystander}/", "permission.grant",
        data={"permissions": ["send_via_connector", "view_connector"]},
        effect=bystander_holds("send_via_connector", "view_connector"),
    ),
}
assert set(ADMIN_OPS) == set(ADMIN_MATRIX)


def messages_of(response):
    return [(m.level, m.message) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("level, op_name, expected", cases(ADMIN_MATRIX))
def test_admin(level, op_name, expected, build_world, client):
    op = ADMIN_OPS[op_name]
    status, _, outcome = expected.partition(" ")
    world = build_world(level, op.state)
    client.force_login(world.actor)
    before, mark = snapshot(world), audit_mark()

    path = world.format(op.path)
    response = client.post(path, op.data or {}) if op.method == "POST" else client.get(path)

    assert response.status_code == int(status), response.content[:2000]
    after = snapshot(world)
    is_action = op_name.endswith("_selected")
    hidden = not can("retrieve", level)
    if outcome:  # refused or failed: nothing changed, and the audit log says so
        assert after == before
        if outcome == "denied":
            assert_refusal_audited(mark, world, op.action, TARGET)
        else:
            assert audit_since(mark, world.actor).filter(action=op.action, result="failure").exists()
            assert_no_refusal_audited(mark, world)
        if status == "302":
            assert response["Location"] == (CHANGELIST if is_action else "/admin/" if hidden else path)
            if is_action or not hidden:  # a hidden change page says only "doesn't exist", as for a missing one
                errors = [text for lvl, text in messages_of(response) if lvl == message_levels.ERROR]
                assert errors and all(TARGET in text for text in errors), messages_of(response)
    else:
        assert after == op.effect(before)
        assert_no_refusal_audited(mark, world)
        if is_action:
            assert response["Location"] == CHANGELIST
            assert [lvl for lvl, _ in messages_of(response)] == [message_levels.SUCCESS]
        if op.check:
            op.check(response, world)
