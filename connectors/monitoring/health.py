"""Periodic health checks, downtime incidents and the alerts staff receive about them.

A health round (`run_health_checks()`, Celery beat every HEALTH_CHECK_INTERVAL_SECONDS):

- every CONNECTED or ERROR connector's platform `health_check()` runs outside any transaction
  (it is a network call) and is timed; then, in one transaction under the connector's row lock:
  `health_failures` (reset on ok, +1 on failure), `last_heartbeat` (on ok), the audit row
  `connector.health` and the event `connector.health.check` {ok, latency_ms, failures, stale,
  detail};
- a CONNECTED connector that failed HEALTH_FAILURE_THRESHOLD checks in a row, or whose
  heartbeat is older than HEALTH_STALE_SECONDS, goes to ERROR through
  `services.record_connector_error` (which audits and emits `connector.error`) in that same
  transaction;
- recovery: an ERROR connector whose check passes is restarted (`services.start_connector` as
  the system actor "health") when HEALTH_AUTO_RESTART is on. ERROR is only ever reached by
  accident (people stop or disable, they never "error"), so bringing it back is what a person
  on call would do first. A start that fails again leaves it in ERROR for the next round.
  Poller connectors are not restarted (see below): their alert asks a person to look.
- `reconcile_incidents()` ends the round: it opens an incident for every ERROR connector
  without one, closes the incident of every connector back in CONNECTED (or stopped/disabled
  by a person), and alerts the active AlertRecipients through the normal send pipeline.

Heartbeats of poller connectors (`runs_poller`, e.g. Telegram in polling mode) belong to the
`runconnectors` process holding their lease: a passing API check says the platform answers, not
that our poller runs, so the round does not refresh those and a dead runner shows as stale.

Two overlapping rounds (a slow round, two beat processes) must not count one failure twice: a
connector checked less than HEALTH_CHECK_MIN_SPACING_SECONDS ago (its latest
`connector.health.check` event, read under the row lock) is skipped.
"""
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import NotFound, PermissionDenied, ServiceError, ValidationFailed, audit_result
from brain_connectors.shared.log_redaction import redact
from connectors import services
from connectors.events import log as events
from connectors.models import PERM_SEND, PERM_VIEW, AlertRecipient, Connector, ConnectorStatus, Event
from connectors.permissions import Principal, permission_test
from connectors.platforms.base import ConnectorError, HealthResult
from connectors.registry.kinds import UnknownKind, connector_for, get_connector_class

logger = logging.getLogger(__name__)

HEALTH = Principal.system_actor("health")
CHECKED_STATUSES = (ConnectorStatus.CONNECTED, ConnectorStatus.ERROR)
# An incident on a connector a person stopped or disabled is over: nobody waits for it to recover.
CLOSED_BY_PEOPLE = (ConnectorStatus.STOPPED, ConnectorStatus.DISABLED)
DETAIL_MAX = 200
LAST_ERROR_MAX = 300


