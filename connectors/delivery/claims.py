"""Claiming due deliveries in batches for the sender: the oldest queued message per recipient, under quota.

One transaction per batch. On PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, so concurrent senders
(processes, machines) take disjoint batches and never wait on each other; a row another sender is claiming is
left to it. On SQLite the database's single write lock serialises claims, and every row is marked `sending` only
if it is still queued, so two claimers still never both take one.
"""
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, models, transaction
from django.utils import timezone

from connectors import quotas
from connectors.delivery import outbound_attachments, outcomes
from connectors.models import Connector, ConnectorStatus, Delivery, DeliveryStatus, InboundMessage
from connectors.permissions import Principal
from connectors.platforms.base import OutgoingMessage

DEFAULT_BATCH = 200


@dataclass(frozen=True)
class Claim:
    """One delivery claimed for sending (`sending`, attempts counted), with what the send needs."""

    delivery: Delivery
    connector: Connector
    message: OutgoingMessage


def claim_batch(limit=DEFAULT_BATCH, now=None):
    """Claim up to `limit` due deliveries of connected connectors, oldest first; returns [Claim].

    Per (connector, recipient) only the oldest queued message is due, and none while one is `sending`: the order
    per person holds across batches and senders. Each claimed row takes its quota tokens; a row over quota gets
    next_attempt_at and stays queued (delayed, never dropped). Claimed rows become `sending` with attempts + 1:
    if this sender dies, the sweeper returns them after DELIVERY_SENDING_TIMEOUT.
    """
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(_due(now, limit))
        if not rows:
            return []
        connectors = Connector.objects.in_bulk({row.connector_id for row in rows})
        claimed = []
        for row in rows:
            connector = connectors[row.connector_id]
            wait = quotas.take([
                (f"connector:{connector.pk}", connector.quota_per_minute),
                (f"recipient:{connector.pk}:{row.recipient}", connector.recipient_quota_per_minute),
            ])
            if wait > 0:
                row.next_attempt_at = now + timedelta(seconds=wait)
                row.save(update_fields=["next_attempt_at", "updated_at"])
            else:
                claimed.append(row)
        claimed = _mark_sending(claimed, now)
        replies_to = _replies_to(claimed)
        files = outbound_attachments.outgoing(claimed)
        claimed = [row for row in claimed if not _files_lost(row, files)]
        return [
            Claim(
                delivery=row,
                connector=connectors[row.connector_id],
                message=OutgoingMessage(
                    recipient=row.recipient, content=row.content, metadata=replies_to.get(row.in_reply_to_id, {}),
                    buttons=tuple(row.buttons or ()), attachments=files.get(row.pk, ()),
                ),
            )
            for row in claimed
        ]


def _files_lost(row, files) -> bool:
    """Settle a claimed delivery whose files are gone as failed (inside the claim's transaction); True if so."""
    lost = outbound_attachments.files_lost(row, files)
    if lost is not None:
        outcomes.settle_failure(Principal.system_actor("delivery"), row, lost)
    return lost is not None


def _due(now, limit):
    ahead = Delivery.objects.filter(
        connector_id=models.OuterRef("connector_id"), recipient=models.OuterRef("recipient"),
    ).filter(
        models.Q(status=DeliveryStatus.SENDING)
        | models.Q(status=DeliveryStatus.QUEUED, created_at__lt=models.OuterRef("created_at"))
    )
    due = (
        Delivery.objects.filter(status=DeliveryStatus.QUEUED, connector__status=ConnectorStatus.CONNECTED)
        .filter(models.Q(next_attempt_at__isnull=True) | models.Q(next_attempt_at__lte=now))
        .filter(~models.Exists(ahead))
        .order_by("created_at")
    )
    # of=("self",): the connector row is only read (a lock on it would conflict with every insert's foreign-key
    # check). A row locked by another sender is skipped; the one behind it for the same person is not due (the
    # locked row is still queued, and older), so skipping never breaks the order.
    return due.select_for_update(skip_locked=True, of=("self",))[:limit]


def _mark_sending(rows, now):
    if not rows:
        return rows
    if connection.features.has_select_for_update_skip_locked:  # the rows are locked: one UPDATE for all
        Delivery.objects.filter(pk__in=[row.pk for row in rows]).update(
            status=DeliveryStatus.SENDING, attempts=models.F("attempts") + 1, updated_at=now,
        )
        marked = rows
    else:  # no row locks: take a row only if it is still queued
        marked = [
            row for row in rows
            if Delivery.objects.filter(pk=row.pk, status=DeliveryStatus.QUEUED).update(
                status=DeliveryStatus.SENDING, attempts=models.F("attempts") + 1, updated_at=now,
            )
        ]
    for row in marked:
        row.status, row.attempts, row.updated_at = DeliveryStatus.SENDING, row.attempts + 1, now
    return marked


def _replies_to(rows):
    """The metadata the platforms thread replies with, for every claimed reply, in one query."""
    ids = {row.in_reply_to_id for row in rows if row.in_reply_to_id}
    if not ids:
        return {}
    return {
        pk: {"reply_to": {"platform_message_id": platform_message_id, "metadata": metadata}}
        for pk, platform_message_id, metadata in InboundMessage.objects.filter(pk__in=ids).values_list(
            "pk", "platform_message_id", "metadata"
        )
    }
