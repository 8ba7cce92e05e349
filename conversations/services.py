"""Conversation memory services: context for BRAIN, and search.

Storage is conversations.recording: a marker in the transaction that stores an inbound message or
queues a delivery, turned into a message after commit. The message is already audited there
(`message.received` / `message.queued`), so no second audit row is written for storing it.
Readers here consume the pending markers first: BRAIN's context those of its conversation (it must
include the message it answers), a search every pending one it can claim.
"""
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from audit import reads
from audit import services as audit
from brain_connectors.shared.errors import NotFound, PermissionDenied, ServiceError
from connectors.models import PERM_VIEW, Connector
from connectors.permissions import Principal, has_perm
from connectors.platforms.base import conversation_key
from connectors.services import conversation_context
from conversations import access
from conversations import search as index
from conversations.models import Conversation, Message, SearchToken
from conversations.recording import conversation_address, flush_conversation, record_pending

logger = logging.getLogger(__name__)

MAX_SEARCH_LIMIT = 200


# --- context ------------------------------------------------------------------------------


def _shape(messages):
    return [{"role": m.role, "content": m.content, "time": m.created_at.isoformat()} for m in messages]


def _flush(connector_id, address, cross):
    """Pending messages first, so the context is complete: the conversation's own (waiting for those
    another consumer holds), and across channels, where a person's other markers cannot be told
    apart before identity lookup, every pending one it can claim."""
    flush_conversation(connector_id, address)
    if cross:
        record_pending()


def get_context(person_or_conversation, connector=None, limit=10, *, before=None, cross_channel=None, flush=True):
    """The recent messages, oldest first, as [{"role", "content", "time"}].

    With a Conversation: that conversation's messages. With a person (a user): their
    conversations on `connector`. With CONVERSATION_CONTEXT_CROSS_CHANNEL on and a known person,
    the person's messages on every connector (`cross_channel` overrides the setting). `before` (a
    Message) keeps only earlier messages. Pending messages are stored first (`flush=False`: the
    caller just did).
    """
    limit = max(0, int(limit))
    cross = getattr(settings, "CONVERSATION_CONTEXT_CROSS_CHANNEL", False) if cross_channel is None else cross_channel
    if flush:
        if isinstance(person_or_conversation, Conversation):
            conversation = person_or_conversation
            _flush(conversation.connector_id, conversation.address, cross and conversation.person_id is not None)
        else:
            record_pending()  # a person's messages: their markers are not known before identity lookup
    if isinstance(person_or_conversation, Conversation):
        conversation = person_or_conversation
        if cross and conversation.person_id is not None:
            qs = Message.objects.filter(conversation__person_id=conversation.person_id)
        else:
            qs = Message.objects.filter(conversation=conversation)
    else:
        person = person_or_conversation
        qs = Message.objects.filter(conversation__person=person)
        if not cross:
            connector_id = connector.pk if isinstance(connector, Connector) else connector
            qs = qs.filter(conversation__connector_id=connector_id)
    if before is not None:
        qs = qs.filter(
            Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, id__lt=before.pk)
        )
    if limit == 0:
        return []
    recent = list(qs.order_by("-created_at", "-id")[:limit])
    recent.reverse()
    return _shape(recent)


def context_for_inbound(inbound):
    """BRAIN_CONTEXT_PROVIDER: the conversation before `inbound`, oldest first."""
    limit = settings.BRAIN_CONTEXT_LIMIT
    # The message BRAIN answers, and the ones before it, may still be markers: store them first.
    address = conversation_key(inbound.sender, inbound.metadata)
    _flush(inbound.connector_id, conversation_address(inbound.connector.kind, address),
           settings.CONVERSATION_CONTEXT_CROSS_CHANNEL)
    message = Message.objects.select_related("conversation").filter(inbound_id=inbound.pk).first()
    if message is None:  # stored before memory existed: fall back to the connectors' own view
        return conversation_context(inbound, limit)
    return get_context(message.conversation, inbound.connector_id, limit, before=message, flush=False)


def _context_denied(principal, connector_id, error):
    with transaction.atomic():
        audit.record(
            "conversation.context", principal=principal, result=audit.DENIED, target_type="connector",
            target_id=connector_id, details={"via": principal.via, "error": error},
        )


