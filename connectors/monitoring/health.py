"""Periodic health checks: each running connector checked, its failures counted, recovered ones restarted.

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
- `reconcile_incidents()` (connectors.monitoring.incidents) ends the round: it opens an incident
  for every ERROR connector without one, closes the incident of every connector back in CONNECTED
  (or stopped/disabled by a person), and alerts the active AlertRecipients.

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

from brain_connectors.shared.errors import ServiceError
from connectors import services
from connectors.events import log as events
from connectors.models import Connector, ConnectorStatus, Event
from connectors.monitoring.incidents import reconcile_incidents
from connectors.monitoring.reporting import HEALTH, one_line
from connectors.platforms.base import ConnectorError, HealthResult
from connectors.registry.common import audit_check, clear_settled_error
from connectors.registry.kinds import UnknownKind, connector_for

logger = logging.getLogger(__name__)

CHECKED_STATUSES = (ConnectorStatus.CONNECTED, ConnectorStatus.ERROR)


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
    detail = one_line(result.detail)
    outcome = {"checked"} if result.ok else {"checked", "failed"}
    with transaction.atomic():
        connector = Connector.objects.select_for_update().filter(pk=connector_id).first()
        if connector is None or connector.status not in CHECKED_STATUSES:
            return {"skipped"}  # stopped or deleted while we were checking: nothing to judge
        now = timezone.now()
        if _recently_checked(connector_id, now):
            return {"skipped"}
        cleared = False
        if result.ok:
            connector.health_failures = 0
            if not poller:
                connector.last_heartbeat = now
            cleared = clear_settled_error(connector)
        else:
            connector.health_failures += 1
        stale_after = timedelta(seconds=settings.HEALTH_STALE_SECONDS)
        stale = connector.last_heartbeat is None or now - connector.last_heartbeat > stale_after
        connector.save(update_fields=["health_failures", "last_heartbeat", "last_error", "updated_at"])
        audit_check(
            "connector.health", HEALTH, connector_id, result.ok,
            latency_ms=latency_ms, failures=connector.health_failures, stale=stale,
            **({"cleared_error": True} if cleared else {}),
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
                "cleared_error": cleared,  # the dashboard empties "Last error" on this
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
