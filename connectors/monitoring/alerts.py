"""Alerts to staff about downtime: queued to every active AlertRecipient through the normal send pipeline."""
import logging

from audit import services as audit
from brain_connectors.shared.errors import ServiceError
from connectors import services
from connectors.models import AlertRecipient, ConnectorStatus
from connectors.monitoring.reporting import HEALTH

logger = logging.getLogger(__name__)


def send_alert(connector, incident_start, phase, text, *, allow_same_channel=False):
    """Queue `text` to every active recipient, in the caller's transaction.

    The idempotency key names the incident, the recipient and the phase, so a re-run (a retried
    task, a second worker that got past the lock after a rollback) replays instead of resending.
    A recipient whose channel is the failing connector, or is not running, cannot be reached:
    that is logged and audited, and the other recipients are still alerted. A recovered
    connector may carry its own recovery alert (`allow_same_channel`).
    """
    recipients = AlertRecipient.objects.filter(active=True).select_related("connector").order_by("pk")
    for recipient in recipients:
        channel = recipient.connector
        reason = ""
        if channel.pk == connector.pk and not allow_same_channel:
            reason = "channel_is_the_failing_connector"
        elif channel.status != ConnectorStatus.CONNECTED:
            reason = f"channel_{channel.status.lower()}"
        if reason:
            logger.warning(
                "Alert (%s) about %s cannot go to alert recipient %s via %s: %s",
                phase, connector.pk, recipient.pk, channel.pk, reason,
            )
            _audit_alert(connector, phase, recipient, result=audit.FAILURE, error=reason)
            continue
        key = f"alert:{connector.pk}:{incident_start.isoformat()}:{recipient.pk}:{phase}"
        try:
            delivery, replayed = services.send_message(HEALTH, channel.pk, recipient.recipient, text, idempotency_key=key)
        except ServiceError as exc:  # send_message audited the refusal; say which alert it was
            logger.warning("Alert (%s) about %s to alert recipient %s refused: %s", phase, connector.pk, recipient.pk,
                           exc.message)
            _audit_alert(connector, phase, recipient, result=audit.FAILURE, error=exc.code)
            continue
        _audit_alert(connector, phase, recipient, delivery_id=str(delivery.id), replayed=replayed)


def _audit_alert(connector, phase, recipient, result=audit.SUCCESS, **outcome):
    """One `connector.alert` audit row: which alert, to whom, via which channel, and how it went."""
    audit.record_action(
        "connector.alert",
        HEALTH,
        "connector",
        connector.pk,
        result=result,
        phase=phase,
        alert_recipient=recipient.pk,
        channel=recipient.connector.pk,
        **outcome,
    )
