"""The steps every connector service shares: load a connector behind its permission check, insist it runs, audit and emit."""
import uuid

from audit import services as audit
from brain_connectors.shared.errors import Conflict, Hidden, NotFound, PermissionDenied
from connectors.events import log as events
from connectors.models import PERM_VIEW, Connector, ConnectorStatus
from connectors.permissions import permission_test


def emit(event_type, connector_id, **data):
    """Append an event in the current transaction (see connectors.events.log): ids, statuses and
    lengths only, never content."""
    events.publish(event_type, connector_id=connector_id, data=data)


def audit_and_emit(action, principal, connector_id, **details):
    """Audit `action` on the connector and emit it as the event `connector.<action>`, with the same details."""
    audit.record_action(action, principal, "connector", connector_id, **details)
    emit(f"connector.{action}", connector_id, **details)


def audit_check(action, principal, connector_id, ok, **details):
    """Audit a health check of the connector: a success or a failure as `ok` says, `ok` among the details."""
    audit.record_action(
        action, principal, "connector", connector_id, result=audit.SUCCESS if ok else audit.FAILURE, ok=ok, **details
    )


def clear_settled_error(connector):
    """A passing health check of a CONNECTED connector settles its last error (the row is saved by the caller).

    Only CONNECTED: an ERROR connector keeps the reason it is down until it is started again. Returns
    whether there was one to clear (the caller's audit row says so).
    """
    if connector.status != ConnectorStatus.CONNECTED or not connector.last_error:
        return False
    connector.last_error = ""
    return True


def load_connector(principal, connector_id, perm, *, for_update=False):
    """The connector, if `principal` may see it and holds `perm` on it: NotFound, Hidden (it may not see
    it: answered as if it did not exist) or PermissionDenied otherwise."""
    qs = Connector.objects.select_for_update() if for_update else Connector.objects.all()
    try:
        connector = qs.get(pk=connector_id)
    except (Connector.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Connector {connector_id!r} does not exist.")
    require_connector_perm(principal, connector, perm, connector_id)
    return connector


def require_connector_perm(principal, connector, perm, connector_id, *, unseen=Hidden):
    """`unseen` (named `connector_id`) if `principal` may not see `connector`, PermissionDenied if it lacks `perm`."""
    allowed = permission_test(principal, connector)
    if not allowed(PERM_VIEW):
        raise unseen(f"Connector {connector_id!r} does not exist.")
    if not allowed(perm):
        raise PermissionDenied(f"You need the {perm} permission on connector {connector_id!r}.")


def require_running(connector, *, error_waits=False):
    """Conflict unless the connector runs. `error_waits`: ERROR counts as running too.

    ERROR is only ever reached by accident (a failed health check, a stale heartbeat) and the health
    round restarts it; work that already exists (a message the platform delivered, BRAIN's reply to it)
    is kept and waits, rather than being refused for a state nobody chose.
    """
    if error_waits and connector.status == ConnectorStatus.ERROR:
        return
    if connector.status != ConnectorStatus.CONNECTED:
        raise Conflict(
            f"Connector {connector.id!r} is {connector.status}, not CONNECTED; start it first.",
            code="connector_not_running",
        )


def uuid_or_none(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