def _short(text, limit=DETAIL_MAX) -> str:
    """One line, secrets redacted, truncated: what may go into events, audit rows and alerts."""
    line = redact(" ".join(str(text or "").split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- health checks ---------------------------------------------------------------------------


def run_health_checks() -> dict:
    """One health round over every CONNECTED and ERROR connector, then incident reconciliation."""
    ids = list(Connector.objects.filter(status__in=CHECKED_STATUSES).order_by("id").values_list("id", flat=True))
    outcomes = {"checked": 0, "failed": 0, "errored": 0, "restarted": 0, "skipped": 0}
    for connector_id in ids:
        try:
            outcome = check_connector(connector_id)
        except Exception:  # one broken connector must not stop the round for the others
            logger.exception("Health check of %s failed unexpectedly", connector_id)
            outcomes["skipped"] += 1
            continue
        for key in outcome:
            outcomes[key] = outcomes.get(key, 0) + 1
    outcomes["incidents"] = reconcile_incidents()
    return outcomes


def _call_health_check(connector):
    """(HealthResult, is a poller, latency in ms). Never raises: an error is an unhealthy answer."""
    started = time.perf_counter()
    poller = False
    try:
        platform = connector_for(connector)
        poller = bool(platform.runs_poller)
        result = platform.health_check()
        if not isinstance(result, HealthResult):
            result = HealthResult(ok=False, detail=f"health_check() returned {type(result).__name__}")
    except ConnectorError as exc:
        result = HealthResult(ok=False, detail=exc.message)
    except (UnknownKind, ImportError, TypeError) as exc:
        result = HealthResult(ok=False, detail=f"kind unavailable: {exc}")
    except Exception as exc:  # an SDK bug or a timeout: unhealthy, and logged with its traceback
        logger.exception("Health check of %s raised", connector.id)
        result = HealthResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
    return result, poller, round((time.perf_counter() - started) * 1000, 1)


def check_connector(connector_id) -> set[str]:
    """Check one connector and record the outcome; returns what happened ({"checked", "failed", …})."""
    connector = Connector.objects.filter(pk=connector_id, status__in=CHECKED_STATUSES).first()
    if connector is None:
        return {"skipped"}
    result, poller, latency_ms = _call_health_check(connector)
    detail = _short(result.detail)
    outcome = {"checked"} if result.ok else {"checked", "failed"}
    with transaction.atomic():
        connector = Connector.objects.select_for_update().filter(pk=connector_id).first()
        if connector is None or connector.status not in CHECKED_STATUSES:
            return {"skipped"}  # stopped or deleted while we were checking: nothing to judge
        now = timezone.now()
        if _recently_checked(connector_id, now):
            return {"skipped"}
        if result.ok:
            connector.health_failures = 0
            if not poller:
                connector.last_heartbeat = now
        else:
            connector.health_failures += 1
        stale_after = timedelta(seconds=settings.HEALTH_STALE_SECONDS)
        stale = connector.last_heartbeat is None or now - connector.last_heartbeat > stale_after
        connector.save(update_fields=["health_failures", "last_heartbeat", "updated_at"])
        audit.record_action(
            "connector.health",
            HEALTH,
            "connector",
            connector_id,
            result=audit.SUCCESS if result.ok else audit.FAILURE,
            ok=result.ok,
            latency_ms=latency_ms,
            failures=connector.health_failures,
            stale=stale,
        )
        events.publish(
            "connector.health.check",
            connector_id=connector_id,
            data={
                "ok": result.ok,
                "latency_ms": latency_ms,
                "failures": connector.health_failures,
                "stale": stale,
                "status": connector.status,
                "detail": detail,
                "trigger": "schedule",  # a manual test (services.test_connector) says "manual"
            },
        )
        if connector.status == ConnectorStatus.CONNECTED:
            threshold = settings.HEALTH_FAILURE_THRESHOLD
            if connector.health_failures >= threshold:
                error = ConnectorError(
                    f"{connector.health_failures} health checks failed in a row (last: {detail})",
                    code="health_check_failed",
                )
            elif stale:
                seen = connector.last_heartbeat.isoformat() if connector.last_heartbeat else "never"
                error = ConnectorError(
                    f"No heartbeat for over {settings.HEALTH_STALE_SECONDS}s (last: {seen})", code="heartbeat_stale"
                )
            else:
                error = None
            if error is not None:
                # Same transaction: the check that tipped it over and the status change commit together.
                services.record_connector_error(HEALTH, connector_id, error)
                outcome.add("errored")
        # Pollers are left to a person: their ERROR is often a dead `runconnectors` process, which a
        # restart cannot bring back (the connector would go stale again and alert every few minutes).
        restart = connector.status == ConnectorStatus.ERROR and result.ok and not poller and settings.HEALTH_AUTO_RESTART
    if restart:
        try:
            restarted = services.start_connector(HEALTH, connector_id)
        except ServiceError as exc:  # changed meanwhile (stopped, disabled): the service audited it
            logger.info("Restarting %s after a passing health check was refused: %s", connector_id, exc.message)
        else:
            if restarted.status == ConnectorStatus.CONNECTED:
                outcome.add("restarted")
    return outcome


def _recently_checked(connector_id, now) -> bool:
    spacing = settings.HEALTH_CHECK_MIN_SPACING_SECONDS
    if spacing <= 0:
        return False
    # Only scheduled checks count: a person's manual test must not make the round skip one.
    return Event.objects.filter(
        connector_id=connector_id,
        type="connector.health.check",
        time__gt=now - timedelta(seconds=spacing),
        data__trigger="schedule",
    ).exists()


# --- incidents and alerts --------------------------------------------------------------------


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
            f"{connector.status} since {_when(connector.incident_started_at)}. "
            f"Last error: {_short(connector.last_error, LAST_ERROR_MAX) or '(none recorded)'}"
        )
        # Inside the incident's transaction: the incident and its queued alerts commit together.
        _alert(connector, connector.incident_started_at, "down", text)
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
                f"{connector.status} again at {_when(now)} after {_duration(downtime)} down "
                f"(since {_when(started)})."
            )
            _alert(connector, started, "up", text, allow_same_channel=True)
        else:
            text = (
                f"[BRAIN Connectors] CLOSED: {connector.display_name} ({connector.id}, {connector.kind}) was "
                f"{connector.status.lower()} by a person at {_when(now)} after {_duration(downtime)} in ERROR "
                f"(since {_when(started)}); no recovery is expected."
            )
            _alert(connector, started, "closed", text, allow_same_channel=True)
    return 1


