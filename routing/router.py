"""The router: "notify Ada, urgent" → an ordered chain of channels, and why.

Two halves:

- `load_snapshot(user_id)` reads everything one decision needs for one person in one query
  (their identities, each with its preference and, for WhatsApp, the time of the person's newest
  message from that address on that connector), and `connector_states()` reads the registry
  (status, kind, last heartbeat, lease, quotas) in one query for all connectors. Both are cached
  per process (see "The cache" below).
- `choose(snapshot, notification_type, now)` is a pure function over that data: no database, no
  clock, no settings. It returns a `Decision` (the chain and the trace).

`decide(user_id, notification_type, now=None)` glues them and adds the quota levels, which are
read fresh (never cached) and only for connectors that have a quota.

Candidates and reasons. With preferences, the candidates are the person's identities; the ones
with a preference are ranked by its priority, the others are listed as "no preference" (excluded)
so the trace shows every address we know. Without any preference (source "default_order"), every
verified identity is a candidate, ranked by ROUTING_DEFAULT_KIND_ORDER (kinds not in the list are
excluded: "kind not in default order"). The first reason that applies is reported, in this order:

  disabled · type not served · quiet hours (not for urgent) · connector not connected ·
  stale heartbeat · outside the WhatsApp 24 h window · quota exhausted

Included candidates say "ok", "urgent overrides quiet hours", or "template (outside the WhatsApp
24 h window)". Semantics:

- A preference with an empty `notification_types` serves every type.
- Default order: a phone call (`voice`) is used for urgent notifications only ("type not served"
  for standard and digest); there are no quiet hours without a preference.
- Quiet hours `quiet_start`-`quiet_end` are read in the preference's time zone; a window whose
  end is earlier than its start crosses midnight (22:00-07:00). Start == end, or only one of
  them set, means no quiet hours. An unknown time zone counts as UTC (services refuse them).
  Standard and digest wait out quiet hours; urgent goes through ("urgent overrides quiet hours").
- Stale heartbeat: judged only for connectors held by a `runconnectors` process (a lease owner
  is set), which renews the heartbeat every few seconds, so an old one means that process died.
  Other connectors' heartbeats come from health-check rounds, which already move a connector
  that stops answering to ERROR; they, and connectors whose last_heartbeat is None, are judged
  by status only. Threshold: ROUTING_STALE_HEARTBEAT_SECONDS (default 300).
- WhatsApp: free text needs the person's message within 24 h (less the connector's 5-minute
  margin). Outside it, a connector with a `template_content_sid` is still included (the template
  carries the text); without one it is excluded for every type, urgent included, because the
  platform would refuse the send anyway.
- Quota exhausted: the connector's bucket (`quota_per_minute`) or this recipient's bucket
  (`recipient_quota_per_minute`) holds less than one token now (`brain_connectors.shared.quotas.level`, one
  Redis read or one database row per configured bucket; nothing is read for connectors without
  quotas). Over-quota sends would be delayed, not lost, so routing prefers a channel that can
  send now.

The cache: per process. Per user, the loaded identities and preferences (never the decision:
`now` matters), for ROUTING_CACHE_SECONDS (default 5) so changes made in other processes apply
soon; the connector states for all connectors, separately, so that a heartbeat (which saves the
Connector row) reloads one small query instead of evicting every user. post_save/post_delete of
ChannelIdentity and ConnectorPreference evict that user (at once and again on commit); of
Connector, the connector states (a deletion evicts everyone); a new InboundMessage on a WhatsApp
address evicts the person it belongs to. Bulk updates (`QuerySet.update`, `bulk_update`) send no
signals: callers must call `invalidate(user_id)` after them. At most ROUTING_CACHE_MAX_USERS
people are kept (the oldest entries go first).
"""
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime
from datetime import timezone as dt_timezone
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db.models import FilteredRelation, OuterRef, Q, Subquery, Value
from django.db.models.functions import Concat
from django.utils import timezone

from brain_connectors.shared.errors import ValidationFailed
from connectors.platforms.addresses import mask_address

NOTIFICATION_TYPES = ("standard", "urgent", "digest")
DEFAULT_KIND_ORDER = ["telegram", "whatsapp", "sms", "email", "voice", "webhook", "cli", "locmem"]
WHATSAPP_WINDOW_SECONDS = 24 * 3600 - 5 * 60  # as connectors.platforms.whatsapp: 24 h less a margin
URGENT_ONLY_BY_DEFAULT = frozenset({"voice"})

