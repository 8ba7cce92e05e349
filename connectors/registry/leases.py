"""Heartbeats and leases: which runner process keeps a connector alive, and until when."""
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import Conflict, audit_result
from connectors.models import PERM_MANAGE, Connector
from connectors.registry.common import load_connector


def heartbeat(principal, connector_id, *, lease_owner=None, lease_seconds=60):
    """Record that the connector is alive; with `lease_owner`, also take or renew its lease.

    Returns the connector, or raises Conflict if another live process holds the lease.
    """
    with audit.audited("connector.heartbeat", principal, "connector", connector_id, classify=audit_result):
        with transaction.atomic():
            connector = load_connector(principal, connector_id, PERM_MANAGE, for_update=True)
            now = timezone.now()
            fields = ["last_heartbeat", "updated_at"]
            if lease_owner is not None:
                held_by_other = (
                    connector.lease_owner
                    and connector.lease_owner != lease_owner
                    and connector.lease_expires_at
                    and connector.lease_expires_at > now
                )
                if held_by_other:
                    raise Conflict(
                        f"Connector {connector_id!r} is leased by another process until "
                        f"{connector.lease_expires_at.isoformat()}.",
                        code="lease_held",
                    )
                connector.lease_owner = lease_owner
                connector.lease_expires_at = now + timedelta(seconds=lease_seconds)
                fields += ["lease_owner", "lease_expires_at"]
            connector.last_heartbeat = now
            connector.save(update_fields=fields)
            audit.record_action(
                "connector.heartbeat",
                principal,
                "connector",
                connector_id,
                lease_owner=lease_owner or "",
            )
    return connector


def release_lease(principal, connector_id, lease_owner):
    """Give up a lease this owner holds (a clean shutdown), so another process need not wait for
    it to expire. A lease held by someone else is left alone. Returns True if released."""
    with transaction.atomic():
        connector = Connector.objects.select_for_update().filter(pk=connector_id).first()
        if connector is None or not lease_owner or connector.lease_owner != lease_owner:
            return False
        connector.lease_owner, connector.lease_expires_at = "", None
        connector.save(update_fields=["lease_owner", "lease_expires_at", "updated_at"])
        audit.record_action(
            "connector.lease_released",
            principal,
            "connector",
            connector_id,
            lease_owner=lease_owner,
        )
    return True
