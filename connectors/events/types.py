"""The event types the service emits, and the type filters clients give (exact types or `prefix.*`)."""
from django.db.models import Q

EVENT_TYPES = frozenset(
    {
        "connector.registered",
        "connector.updated",
        "connector.deleted",
        "connector.started",
        "connector.stopped",
        "connector.error",
        "connector.message.received",
        "connector.message.queued",
        "connector.message.sent",
        "connector.message.failed",
        "connector.message.delivered",
        "connector.health.check",
        # routing (issue 6): what the router chose, each move down the chain, preference changes
        "routing.decision",
        "notification.fallback",
        "notification.delivered",
        "notification.exhausted",
        "preference.updated",
    }
)


class EventFilterError(ValueError):
    """A filter a client asked for that does not exist or is malformed."""


def parse_types(raw) -> list[str]:
    """Comma-separated exact types or prefixes ending in `.*`; EventFilterError for unknown ones."""
    if raw is None or raw == "":
        return []
    patterns = [p.strip() for p in str(raw).split(",") if p.strip()]
    unknown = [p for p in patterns if not type_pattern_known(p)]
    if unknown:
        raise EventFilterError(f"Unknown event types {unknown}; known: {', '.join(sorted(EVENT_TYPES))} (or a prefix like connector.message.*).")
    return patterns


def type_pattern_known(pattern: str) -> bool:
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return any(t.startswith(prefix) for t in EVENT_TYPES)
    return pattern in EVENT_TYPES


def type_matches(event_type: str, patterns) -> bool:
    return not patterns or any(
        event_type.startswith(p[:-1]) if p.endswith(".*") else event_type == p for p in patterns
    )


def types_q(patterns) -> Q:
    q = Q()
    for p in patterns:
        q |= Q(type__startswith=p[:-1]) if p.endswith(".*") else Q(type=p)
    return q