OK = "ok"
URGENT_OVERRIDE = "urgent overrides quiet hours"
TEMPLATE_OUTSIDE_WINDOW = "template (outside the WhatsApp 24 h window)"
DISABLED = "disabled"
TYPE_NOT_SERVED = "type not served"
QUIET_HOURS = "quiet hours"
NOT_CONNECTED = "connector not connected"
STALE = "stale heartbeat"
OUTSIDE_WINDOW = "outside the WhatsApp 24 h window"
QUOTA = "quota exhausted"
NO_PREFERENCE = "no preference"
NOT_IN_DEFAULT_ORDER = "kind not in default order"
UNKNOWN_IDENTITY = "unknown identity"

INCLUDED_REASONS = frozenset({OK, URGENT_OVERRIDE, TEMPLATE_OUTSIDE_WINDOW})


# --- data -------------------------------------------------------------------------------------


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


# --- the pure half ------------------------------------------------------------------------------


def _zone(name):
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return dt_timezone.utc


def in_quiet_hours(start, end, tz_name, now):
    """True when `now` falls in [start, end) in the zone; windows with end < start cross midnight."""
    if start is None or end is None or start == end:
        return False
    local = now.astimezone(_zone(tz_name)).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def _judge(entry, connector, snapshot, notification_type, now, from_preferences):
    """The reason for one candidate: one of INCLUDED_REASONS, or why it is excluded."""
    if entry.user_id is not None and entry.user_id != snapshot.user_id:
        return UNKNOWN_IDENTITY
    kind = connector.kind if connector else ""
    if from_preferences:
        if entry.preference_id is None:
            return NO_PREFERENCE
        if not entry.enabled:
            return DISABLED
        if entry.notification_types and notification_type not in entry.notification_types:
            return TYPE_NOT_SERVED
    else:
        if kind not in snapshot.default_order:
            return NOT_IN_DEFAULT_ORDER
        if kind in URGENT_ONLY_BY_DEFAULT and notification_type != "urgent":
            return TYPE_NOT_SERVED
    quiet = from_preferences and in_quiet_hours(entry.quiet_start, entry.quiet_end, entry.timezone, now)
    if quiet and notification_type != "urgent":
        return QUIET_HOURS
    if connector is None or connector.status != "CONNECTED":
        return NOT_CONNECTED
    if (
        connector.lease_owner
        and connector.last_heartbeat is not None
        and (now - connector.last_heartbeat).total_seconds() > snapshot.stale_seconds
    ):
        return STALE
    template = False
    if kind == "whatsapp":
        last = entry.last_inbound
        if last is None or (now - last).total_seconds() >= WHATSAPP_WINDOW_SECONDS:
            if not connector.has_template:
                return OUTSIDE_WINDOW
            template = True
    if entry.identity_id in snapshot.exhausted:
        return QUOTA
    if quiet:
        return URGENT_OVERRIDE
    return TEMPLATE_OUTSIDE_WINDOW if template else OK


def _sort_key(candidate):
    priority = candidate["priority"]
    return (priority is None, priority or 0, candidate["identity_id"])


def choose(snapshot: Snapshot, notification_type: str, now: datetime) -> Decision:
    """The decision for one person: pure, deterministic, no database access."""
    if notification_type not in NOTIFICATION_TYPES:
        raise ValidationFailed(
            f"notification_type must be one of {', '.join(NOTIFICATION_TYPES)}.",
            details={"notification_type": "invalid"},
        )
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt_timezone.utc)
    from_preferences = snapshot.has_preferences
    order = {kind: i + 1 for i, kind in enumerate(snapshot.default_order)}
    candidates = []
    routes = {}
    for entry in snapshot.entries:
        connector = snapshot.connectors.get(entry.connector_id)
        kind = connector.kind if connector else ""
        if from_preferences:
            priority = entry.priority
        else:
            priority = order.get(kind)
        reason = _judge(entry, connector, snapshot, notification_type, now, from_preferences)
        included = reason in INCLUDED_REASONS
        candidates.append(
            {
                "identity_id": entry.identity_id,
                "connector_id": entry.connector_id,
                "kind": kind,
                "address_hint": entry.address_hint,
                "priority": priority,
                "included": included,
                "reason": reason,
            }
        )
        if included:
            routes[entry.identity_id] = Route(
                identity_id=entry.identity_id,
                connector_id=entry.connector_id,
                kind=kind,
                address=entry.address,
                preference_id=entry.preference_id,
                priority=priority,
            )
    candidates.sort(key=_sort_key)
    chain = [routes[c["identity_id"]] for c in candidates if c["included"]]
    trace = {
        "user_id": snapshot.user_id,
        "notification_type": notification_type,
        "at": now.isoformat(),
        "source": "preferences" if from_preferences else "default_order",
        "candidates": candidates,
        "chain": [route.identity_id for route in chain],
        "decision_ms": 0.0,
    }
    return Decision(chain=chain, trace=trace)


