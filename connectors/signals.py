"""Signals other apps listen to, so that connectors never imports them.

Routing, for instance, reacts to deliveries settling without connectors knowing routing exists.

`delivery_settled` is sent after commit when a delivery reaches an outcome: `status` is one of
sent, delivered, failed, dead; `via` says what told us (platform, receipt, acknowledgement,
confirmation); `acknowledged` is True when the person confirmed it (e.g. pressed 1 on a call).
Receivers run in the committing thread; they must be quick and must not raise.
"""
from django.dispatch import Signal

delivery_settled = Signal()  # kwargs: delivery_id, connector_id, status, via, acknowledged

# Sent INSIDE the transaction that stores an inbound message or queues a delivery, so that
# whatever a receiver writes (conversation memory) commits or rolls back with it. A receiver that
# raises fails the whole call. kwargs: connector_id, kind (the connector's), direction ("inbound" | "outbound"), address,
# content, at, inbound_id, delivery_id, platform_message_id, principal (str), metadata.
message_recorded = Signal()

# Sent after commit when voice or audio attachments of a stored inbound message got transcripts
# (connectors.delivery.transcription), before BRAIN is asked, so that memory and its search hold what was said.
# kwargs: connector_id, inbound_id, text (what memory keeps for the message now). Receivers must not raise.
message_transcribed = Signal()
