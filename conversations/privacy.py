"""Privacy controls of conversation memory: retention (purge), per-person export and erasure.

Every change is audited in the same transaction, with ids and counts only, never content.
Erasure is one transaction: it removes everything or nothing.

Limit: erasure and purge remove BRAIN's memory (conversations, messages, their blind-index rows
and analyses) and the attachments (rows and stored files) of the messages they remove. The
connectors' own delivery records (InboundMessage, Delivery) are owned by `connectors.services`
and follow their own retention; they are not blanked here.
"""
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit import reads
from audit import services as audit
from brain_connectors.shared.errors import NotFound, PermissionDenied, ValidationFailed
from connectors.delivery import attachment_privacy
from connectors.models import Connector
from connectors.permissions import Principal
from conversations import access
from conversations.analysis import sentiment_trend, topics_of
from conversations.models import Conversation, Message, MessageAnalysis, RetentionPolicy, SearchToken
from conversations.recording import record_pending

PURGER = Principal.system_actor("purge_conversations", via="command")


def _staff_may(principal, perm):
    user = principal.user
    return bool(user and user.is_active and (user.is_superuser or (user.is_staff and user.has_perm(perm))))


# --- retention ----------------------------------------------------------------------------------


def global_retention_days():
    """CONVERSATION_RETENTION_DAYS; 0 keeps messages forever."""
    return int(getattr(settings, "CONVERSATION_RETENTION_DAYS", 365) or 0)


def set_retention_policy(principal, connector_id, days):
    """Create or change a connector's retention (days >= 0; 0 keeps its messages forever)."""
    if not (principal.is_system or _staff_may(principal, "conversations.change_retentionpolicy")):
        audit.record_action("conversations.retention.set", principal, "connector", connector_id, audit.DENIED)
        raise PermissionDenied("You may not change retention policies.")
    try:
        days = int(days)
    except (TypeError, ValueError):
        raise ValidationFailed("Retention days must be a whole number.") from None
    if days < 0:
        raise ValidationFailed("Retention days must be 0 (keep forever) or more.")
    with transaction.atomic():
        if not Connector.objects.filter(pk=connector_id).exists():
            raise NotFound(f"No connector {connector_id!r}.")
        policy, created = RetentionPolicy.objects.update_or_create(connector_id=connector_id, defaults={"days": days})
        audit.record_action(
            "conversations.retention.set",
            principal,
            "connector",
            connector_id,
            days=days,
            created=created,
        )
    return policy


def delete_retention_policy(principal, connector_id):
    """Remove a connector's policy: CONVERSATION_RETENTION_DAYS applies to it again."""
    if not (principal.is_system or _staff_may(principal, "conversations.delete_retentionpolicy")):
        audit.record_action("conversations.retention.delete", principal, "connector", connector_id, audit.DENIED)
        raise PermissionDenied("You may not change retention policies.")
    with transaction.atomic():
        deleted, _ = RetentionPolicy.objects.filter(connector_id=connector_id).delete()
        if not deleted:
            raise NotFound(f"Connector {connector_id!r} has no retention policy.")
        audit.record_action("conversations.retention.delete", principal, "connector", connector_id)


def _expiry_scopes(now):
    """(filter on Message, cutoff) pairs: one per connector policy, one for the global setting."""
    scopes = []
    policies = list(RetentionPolicy.objects.values_list("connector_id", "days"))
    for connector_id, days in policies:
        if days > 0:
            scopes.append((Q(conversation__connector_id=connector_id), now - timedelta(days=days)))
    days = global_retention_days()
    if days > 0:
        with_policy = [connector_id for connector_id, _ in policies]
        scopes.append((~Q(conversation__connector_id__in=with_policy), now - timedelta(days=days)))
    return scopes


