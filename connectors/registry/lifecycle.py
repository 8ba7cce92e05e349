"""A connector's life: start, stop, disable, test it, and move it to ERROR when its platform refuses it."""
import logging
import time

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import Conflict, audit_result
from connectors.models import ALLOWED_TRANSITIONS, PERM_MANAGE, Connector, ConnectorStatus
from connectors.platforms.base import ConnectorError, HealthResult
from connectors.registry.common import audit_check, clear_settled_error, emit, load_connector
from connectors.registry.kinds import connector_for

logger = logging.getLogger(__name__)


def _transition(connector, new_status):
    if new_status not in ALLOWED_TRANSITIONS[connector.status]:
        raise Conflict(
            f"Connector {connector.id!r} cannot go from {connector.status} to {new_status}.",
            code="invalid_transition",
            details={"status": connector.status, "requested": new_status},
        )
    connector.status = new_status


def start_connector(principal, connector_id):
    """STOPPED/ERROR → STARTING (committed) → platform start → CONNECTED or ERROR (committed)."""
    with audit.audited("connector.start", principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = load_connector(principal, connector_id, PERM_MANAGE, for_update=True)
            _transition(connector, ConnectorStatus.STARTING)
            connector.save(update_fields=["status", "updated_at"])
        try:
            connector_for(connector).start()
        except ConnectorError as exc:
            return _finish_start(principal, connector_id, error=exc.message, code=exc.code)
        except Exception as exc:  # a bug or an unexpected SDK error must not leave STARTING behind
            logger.exception("Starting connector %s failed", connector_id)
            return _finish_start(principal, connector_id, error=f"{type(exc).__name__}: {exc}")
        return _finish_start(principal, connector_id, error=None)


def _finish_start(principal, connector_id, *, error, code="platform_error"):
    with transaction.atomic():
        connector = Connector.objects.select_for_update().get(pk=connector_id)
        if connector.status != ConnectorStatus.STARTING:  # stopped meanwhile: keep what the later call decided
            audit.record_action(
                "connector.start",
                principal,
                "connector",
                connector_id,
                outcome="superseded",
                status=connector.status,
            )
            return connector
        now = timezone.now()
        if error is None:
            connector.status = ConnectorStatus.CONNECTED
            connector.last_error = ""
            connector.last_heartbeat = now
        else:
            connector.status = ConnectorStatus.ERROR
            connector.last_error = error[:2000]
        connector.save(update_fields=["status", "last_error", "last_heartbeat", "updated_at"])
        if error is None:
            audit.record_action("connector.start", principal, "connector", connector_id, status=connector.status)
            emit("connector.started", connector_id, status=connector.status)
        else:
            audit.record_action(
                "connector.start",
                principal,
                "connector",
                connector_id,
                result=audit.FAILURE,
                status=connector.status,
                error=code,
            )
            emit("connector.error", connector_id, status=connector.status, error=code, during="start")
    return connector


def stop_connector(principal, connector_id):
    with audit.audited("connector.stop", principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = load_connector(principal, connector_id, PERM_MANAGE, for_update=True)
            _transition(connector, ConnectorStatus.STOPPED)
            connector.lease_owner, connector.lease_expires_at = "", None
            connector.save(update_fields=["status", "lease_owner", "lease_expires_at", "updated_at"])
            audit.record_action("connector.stop", principal, "connector", connector_id)
            emit("connector.stopped", connector_id, status=connector.status)
        try:
            connector_for(connector).stop()
        except Exception as exc:  # the connector is stopped on our side either way; say what failed
            logger.warning("Platform-side stop of %s failed: %s", connector_id, exc)
    return connector


def set_disabled(principal, connector_id, disabled: bool, reason=""):
    action = "connector.disable" if disabled else "connector.enable"
    with audit.audited(action, principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = load_connector(principal, connector_id, PERM_MANAGE, for_update=True)
            _transition(connector, ConnectorStatus.DISABLED if disabled else ConnectorStatus.STOPPED)
            if reason:
                connector.last_error = reason[:2000]
            connector.save(update_fields=["status", "last_error", "updated_at"])
            audit.record_action(action, principal, "connector", connector_id)
            if disabled:
                emit("connector.stopped", connector_id, status=connector.status, disabled=True)
            else:
                emit("connector.updated", connector_id, fields=["status"], status=connector.status)
    return connector


def test_connector(principal, connector_id):
    """Run the platform's health check now and record the outcome on the connector."""
    with audit.audited("connector.test", principal, "connector", connector_id, classify=audit_result):
        connector = load_connector(principal, connector_id, PERM_MANAGE)
        started = time.monotonic()
        try:
            result = connector_for(connector).health_check()
        except ConnectorError as exc:
            result = HealthResult(ok=False, detail=exc.message)
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        with transaction.atomic():
            connector = Connector.objects.select_for_update().get(pk=connector_id)
            cleared = False
            if result.ok:
                connector.last_heartbeat = timezone.now()
                cleared = clear_settled_error(connector)
            else:
                connector.last_error = result.detail[:2000]
            connector.save(update_fields=["last_heartbeat", "last_error", "updated_at"])
            audit_check("connector.test", principal, connector_id, result.ok, **({"cleared_error": True} if cleared else {}))
            emit("connector.health.check", connector_id, ok=result.ok, latency_ms=latency_ms, trigger="manual",
                 cleared_error=cleared)
    return result


# ConnectorError codes meaning the whole connector is unusable, not one recipient or one message
# (the platform rejected its credentials): the connector goes to ERROR with the reason.
# unsafe_url: a destination in its config leads where the outbound-URL guard refuses to send.
CONNECTOR_FATAL_CODES = frozenset({"invalid_token", "invalid_credentials", "account_inactive", "unsafe_url"})


def record_connector_error(principal, connector_id, error: ConnectorError):
    """A running connector hit an error that stops it (e.g. its token was revoked): CONNECTED →
    ERROR with the reason, lease released, audited. Anything but CONNECTED is left as it is."""
    with transaction.atomic():
        connector = Connector.objects.select_for_update().filter(pk=connector_id).first()
        if connector is None or connector.status != ConnectorStatus.CONNECTED:
            return connector
        connector.status = ConnectorStatus.ERROR
        connector.last_error = error.message[:2000]
        connector.lease_owner, connector.lease_expires_at = "", None
        connector.save(update_fields=["status", "last_error", "lease_owner", "lease_expires_at", "updated_at"])
        audit.record_action(
            "connector.error",
            principal,
            "connector",
            connector_id,
            result=audit.FAILURE,
            status=connector.status,
            error=error.code,
        )
        emit("connector.error", connector_id, status=connector.status, error=error.code)
    return connector
