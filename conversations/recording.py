"""Conversation memory after commit: a durable marker in the hot transaction, stored as messages in batches.

`record_marker` receives `connectors.signals.message_recorded`, which receive_message and
send_message send INSIDE their transaction, and only inserts one `PendingMessage` (the text memory
keeps, a pairing code already replaced, encrypted): it commits or rolls back with the inbound
message or the delivery, so nothing is lost and nothing is remembered that did not happen. After
commit a kick runs `record_pending`, which turns markers into messages in batches: identity lookup,
conversation get-or-create, encryption, blind-index rows and sentiment/topic analysis, in one
transaction per batch that also deletes the markers it consumed. A crash leaves the markers and the
batch is redone; a message already stored for the same inbound or delivery id is not stored twice.
On PostgreSQL markers are claimed with `FOR UPDATE SKIP LOCKED`, so several consumers share the work.

Who consumes: the kick (`conversations.tasks.record_pending`, at most one per process per
CONVERSATION_MEMORY_KICK_SECONDS, inline in eager mode), Celery beat every
CONVERSATION_MEMORY_SWEEP_SECONDS, and readers: `flush_conversation` before BRAIN's context is read.

Roles: inbound is "user"; outbound is "assistant" when BRAIN sent it (principal "system:brain"),
else "system" (an operator, the API, MCP or routing speaking to the person). Addresses are kept in
the platform's lenient form (`normalize_address(strict=False)`), so one person's WhatsApp exchange
is one conversation whichever form a platform uses.
"""
import logging
import threading
import time

from celery import current_app
from django.conf import settings
from django.db import transaction

from connectors import task_queue
from connectors.models import Connector
from connectors.platforms.base import BaseConnector
from connectors.registry.kinds import UnknownKind, get_connector_class
from conversations import analysis
from conversations import search as index
from conversations.models import Conversation, Message, MessageAnalysis, PendingMessage, Role, SearchToken
from routing.models import ChannelIdentity
from routing.pairing import memory_text

logger = logging.getLogger(__name__)

RECORD_PENDING = "conversations.tasks.record_pending"  # enqueued by name, through the one enqueue seam
BRAIN_PRINCIPAL = "system:brain"
# One consumer call stops after this many batches (the next kick or beat goes on), so a task never runs unbounded.
MAX_BATCHES = 50


def conversation_address(kind, address):
    """The address a conversation is kept under: the platform's lenient form (trimmed; WhatsApp's
    `whatsapp:` prefix removed), never refused. The rules are the platform's
    (`BaseConnector.normalize_address`), shared with routing's identities."""
    try:
        platform = get_connector_class(kind)
    except UnknownKind:  # a row whose kind is no longer configured: trimmed only
        platform = BaseConnector
    return platform.normalize_address(address, strict=False)


# --- the hot transaction: one insert -------------------------------------------------------


def record_marker(sender=None, *, connector_id, direction, address, content, at, principal, inbound_id=None,
                  delivery_id=None, platform_message_id="", metadata=None, kind=None, **kwargs):
    """Receiver of message_recorded: write the durable marker in the caller's transaction, kick after commit."""
    if kind is None:  # a sender that does not pass it: read it
        kind = Connector.objects.filter(pk=connector_id).values_list("kind", flat=True).first()
    # A pairing code sent to BRAIN is replaced by routing's placeholder here already, so it is
    # never written anywhere memory owns, not even the marker.
    text = memory_text(connector_id, direction, content) or content
    PendingMessage.objects.create(
        connector_id=connector_id, kind=kind or "", direction=direction,
        address=conversation_address(kind, address), at=at, principal=principal or "", inbound_id=inbound_id,
        delivery_id=delivery_id, platform_message_id=platform_message_id or "", metadata=metadata or {},
        content=text,
    )
    transaction.on_commit(kick)


_kick_lock = threading.Lock()
_kick_planned_at = float("-inf")  # time.monotonic() at which this process's latest kick was planned to run