def _alert(connector, incident_start, phase, text, *, allow_same_channel=False):
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
            audit.record_action(
                "connector.alert",
                HEALTH,
                "connector",
                connector.pk,
                result=audit.FAILURE,
                phase=phase,
                alert_recipient=recipient.pk,
                channel=channel.pk,
                error=reason,
            )
            continue
        key = f"alert:{connector.pk}:{incident_start.isoformat()}:{recipient.pk}:{phase}"
        try:
            delivery, replayed = services.send_message(HEALTH, channel.pk, recipient.recipient, text, idempotency_key=key)
        except ServiceError as exc:  # send_message audited the refusal; say which alert it was
            logger.warning("Alert (%s) about %s to alert recipient %s refused: %s", phase, connector.pk, recipient.pk,
                           exc.message)
            audit.record_action(
                "connector.alert",
                HEALTH,
                "connector",
                connector.pk,
                result=audit.FAILURE,
                phase=phase,
                alert_recipient=recipient.pk,
                channel=channel.pk,
                error=exc.code,
            )
            continue
        audit.record_action(
            "connector.alert",
            HEALTH,
            "connector",
            connector.pk,
            phase=phase,
            alert_recipient=recipient.pk,
            channel=channel.pk,
            delivery_id=str(delivery.id),
            replayed=replayed,
        )


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(delta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


# --- alert recipients (admin) ----------------------------------------------------------------


def _check_recipient_access(principal, action, connector):
    """Django model permission for the action, and send permission on the channel: nobody may make
    the system send through a connector they could not send through themselves."""
    user = principal.user
    if principal.is_system or user.is_superuser:
        return
    if not (user.is_active and user.is_staff and user.has_perm(f"connectors.{action}_alertrecipient")):
        raise PermissionDenied(f"You need the connectors.{action}_alertrecipient permission.")
    allowed = permission_test(principal, connector)
    if not allowed(PERM_VIEW):
        raise NotFound(f"Connector {connector.pk!r} does not exist.")
    if not allowed(PERM_SEND):
        raise PermissionDenied(f"You need the {PERM_SEND} permission on connector {connector.pk!r}.")


def save_alert_recipient(principal, *, pk=None, connector_id, recipient, description="", active=True):
    """Create (pk None) or change an alert recipient. Audited without the address itself."""
    action = "add" if pk is None else "change"
    audit_action = "alert_recipient.create" if pk is None else "alert_recipient.update"
    with audit.audited(audit_action, principal, "alert_recipient", str(pk or ""), classify=audit_result):
        recipient = (recipient or "").strip()
        with transaction.atomic():
            connector = Connector.objects.filter(pk=connector_id).first()
            if connector is None:
                raise NotFound(f"Connector {connector_id!r} does not exist.")
            _check_recipient_access(principal, action, connector)
            try:
                problem = get_connector_class(connector.kind).validate_recipient(recipient) if recipient else "empty"
            except UnknownKind:
                problem = None
            if problem:
                raise ValidationFailed(f"Invalid recipient for a {connector.kind} connector: {problem}.",
                                       details={"recipient": problem})
            if pk is None:
                row = AlertRecipient(connector=connector)
            else:
                row = AlertRecipient.objects.select_for_update().select_related("connector").filter(pk=pk).first()
                if row is None:
                    raise NotFound(f"Alert recipient {pk} does not exist.")
                if row.connector_id != connector.pk:  # moving it away needs the same right on the old channel
                    _check_recipient_access(principal, action, row.connector)
                row.connector = connector
            if AlertRecipient.objects.filter(connector=connector, recipient=recipient).exclude(pk=row.pk).exists():
                raise ValidationFailed("This recipient is already set up on this connector.",
                                       details={"recipient": "duplicate"})
            row.recipient, row.description, row.active = recipient, (description or "")[:200], bool(active)
            row.save()
            audit.record_action(
                audit_action,
                principal,
                "alert_recipient",
                str(row.pk),
                connector=connector.pk,
                active=row.active,
            )
    return row


def delete_alert_recipient(principal, pk):
    with audit.audited("alert_recipient.delete", principal, "alert_recipient", str(pk), classify=audit_result):
        with transaction.atomic():
            row = AlertRecipient.objects.select_for_update().select_related("connector").filter(pk=pk).first()
            if row is None:
                raise NotFound(f"Alert recipient {pk} does not exist.")
            _check_recipient_access(principal, "delete", row.connector)
            connector_id = row.connector_id
            row.delete()
            audit.record_action(
                "alert_recipient.delete",
                principal,
                "alert_recipient",
                str(pk),
                connector=connector_id,
            )