def context_for_address(principal, connector_id, address, limit=10):
    """The context of one (connector, address) (MCP): one's own conversation, or anyone's with
    read_conversations on the connector. A refusal is the same whether a conversation exists or
    not. Only this conversation, even with cross-channel context on: the caller's permission is
    on this connector, not on the person's others."""
    try:
        connector = Connector.objects.get(pk=connector_id)
    except Connector.DoesNotExist:
        raise NotFound(f"Connector {connector_id!r} does not exist.")
    address = conversation_address(connector.kind, address)
    flush_conversation(connector.pk, address)  # its first message may still be pending
    conversation = Conversation.objects.filter(connector=connector, address=address).first()
    if not access.is_own(principal, connector.pk, address, conversation) and not access.may_read_connector(
        principal, connector
    ):
        if not has_perm(principal, PERM_VIEW, connector):
            # Hidden like an unknown connector, but on record as a refused attempt.
            _context_denied(principal, connector_id, "not_found")
            raise NotFound(f"Connector {connector_id!r} does not exist.")
        _context_denied(principal, connector_id, "permission_denied")
        raise PermissionDenied(
            f"Reading other people's conversations on connector {connector_id!r} needs the read_conversations "
            "permission on it."
        )
    limit = max(1, min(int(limit), 100))
    with transaction.atomic():  # the read and its audit row, one transaction
        reads.record_read(
            "conversation.context", principal, "connector", connector_id,
            conversation_id=conversation.pk if conversation else None,
        )
        if conversation is None:
            return []
        return get_context(conversation, connector, limit, cross_channel=False, flush=False)


# --- search -------------------------------------------------------------------------------


def _scope(principal, connector_id, person):
    """A Q over Message for what this principal may search: their own conversations, and others'
    on connectors where they hold read_conversations (see conversations.access)."""
    everything = access.reads_everything(principal)
    if not everything:
        user = principal.user
        if user is None or not user.is_active:
            raise PermissionDenied("You may not search conversations.")
    q = access.readable_q(principal, "conversation__")
    if connector_id is not None:
        connector = Connector.objects.filter(pk=connector_id).first()
        # Naming a connector one may neither view nor has a conversation on is "not found"; one
        # that may be viewed without read_conversations finds one's own messages there only.
        allowed = connector is not None and (
            everything or has_perm(principal, PERM_VIEW, connector)
            or Conversation.objects.filter(access.own_q(principal.user), connector=connector).exists()
        )
        if not allowed:
            raise NotFound(f"Connector {connector_id!r} does not exist or you may not search it.")
        q &= Q(conversation__connector_id=connector_id)
    if person is not None:
        person_id = getattr(person, "pk", person)
        if not everything and person_id != principal.user.pk and not principal.user.is_staff:
            raise PermissionDenied("You may search only your own conversations.")
        q &= Q(conversation__person_id=person_id)
    return q


def search(principal: Principal, query, *, connector_id=None, person=None, limit=50):
    """Messages matching every word of `query` (and its quoted phrases), newest first, that the
    principal may read: their own conversations; everyone's on connectors where they hold
    read_conversations; all for superusers. Audited as `conversation.search` with the number of
    tokens, never the query."""
    limit = max(1, min(int(limit), MAX_SEARCH_LIMIT))
    try:
        tokens, phrases = index.parse_query(query)
        # What was said a moment ago is found too (and one's own new conversation is in scope): store
        # what is pending first. What another consumer is storing right now is skipped, not waited
        # for; it is visible a moment later.
        record_pending()
        scope = _scope(principal, connector_id, person)
    except ServiceError as exc:
        denied = isinstance(exc, (PermissionDenied, NotFound))
        audit.record(
            "conversation.search", principal=principal, result=audit.DENIED if denied else audit.FAILURE,
            target_type="connector" if connector_id else "conversation", target_id=connector_id or "",
            details={"via": principal.via, "error": exc.code},
        )
        raise
    with transaction.atomic():  # the read and its audit row, one transaction
        key = index._key()
        # During an index-key rebuild (rebuild_search_index), a message's rows are under either
        # the new key or the previous one, never both: a token matches under either.
        keys = [key] + ([settings.SEARCH_INDEX_PREVIOUS_KEY.encode()] if settings.SEARCH_INDEX_PREVIOUS_KEY else [])
        # One EXISTS per token on the (digest, message) index, newest message first: the planner
        # starts from the rarest token's rows or walks messages backwards for common ones, and
        # stops at the limit. (Grouping every matching token row first sorted 70,000 rows for a
        # common word: p95 246 ms at 100,000 messages.)
        qs = Message.objects.filter(scope)
        for token in dict.fromkeys(tokens):
            digests = [index.digest(token, k) for k in keys]
            qs = qs.filter(Exists(SearchToken.objects.filter(message_id=OuterRef("pk"), digest__in=digests)))
        qs = qs.select_related("conversation").order_by("-id")
        if phrases:
            results = []
            for message in qs[: limit * 10]:
                if all(index.phrase_match(p, message.content) for p in phrases):
                    results.append(message)
                    if len(results) == limit:
                        break
        else:
            results = list(qs[:limit])
        reads.record_read(
            "conversation.search", principal, "connector" if connector_id else "conversation", connector_id or "",
            token_count=len(tokens), phrases=len(phrases), results=len(results),
        )
    return results


def result_dict(message):
    return {
        "message_id": message.pk,
        "conversation_id": message.conversation_id,
        "connector": message.conversation.connector_id,
        "role": message.role,
        "time": message.created_at.isoformat(),
        "content": message.content,
    }
