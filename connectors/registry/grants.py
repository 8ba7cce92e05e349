"""Object permissions on one connector: grant and revoke a level to a user or a group (audited)."""
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from audit import services as audit
from brain_connectors.shared.errors import ValidationFailed, audit_result
from connectors.models import PERM_ADMIN
from connectors.permissions import LEVELS
from connectors.registry.common import load_connector


def grant_permission(principal, connector_id, perm, *, user=None, group=None):
    return _change_permission(principal, connector_id, perm, user=user, group=group, grant=True)


def revoke_permission(principal, connector_id, perm, *, user=None, group=None):
    return _change_permission(principal, connector_id, perm, user=user, group=group, grant=False)


def _change_permission(principal, connector_id, perm, *, user, group, grant):
    action = "permission.grant" if grant else "permission.revoke"
    with audit.audited(action, principal, "connector", connector_id, classify=audit_result):
        if perm not in LEVELS:
            raise ValidationFailed(f"Unknown permission {perm!r}; use one of {', '.join(LEVELS)}.")
        if (user is None) == (group is None):
            raise ValidationFailed("Name exactly one user or one group.")
        with transaction.atomic():
            connector = load_connector(principal, connector_id, PERM_ADMIN, for_update=True)
            (assign_perm if grant else remove_perm)(perm, user or group, connector)
            grantee = f"user:{user.get_username()}" if user else f"group:{group.name}"
            audit.record_action(action, principal, "connector", connector_id, permission=perm, grantee=grantee)
