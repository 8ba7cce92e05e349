"""Downtime incidents: opened for connectors in ERROR, closed when they recover or a person stops them.

Each incident alerts once when it opens and once when it closes (connectors.monitoring.alerts).
An incident on a connector a person stopped or disabled is over: nobody waits for it to recover.
"""
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from connectors.models import Connector, ConnectorStatus
from connectors.monitoring.alerts import send_alert
from connectors.monitoring.reporting import HEALTH, LAST_ERROR_MAX, duration, one_line, utc_time


def reconcile_incidents() -> dict:
    """Open incidents for ERROR connectors, close those of recovered or stopped ones; alert once each."""
    opened = closed = 0
    to_open = Connector.objects.filter(status=ConnectorStatus.ERROR, incident_started_at__isnull=True)
    for connector_id in list(to_open.values_list("id", flat=True)):
        opened += _open_incident(connector_id)
    to_close = Connector.objects.filter(incident_started_at__isnull=False).exclude(status=ConnectorStatus.ERROR)
    for connector_id in list(to_close.values_list("id", flat=True)):
        closed += _close_incident(connector_id)
    return {"opened": opened, "closed": closed}


def _open_incident(connector_id) -> int:
    with transaction.atomic():
        # The row lock and the re-check make one worker the opener: another one waiting here
        # finds incident_started_at set and does nothing, so each incident alerts once.
        connector = (
            Connector.objects.select_for_update()
            .filter(pk=connector_id, status=ConnectorStatus.ERROR, incident_started_at__isnull=True)
            .first()
        )
        if connector is None:
            return 0
        connector.incident_started_at = timezone.now()
        connector.save(update_fields=["incident_started_at", "updated_at"])
        audit.record_action(
            "connector.incident.open",
            HEALTH,
            "connector",
            connector_id,
            status=connector.status,
            started_at=connector.incident_started_at,
        )
        text = (
            f"[BRAIN Connectors] DOWN: {connector.display_name} ({connector.id}, {connector.kind}) is "
            f"{connector.status} since {utc_time(connector.incident_started_at)}. "
            f"Last error: {one_line(connector.last_error, LAST_ERROR_MAX) or '(none recorded)'}"
        )
        # Inside the incident's transaction: the incident and its queued alerts commit together.
        send_alert(connector, connector.incident_started_at, "down", text)
    return 1


def _close_incident(connector_id) -> int:
    with transaction.atomic():
        connector = (
            Connector.objects.select_for_update()
            .filter(pk=connector_id, incident_started_at__isnull=False)
            .exclude(status=ConnectorStatus.ERROR)
            .first()
        )
        if connector is None:
            return 0
        started = connector.incident_started_at
        now = timezone.now()
        downtime = now - started
        connector.incident_started_at = None
        connector.save(update_fields=["incident_started_at", "updated_at"])
        recovered = connector.status == ConnectorStatus.CONNECTED
        audit.record_action(
            "connector.incident.close",
            HEALTH,
            "connector",
            connector_id,
            status=connector.status,
            started_at=started,
            downtime_seconds=round(downtime.total_seconds(), 1),
        )
        if recovered:
            text = (
                f"[BRAIN Connectors] RECOVERED: {connector.display_name} ({connector.id}, {connector.kind}) is "
                f"{connector.status} again at {utc_time(now)} after {duration(downtime)} down "
                f"(since {utc_time(started)})."
            )
            send_alert(connector, started, "up", text, allow_same_channel=True)
        else:
            text = (
                f"[BRAIN Connectors] CLOSED: {connector.display_name} ({connector.id}, {connector.kind}) was "
                f"{connector.status.lower()} by a person at {utc_time(now)} after {duration(downtime)} in ERROR "
                f"(since {utc_time(started)}); no recovery is expected."
            )
            send_alert(connector, started, "closed", text, allow_same_channel=True)
    return 1