# --- loading ------------------------------------------------------------------------------------


def _setting(name, default):
    return getattr(settings, name, default)


_compiled = {}  # SQL compiled once per process (PostgreSQL)


def load_connector_states():
    """Every connector's routing-relevant state, in one query."""
    from django.db import connection

    from connectors.models import Connector

    states = {}
    qs = Connector.objects.order_by().values_list(
        "id", "kind", "status", "last_heartbeat", "lease_owner", "quota_per_minute",
        "recipient_quota_per_minute", "config",
    )
    if connection.vendor == "postgresql":  # compiled once, as in _entry_rows
        if "states" not in _compiled:
            _compiled["states"] = qs.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(*_compiled["states"])
            rows = cursor.fetchall()
    else:
        rows = list(qs)
    for cid, kind, status, beat, lease, quota, rquota, config in rows:
        if isinstance(config, str):
            config = json.loads(config)
        has_template = bool(isinstance(config, dict) and config.get("template_content_sid"))
        states[cid] = ConnectorState(cid, kind, status, beat, lease or "", quota, rquota, has_template)
    return states


_SENTINEL_USER = -7_919_000_001  # stands for the user id in the SQL compiled once per process


def _entries_queryset(user_id):
    from connectors.models import InboundMessage
    from routing.models import ChannelIdentity

    newest_inbound = (
        InboundMessage.objects.filter(connector_id=OuterRef("connector_id"))
        .filter(Q(sender=OuterRef("address")) | Q(sender=Concat(Value("whatsapp:"), OuterRef("address"))))
        .order_by("-received_at")
        .values("received_at")[:1]
    )
    return (
        ChannelIdentity.objects.filter(user_id=user_id)
        .annotate(pref=FilteredRelation("preferences", condition=Q(preferences__user_id=user_id)))
        .annotate(last_inbound=Subquery(newest_inbound))
        .order_by()
        .values_list(
            "id", "connector_id", "address", "pref__id", "pref__priority", "pref__enabled",
            "pref__notification_types", "pref__quiet_start", "pref__quiet_end", "pref__timezone",
            "last_inbound",
        )
    )


def _entry_rows(user_id):
    """The rows of `_entries_queryset`. On PostgreSQL the SQL is compiled once per process (the
    ORM's compilation costs more than the query itself) and run with this user's id."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return list(_entries_queryset(user_id))
    if "sql" not in _compiled:
        sql, params = _entries_queryset(_SENTINEL_USER).query.sql_with_params()
        _compiled["sql"] = (sql, tuple(params))
    sql, params = _compiled["sql"]
    with connection.cursor() as cursor:
        cursor.execute(sql, [user_id if p == _SENTINEL_USER else p for p in params])
        rows = cursor.fetchall()
    # psycopg hands jsonb to Django as text: decode it as the ORM would.
    return [(*row[:6], json.loads(row[6]) if isinstance(row[6], str) else row[6], *row[7:]) for row in rows]


def load_entries(user_id):
    """The person's identities, each with its preference and newest inbound time, in one query."""
    entries = []
    for iid, cid, address, pid, priority, enabled, types, qs, qe, tz, last in _entry_rows(user_id):
        entries.append(
            Entry(
                identity_id=iid,
                connector_id=cid,
                address=address,
                address_hint=mask_address(address),
                preference_id=pid,
                priority=priority,
                enabled=True if enabled is None else enabled,
                notification_types=tuple(types or ()),
                quiet_start=qs,
                quiet_end=qe,
                timezone=tz or "UTC",
                last_inbound=last,
                user_id=user_id,
            )
        )
    return tuple(entries)


# --- the cache ----------------------------------------------------------------------------------


class _Cache:
    def __init__(self):
        self.lock = threading.Lock()
        self.users = {}  # user_id -> (loaded_at, entries)
        self.connectors = None  # (loaded_at, states)
        self.addresses = {}  # (connector_id, sender) -> user_id, for WhatsApp identities

    def clear(self, user_id=None):
        with self.lock:
            if user_id is None:
                self.users.clear()
                self.connectors = None
                self.addresses.clear()
            else:
                self.users.pop(user_id, None)


_cache = _Cache()


def invalidate(user_id=None):
    """Forget one person's loaded data (everything, connector states included, when None)."""
    _cache.clear(user_id)


def invalidate_connectors():
    with _cache.lock:
        _cache.connectors = None


