"""RBAC matrix, Django admin half: every permission level against every admin page and action (tables in rbac_matrix_support)."""
from dataclasses import dataclass
from typing import Callable

import pytest
from django.contrib.messages import constants as message_levels
from django.contrib.messages import get_messages

from tests.connectors import rbac_matrix_support
from tests.connectors.rbac_matrix_support import (
    ADMIN_MATRIX,
    CONNECTED,
    HIDDEN,
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
    deleted,
    snapshot,
    target_becomes,
    unchanged,
)

pytestmark = pytest.mark.django_db

build_world = rbac_matrix_support.build_world


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
