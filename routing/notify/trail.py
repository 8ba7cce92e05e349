"""What notifications leave behind: the audit target, the system principal "router" that moves them, and their events.

Events and audit rows carry ids, counts and reasons, never the content or an address.
"""
from connectors.events import log as events
from connectors.permissions import Principal

ROUTER = Principal.system_actor("router")
TARGET = "notification"


def emit(event_type, connector_id="", **data):
    events.publish(event_type, connector_id=connector_id or "", data=data)