def purge_expired(progress=None, *, dry_run=False, batch_size=500, via="command"):
    """Delete messages older than their connector's retention, in batches (their index rows and
    analyses go with them by cascade, their attachments and files explicitly), then conversations
    left empty. `progress(n)` is called after each batch. Writes one audit row with the counts
    (also for a dry run). Returns {"messages": n, "conversations": n, "attachments": n, "dry_run": bool};
    a dry run counts no attachments (0)."""
    now = timezone.now()
    scopes = _expiry_scopes(now)
    expired = Q(pk__in=[])
    for scope, cutoff in scopes:
        expired |= scope & Q(created_at__lt=cutoff)
    messages = conversations = attachments = 0
    touched = set()
    if dry_run:
        messages = Message.objects.filter(expired).count() if scopes else 0
        conversations = (
            Conversation.objects.filter(messages__in=Message.objects.filter(expired))
            .exclude(messages__in=Message.objects.exclude(expired))
            .distinct()
            .count()
            if scopes
            else 0
        )
    elif scopes:
        while True:
            with transaction.atomic():
                batch = list(
                    Message.objects.filter(expired)
                    .order_by("pk")
                    .values_list("pk", "conversation_id", "inbound_id", "delivery_id")[:batch_size]
                )
                if not batch:
                    break
                attachments += attachment_privacy.delete_for([row[2] for row in batch], [row[3] for row in batch])
                Message.objects.filter(pk__in=[row[0] for row in batch]).delete()
            messages += len(batch)
            touched.update(row[1] for row in batch)
            if progress:
                progress(len(batch))
        touched = list(touched)
        for start in range(0, len(touched), batch_size):
            with transaction.atomic():
                conversations += (
                    Conversation.objects.filter(pk__in=touched[start : start + batch_size], messages__isnull=True)
                    .delete()[1]
                    .get(Conversation._meta.label, 0)
                )
    principal = Principal.system_actor("purge_conversations", via=via)
    audit.record_action(
        "conversations.purge",
        principal,
        "conversations",
        "",
        messages=messages,
        conversations=conversations,
        attachments=attachments,
        dry_run=dry_run,
        global_days=global_retention_days(),
    )
    return {"messages": messages, "conversations": conversations, "attachments": attachments, "dry_run": dry_run}


def expired_count():
    scopes = _expiry_scopes(timezone.now())
    if not scopes:
        return 0
    expired = Q(pk__in=[])
    for scope, cutoff in scopes:
        expired |= scope & Q(created_at__lt=cutoff)
    return Message.objects.filter(expired).count()


# --- export and erasure ---------------------------------------------------------------------------


def find_person(username_or_user):
    """The account, or NotFound with a clear message."""
    User = get_user_model()
    if isinstance(username_or_user, User):
        return username_or_user
    person = User.objects.filter(**{User.USERNAME_FIELD: username_or_user}).first()
    if person is None:
        raise NotFound(f"No person with the username {username_or_user!r}.")
    return person


def check_access(principal, person, perm, action):
    user = principal.user
    if principal.is_system or (user is not None and user.is_active and user.pk == person.pk) or _staff_may(principal, perm):
        return
    audit.record_action(action, principal, "person", person.pk, audit.DENIED)
    raise PermissionDenied("You may only do this for yourself, or as staff with the conversations permission.")


def check_read_access(principal, person, perm, action):
    """check_access, and for anyone but the person: read_conversations on every connector their
    memory is on, since an export (or a trend computed from their words) reads it all. A partial
    export is refused rather than given, so it is never mistaken for the whole."""
    check_access(principal, person, perm, action)
    user = principal.user
    if principal.is_system or user.pk == person.pk:
        return
    missing = access.unreadable_connector_count(principal, person_conversations(person))
    if missing:
        audit.record_action(
            action,
            principal,
            "person",
            person.pk,
            audit.DENIED,
            error="read_conversations",
            connectors=missing,
        )
        raise PermissionDenied(
            f"Reading {person.get_username()}'s conversations needs read_conversations on every connector they are "
            f"on; you lack it on {missing} of them."
        )


def person_sentiment(principal, person, days):
    """A person's per-day average sentiment over `days` days: (person, trend). A trend is computed from the
    person's words, so reading it follows the rule of reading them (check_read_access). Audited with the
    number of days and points, in the transaction of the read."""
    person = find_person(person)
    check_read_access(principal, person, "conversations.view_conversation", "conversations.sentiment")
    with transaction.atomic():
        trend = sentiment_trend(person, days)
        reads.record_read("conversations.sentiment", principal, "person", person.pk, days=days, points=len(trend))
    return person, trend


def person_conversations(person):
    """The person's conversations: those linked to the account, and those on their paired addresses."""
    return Conversation.objects.filter(access.own_q(person))