def _kick_countdown(now, interval):
    """Seconds from now to send a kick after, or None when a kick planned to run later already covers
    every marker committed until now. At most one kick per `interval` per process: under load the
    markers of many requests share one kick, and none waits longer than `interval` for one."""
    global _kick_planned_at
    with _kick_lock:
        if now < _kick_planned_at:
            return None
        run_at = max(now, _kick_planned_at + interval)
        _kick_planned_at = run_at
        return run_at - now


def kick():
    """After commit: make a consumer run soon. Eager mode (tests, `make run`) consumes inline, now."""
    if current_app.conf.task_always_eager:
        countdown = 0
    else:
        countdown = _kick_countdown(time.monotonic(), settings.CONVERSATION_MEMORY_KICK_SECONDS)
        if countdown is None:
            return
    try:
        task_queue.enqueue(RECORD_PENDING, countdown=countdown)
    except Exception:  # a broker outage must not fail the committed message: beat consumes the markers
        logger.exception("could not enqueue the conversation memory consumer")


def record_transcript(sender=None, *, connector_id, inbound_id, text, **kwargs):
    """Receiver of message_transcribed: memory keeps what a voice note said, searchable. The message's marker, if
    not consumed yet, takes the new text; a stored message is rewritten and indexed and analysed again."""
    text = memory_text(connector_id, "inbound", text) or text  # a pairing code said aloud is kept out as well
    with transaction.atomic():
        for marker in PendingMessage.objects.select_for_update().filter(inbound_id=inbound_id):
            marker.content = text
            marker.save(update_fields=["content"])
        for message in Message.objects.select_for_update().filter(inbound_id=inbound_id):
            message.content = text
            message.save(update_fields=["content"])
            SearchToken.objects.filter(message=message).delete()
            MessageAnalysis.objects.filter(message=message).delete()
            index_messages([message])
            _analyse([message])


# --- the consumer --------------------------------------------------------------------------


def record_pending(*, batch_size=None, max_batches=MAX_BATCHES):
    """Consume pending markers, batch by batch, skipping markers another consumer holds; returns how many."""
    return _consume(batch_size=batch_size, max_batches=max_batches, wait=False)


def flush_conversation(connector_id, address):
    """Store the pending messages of one conversation (`address` in its conversation form) before
    reading it. Waits for markers another consumer holds, so what that consumer commits is seen."""
    return _consume(connector_id=connector_id, address=address, wait=True)


def _consume(*, batch_size=None, max_batches=MAX_BATCHES, connector_id=None, address=None, wait):
    batch_size = batch_size or settings.CONVERSATION_MEMORY_BATCH_SIZE
    total = 0
    for _ in range(max_batches):
        consumed = record_batch(batch_size, connector_id=connector_id, address=address, wait=wait)
        total += consumed
        if consumed < batch_size:
            break
    return total


def record_batch(limit, *, connector_id=None, address=None, wait=False):
    """One transaction: claim up to `limit` markers (oldest first), store their messages, delete them."""
    with transaction.atomic():
        pending = PendingMessage.objects.order_by("at", "id")
        if connector_id is not None:
            pending = pending.filter(connector_id=connector_id)
        if address is not None:
            pending = pending.filter(address=address)
        # SKIP LOCKED: concurrent consumers take disjoint batches (SQLite ignores it and serialises writers).
        markers = list(pending.select_for_update(skip_locked=not wait)[:limit])
        if not markers:
            return 0
        store_markers(markers)
        PendingMessage.objects.filter(pk__in=[m.pk for m in markers]).delete()
    return len(markers)


def _unstored(markers):
    """The markers whose message is not in memory yet (a redone batch, or a repeated marker)."""
    inbound_ids = {m.inbound_id for m in markers if m.inbound_id is not None}
    delivery_ids = {m.delivery_id for m in markers if m.delivery_id is not None}
    stored_inbound = set(
        Message.objects.filter(inbound_id__in=inbound_ids).values_list("inbound_id", flat=True)
    ) if inbound_ids else set()
    stored_delivery = set(
        Message.objects.filter(delivery_id__in=delivery_ids).values_list("delivery_id", flat=True)
    ) if delivery_ids else set()
    fresh = []
    for marker in markers:
        if marker.inbound_id is not None:
            if marker.inbound_id in stored_inbound:
                continue
            stored_inbound.add(marker.inbound_id)
        if marker.delivery_id is not None:
            if marker.delivery_id in stored_delivery:
                continue
            stored_delivery.add(marker.delivery_id)
        fresh.append(marker)
    return fresh


