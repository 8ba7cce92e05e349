"""The RBAC matrix's tables, state snapshots, world fixture and audit helpers, shared by its REST and admin tests."""
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Permission
from django.db.models import Max
from guardian.shortcuts import get_user_perms

from audit.models import AuditEvent
from connectors import services
from connectors.models import Connector, Delivery
from tests.conftest import SYSTEM

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


def cases(matrix):
    return [
        pytest.param(level, op, expected, id=f"{op}-{level}-{expected}".replace(" ", "-"))
        for op, row in matrix.items()
        for level, expected in zip(LEVELS, row, strict=True)
    ]
