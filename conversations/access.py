"""Who may read which conversations (issue 14).

- A person always reads their own conversations: those linked to their account, and those on one
  of their paired addresses (channel identities).
- Anyone else's need `read_conversations` on the conversation's connector (admin_connector implies
  it; view, send and manage do not: operating a channel is not reading what people say on it).
- Superusers and system actors (BRAIN, commands) read everything.

Search, context (MCP), export, sentiment and the admin all ask here, so one rule holds everywhere.
"""
from django.db.models import Q

from connectors.models import PERM_READ_CONVERSATIONS
from connectors.permissions import Principal, connectors_with, has_perm
from routing.models import ChannelIdentity


def reads_everything(principal: Principal) -> bool:
    user = principal.user
    return principal.is_system or bool(user is not None and user.is_active and user.is_superuser)


def _active(principal):
    user = principal.user
    return user is not None and user.is_active and user.is_authenticated


def own_q(user, prefix=""):
    """Q over Conversation (prefix "") or Message (prefix "conversation__"): the person's own."""
    q = Q(**{f"{prefix}person": user})
    for connector_id, address in ChannelIdentity.objects.filter(user=user).values_list("connector_id", "address"):
        q |= Q(**{f"{prefix}connector_id": connector_id, f"{prefix}address": address})
    return q


def readable_q(principal: Principal, prefix=""):
    """Q over Conversation (prefix "") or Message (prefix "conversation__"): what `principal` may read."""
    if reads_everything(principal):
        return Q()
    if not _active(principal):
        return Q(**{f"{prefix}pk__in": []})
    readable = connectors_with(principal, PERM_READ_CONVERSATIONS)
    return own_q(principal.user, prefix) | Q(**{f"{prefix}connector__in": readable})


def is_own(principal: Principal, connector_id, address, conversation=None) -> bool:
    """Whether (connector, address) is the principal's own: a paired address of theirs, or a
    conversation linked to their account."""
    if not _active(principal):
        return False
    if conversation is not None and conversation.person_id == principal.user.pk:
        return True
    return ChannelIdentity.objects.filter(user=principal.user, connector_id=connector_id, address=address).exists()


def unreadable_connector_count(principal: Principal, conversations) -> int:
    """How many connectors among these conversations' the principal may not read others' on."""
    if reads_everything(principal):
        return 0
    connector_ids = set(conversations.values_list("connector_id", flat=True))
    if not connector_ids:
        return 0
    readable = set(connectors_with(principal, PERM_READ_CONVERSATIONS).filter(pk__in=connector_ids)
                   .values_list("pk", flat=True))
    return len(connector_ids - readable)


def may_read_connector(principal: Principal, connector) -> bool:
    return reads_everything(principal) or has_perm(principal, PERM_READ_CONVERSATIONS, connector)