def _people(keys):
    connector_ids, addresses = {c for c, _ in keys}, {a for _, a in keys}
    rows = ChannelIdentity.objects.filter(connector_id__in=connector_ids, address__in=addresses)
    return {(c, a): user_id for c, a, user_id in rows.values_list("connector_id", "address", "user_id")
            if (c, a) in keys}


def _existing_conversations(keys):
    connector_ids, addresses = {c for c, _ in keys}, {a for _, a in keys}
    found = Conversation.objects.filter(connector_id__in=connector_ids, address__in=addresses)
    return {(c.connector_id, c.address): c for c in found if (c.connector_id, c.address) in keys}


def _conversations(markers):
    """(connector id, address) → Conversation for every marker, created where missing, with its
    person and last message time brought up to date. Created and updated in key and id order, so
    concurrent consumers take row locks in one order and never deadlock on each other."""
    latest = {}
    for marker in markers:
        key = (marker.connector_id, marker.address)
        latest[key] = max(latest.get(key, marker.at), marker.at)
    keys = set(latest)
    people = _people(keys)
    conversations = _existing_conversations(keys)
    missing = sorted(keys - set(conversations))
    if missing:
        Conversation.objects.bulk_create(
            [Conversation(connector_id=c, address=a, person_id=people.get((c, a)), last_message_at=latest[(c, a)])
             for c, a in missing],
            ignore_conflicts=True,  # a concurrent consumer created it first: read it below
        )
        conversations.update(_existing_conversations(set(missing)))
    for conversation in sorted(conversations.values(), key=lambda c: c.pk):
        key = (conversation.connector_id, conversation.address)
        changed = {}
        person_id = people.get(key)
        if person_id is not None and conversation.person_id != person_id:
            changed["person_id"] = person_id
        if conversation.last_message_at is None or latest[key] > conversation.last_message_at:
            changed["last_message_at"] = latest[key]
        if changed:
            Conversation.objects.filter(pk=conversation.pk).update(**changed)
    return conversations


def _role(marker):
    if marker.direction == "inbound":
        return Role.USER
    return Role.ASSISTANT if marker.principal == BRAIN_PRINCIPAL else Role.SYSTEM


def store_markers(markers):
    """Store the messages of these markers (in the caller's transaction); returns the new Messages."""
    fresh = _unstored(markers)
    if not fresh:
        return []
    conversations = _conversations(fresh)
    messages = Message.objects.bulk_create([
        Message(
            conversation=conversations[(m.connector_id, m.address)], role=_role(m), content=m.content,
            created_at=m.at, inbound_id=m.inbound_id, delivery_id=m.delivery_id,
            platform_message_id=m.platform_message_id, metadata=m.metadata or {},
        )
        for m in fresh  # in (time, id) order: ids follow time inside a conversation
    ])
    index_messages(messages)
    _analyse(messages)
    return messages


def index_messages(messages, key=None):
    """Write the blind-index rows of these messages (under `key`, default SEARCH_INDEX_KEY)."""
    key = key or settings.SEARCH_INDEX_KEY
    if not key:
        logger.warning("SEARCH_INDEX_KEY is not set: %d messages are stored but not indexed", len(messages))
        return 0
    kid = index.key_id(key)
    rows = [SearchToken(message=m, digest=d, key_id=kid) for m in messages for d in index.digests_for(m.content, key)]
    SearchToken.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _analyse(messages):
    rows = []
    for message in messages:
        try:
            rows.append(analysis.analysis_for(message))
        except Exception as exc:  # one message the analysers choke on must not hold back the memory of all others
            # The type only: an analyser's error or traceback may quote the text.
            logger.error("could not analyse the message with id %s (%s); stored without analysis",
                         message.pk, type(exc).__name__)
    MessageAnalysis.objects.bulk_create(rows)