def export_person(principal, person, budget=None):
    """Everything memory holds about a person, decrypted, as a JSON-serialisable dict; each message
    lists its attachments with their bytes in base64 (up to PRIVACY_EXPORT_ATTACHMENT_BYTES in all,
    see attachment_privacy.export_entries; pass one `budget` to several exports sent as one document).
    Audited (counts only). Allowed to the person, or staff with `conversations.view_conversation` who hold
    read_conversations on every connector of the person's memory."""
    person = find_person(person)
    record_pending()  # what the person said a moment ago is theirs too (and counts for the access check)
    check_read_access(principal, person, "conversations.view_conversation", "conversations.export")
    with transaction.atomic():  # the read and its audit row, one transaction
        conversations = []
        message_count = attachment_count = 0
        budget = attachment_privacy.ExportBudget() if budget is None else budget
        for conversation in person_conversations(person).order_by("started_at", "pk"):
            messages = []
            rows = list(conversation.messages.select_related("analysis").order_by("created_at", "pk"))
            files = attachment_privacy.export_entries(
                [message.inbound_id for message in rows], [message.delivery_id for message in rows], budget
            )
            for message in rows:
                analysis = getattr(message, "analysis", None) if hasattr(message, "analysis") else None
                attachments = _attachments_of(message, files)
                attachment_count += len(attachments)
                messages.append(
                    {
                        "id": message.pk,
                        "role": message.role,
                        "content": message.content,
                        "created_at": message.created_at.isoformat(),
                        "platform_message_id": message.platform_message_id,
                        "metadata": message.metadata,
                        "sentiment": analysis.sentiment if analysis else None,
                        "topics": topics_of(analysis),
                        "attachments": attachments,
                    }
                )
            message_count += len(messages)
            conversations.append(
                {
                    "id": conversation.pk,
                    "connector": conversation.connector_id,
                    "address": conversation.address,
                    "started_at": conversation.started_at.isoformat(),
                    "last_message_at": conversation.last_message_at.isoformat(),
                    "messages": messages,
                }
            )
        reads.record_read(
            "conversations.export",
            principal,
            "person",
            person.pk,
            conversations=len(conversations),
            messages=message_count,
            attachments=attachment_count,
        )
    return {
        "person": person.get_username(),
        "exported_at": timezone.now().isoformat(),
        "conversations": conversations,
    }


def _attachments_of(message, files):
    """The export entries of one message's files, from what attachment_privacy.export_entries found."""
    if message.inbound_id is not None:
        return files.get(("inbound", message.inbound_id), [])
    if message.delivery_id is not None:
        return files.get(("delivery", message.delivery_id), [])
    return []


def erase_person(principal, person):
    """Forget a person: delete their conversations, messages, blind-index rows, analyses and the
    attachments of those messages (their stored files go once the transaction commits), in one
    transaction with an audit row of counts. Allowed to the person, or staff with
    `conversations.delete_conversation`. Returns the counts."""
    person = find_person(person)
    record_pending()  # stored first, so it is erased now rather than remembered after the erasure
    check_access(principal, person, "conversations.delete_conversation", "conversations.erase")
    with transaction.atomic():
        conversations = person_conversations(person)
        ids = list(conversations.select_for_update().values_list("pk", flat=True))
        counts = {
            "conversations": len(ids),
            "messages": Message.objects.filter(conversation_id__in=ids).count(),
            "index_rows": SearchToken.objects.filter(message__conversation_id__in=ids).count(),
            "analyses": MessageAnalysis.objects.filter(message__conversation_id__in=ids).count(),
        }
        sources = list(Message.objects.filter(conversation_id__in=ids).values_list("inbound_id", "delivery_id"))
        counts["attachments"] = attachment_privacy.delete_for([row[0] for row in sources], [row[1] for row in sources])
        # Children first, explicitly: nothing relies on the database's cascade order.
        SearchToken.objects.filter(message__conversation_id__in=ids).delete()
        MessageAnalysis.objects.filter(message__conversation_id__in=ids).delete()
        Message.objects.filter(conversation_id__in=ids).delete()
        Conversation.objects.filter(pk__in=ids).delete()
        audit.record_action("conversations.erase", principal, "person", person.pk, **counts)
    return counts
