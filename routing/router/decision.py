"""decide(): the chain for one person now, from the cached snapshot and the quota levels read fresh.

Quota exhausted: the connector's bucket (`quota_per_minute`) or this recipient's bucket
(`recipient_quota_per_minute`) holds less than one token now (`connectors.quotas.level`,
one Redis read or one database row per configured bucket; nothing is read for connectors without
quotas). Over-quota sends would be delayed, not lost, so routing prefers a channel that can send now.
"""
import time

from django.conf import settings
from django.utils import timezone

from connectors import quotas
from routing.router.cache import connector_states, user_entries
from routing.router.chain import choose
from routing.router.snapshot import DEFAULT_KIND_ORDER, NOTIFICATION_TYPES, Decision, Snapshot


def _setting(name, default):
    return getattr(settings, name, default)


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