def connector_states(ttl=None):
    ttl = _setting("ROUTING_CACHE_SECONDS", 5.0) if ttl is None else ttl
    held = _cache.connectors
    clock = time.monotonic()
    if held is not None and clock - held[0] < ttl:
        return held[1]
    states = load_connector_states()
    _cache.connectors = (clock, states)
    return states


def user_entries(user_id, ttl=None):
    ttl = _setting("ROUTING_CACHE_SECONDS", 5.0) if ttl is None else ttl
    held = _cache.users.get(user_id)
    clock = time.monotonic()
    if held is not None and clock - held[0] < ttl:
        return held[1]
    entries = load_entries(user_id)
    limit = _setting("ROUTING_CACHE_MAX_USERS", 100_000)
    with _cache.lock:
        while len(_cache.users) >= limit and _cache.users:
            _cache.users.pop(next(iter(_cache.users)))
        _cache.users.pop(user_id, None)  # re-insert at the end: the oldest entries go first
        _cache.users[user_id] = (clock, entries)
        for entry in entries:
            if entry.last_inbound is not None or entry.address.startswith(("+", "whatsapp:")):
                _cache.addresses[(entry.connector_id, entry.address)] = user_id
                if not entry.address.startswith("whatsapp:"):
                    _cache.addresses[(entry.connector_id, "whatsapp:" + entry.address)] = user_id
    return entries


def _exhausted(entries, connectors, now):
    """Identity ids whose connector or recipient bucket is empty (read fresh, never cached)."""
    buckets = []
    for entry in entries:
        state = connectors.get(entry.connector_id)
        if state is None:
            continue
        if state.quota_per_minute:
            buckets.append((entry.identity_id, f"connector:{state.id}", state.quota_per_minute))
        if state.recipient_quota_per_minute:
            buckets.append(
                (entry.identity_id, f"recipient:{state.id}:{entry.address.strip()}", state.recipient_quota_per_minute)
            )
    if not buckets:
        return frozenset()
    from brain_connectors.shared import quotas

    stamp = now.timestamp()
    levels = {}
    empty = set()
    for identity_id, key, rate in buckets:
        if key not in levels:
            levels[key] = quotas.level(key, rate, now=stamp)
        if levels[key] < 1:
            empty.add(identity_id)
    return frozenset(empty)


def snapshot_for(user_id, now=None):
    """Everything `choose` needs for this person (from the cache when it is warm)."""
    now = now or timezone.now()
    connectors = connector_states()
    entries = user_entries(user_id)
    return Snapshot(
        user_id=user_id,
        entries=entries,
        connectors=connectors,
        default_order=tuple(_setting("ROUTING_DEFAULT_KIND_ORDER", DEFAULT_KIND_ORDER)),
        stale_seconds=float(_setting("ROUTING_STALE_HEARTBEAT_SECONDS", 300)),
        exhausted=_exhausted(entries, connectors, now),
    )


def decide(user_id, notification_type, now=None) -> Decision:
    """The ordered chain of channels for notifying this person, and the trace explaining it."""
    started = time.perf_counter()
    user_id = getattr(user_id, "pk", user_id)
    if notification_type not in NOTIFICATION_TYPES:
        return choose(Snapshot(user_id=user_id), notification_type, now or timezone.now())  # raises
    now = now or timezone.now()
    decision = choose(snapshot_for(user_id, now), notification_type, now)
    decision.trace["decision_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return decision


# --- signal receivers (connected in routing.apps) ---------------------------------------------


def _evict_user(user_id):
    from django.db import transaction

    invalidate(user_id)
    # Again after commit: a decision made meanwhile on another thread may have cached the old rows.
    transaction.on_commit(lambda: invalidate(user_id))


def on_identity_or_preference_changed(sender, instance, **kwargs):
    if instance.user_id is not None:
        _evict_user(instance.user_id)


def on_connector_saved(sender, instance, **kwargs):
    from django.db import transaction

    invalidate_connectors()
    transaction.on_commit(invalidate_connectors)


def on_connector_deleted(sender, instance, **kwargs):
    from django.db import transaction

    invalidate()
    transaction.on_commit(invalidate)


def on_user_saved(sender, instance, created=False, **kwargs):
    if created:
        invalidate(instance.pk)


def on_inbound_saved(sender, instance, created=False, **kwargs):
    if not created:
        return
    user_id = _cache.addresses.get((instance.connector_id, instance.sender))
    if user_id is not None:
        _evict_user(user_id)


__all__ = [
    "ConnectorState", "Decision", "Entry", "Route", "Snapshot", "choose", "decide", "invalidate",
    "load_entries", "load_connector_states",
]
