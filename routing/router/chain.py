"""choose(): the pure decision over a snapshot — the ordered chain of channels and the trace of why.

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
- Quota exhausted: the snapshot's `exhausted` identities (see routing.router.decision).
"""
from datetime import datetime
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from brain_connectors.shared.errors import ValidationFailed
from routing.router.snapshot import NOTIFICATION_TYPES, Decision, Route, Snapshot

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
