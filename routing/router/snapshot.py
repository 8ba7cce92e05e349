"""The router's inputs and outputs: connector states, a person's entries, the snapshot, routes and the decision."""
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime
from typing import Mapping

NOTIFICATION_TYPES = ("standard", "urgent", "digest")
DEFAULT_KIND_ORDER = ["telegram", "slack", "whatsapp", "sms", "email", "voice", "webhook", "cli", "locmem"]


@dataclass(frozen=True)
class ConnectorState:
    id: str
    kind: str
    status: str
    last_heartbeat: datetime | None = None
    lease_owner: str = ""
    quota_per_minute: int | None = None
    recipient_quota_per_minute: int | None = None
    has_template: bool = False


@dataclass(frozen=True)
class Entry:
    """One identity of the person, with its preference (None fields without one)."""

    identity_id: int
    connector_id: str
    address: str
    address_hint: str
    preference_id: int | None = None
    priority: int | None = None
    enabled: bool = True
    notification_types: tuple = ()
    quiet_start: dtime | None = None
    quiet_end: dtime | None = None
    timezone: str = "UTC"
    last_inbound: datetime | None = None  # the person's newest message from this address here
    user_id: int | None = None  # the identity's owner; a mismatch is "unknown identity"


@dataclass(frozen=True)
class Snapshot:
    user_id: int
    entries: tuple = ()
    connectors: Mapping[str, ConnectorState] = field(default_factory=dict)
    default_order: tuple = tuple(DEFAULT_KIND_ORDER)
    stale_seconds: float = 300
    # Identity ids whose connector or recipient quota bucket is empty now.
    exhausted: frozenset = frozenset()

    @property
    def has_preferences(self):
        return any(e.preference_id is not None for e in self.entries)


@dataclass(frozen=True)
class Route:
    identity_id: int
    connector_id: str
    kind: str
    address: str
    preference_id: int | None
    priority: int


@dataclass
class Decision:
    chain: list
    trace: dict

    @property
    def source(self):
        return self.trace["source"]
