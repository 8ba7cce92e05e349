"""Who is acting, and what they may do with a connector.

Object permissions come from django-guardian (granted per user or group, or globally through
Django's model permissions), and superusers pass. Levels imply lower ones:

    admin_connector  ⊇  manage_connector  ⊇  view_connector
    admin_connector  ⊇  send_via_connector ⊇  view_connector
    admin_connector  ⊇  read_conversations ⊇  view_connector

`read_conversations` (other people's conversation content: search, context, export, admin) is
granted on its own: view, send and manage do not imply it, since operating a channel is not
reading what people say on it. A person always reads their own conversations (conversations.access).

Objects a principal may not view are reported as "not found" (404), so the API does not reveal
which connector ids exist. A principal who may view but lacks the action's permission gets 403.
"""
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from guardian.core import ObjectPermissionChecker
from guardian.shortcuts import get_objects_for_user

from connectors.models import PERM_ADMIN, PERM_MANAGE, PERM_READ_CONVERSATIONS, PERM_SEND, PERM_VIEW, Connector

# The grantable permissions (REST, admin), lowest first.
LEVELS = (PERM_VIEW, PERM_SEND, PERM_MANAGE, PERM_READ_CONVERSATIONS, PERM_ADMIN)

# A permission is satisfied by any of these granted codenames.
SATISFIED_BY = {
    PERM_VIEW: {PERM_VIEW, PERM_SEND, PERM_MANAGE, PERM_READ_CONVERSATIONS, PERM_ADMIN},
    PERM_SEND: {PERM_SEND, PERM_ADMIN},
    PERM_MANAGE: {PERM_MANAGE, PERM_ADMIN},
    PERM_READ_CONVERSATIONS: {PERM_READ_CONVERSATIONS, PERM_ADMIN},
    PERM_ADMIN: {PERM_ADMIN},
}


@dataclass(frozen=True)
class Principal:
    """The actor behind a service call: a user, or a named part of the system (BRAIN, a command)."""

    user: object = None
    system: str = ""
    via: str = ""  # api, admin, mcp, command, cli, task

    @classmethod
    def for_user(cls, user, via):
        return cls(user=user, via=via)

    @classmethod
    def system_actor(cls, name, via="task"):
        return cls(system=name, via=via)

    @property
    def is_system(self):
        return self.user is None

    @property
    def key(self):
        """Stable identity, for scoping idempotency keys."""
        return f"user:{self.user.pk}" if self.user is not None else f"system:{self.system}"

    def __str__(self):
        return f"user:{self.user.get_username()}" if self.user is not None else f"system:{self.system}"


def _granted(user, connector):
    """Codenames this user holds on the connector: object grants (own and groups') and global ones."""
    checker = ObjectPermissionChecker(user)
    granted = set(checker.get_perms(connector))
    granted |= {p.split(".", 1)[1] for p in user.get_all_permissions() if p.startswith("connectors.")}
    return granted


def permission_test(principal: Principal, connector: Connector):
    """A check `perm -> bool` for this principal on this connector, reading the grants once."""
    if principal.is_system:
        return lambda perm: True
    user = principal.user
    if not (user and user.is_active and user.is_authenticated):
        return lambda perm: False
    if user.is_superuser:
        return lambda perm: True
    granted = _granted(user, connector)
    return lambda perm: bool(SATISFIED_BY[perm] & granted)


def has_perm(principal: Principal, perm: str, connector: Connector) -> bool:
    return permission_test(principal, connector)(perm)


def viewable_connectors(principal: Principal):
    return connectors_with(principal, PERM_VIEW)


def connectors_with(principal: Principal, perm: str):
    """The connectors on which `principal` holds `perm` (or a permission that implies it)."""
    qs = Connector.objects.all()
    if principal.is_system or principal.user.is_superuser:
        return qs
    user = principal.user
    if not (user.is_active and user.is_authenticated):
        return qs.none()
    return get_objects_for_user(user, sorted(SATISFIED_BY[perm]), klass=qs, any_perm=True, accept_global_perms=True)


def can_create_connectors(principal: Principal) -> bool:
    if principal.is_system:
        return True
    user = principal.user
    return bool(user and user.is_active and user.has_perm("connectors.add_connector"))


def level_of(user, connector):
    """The highest level a user holds, for display ('' when none)."""
    principal = Principal.for_user(user, via="")
    for perm in reversed(LEVELS):
        if has_perm(principal, perm, connector):
            return perm
    return ""


User = get_user_model()
