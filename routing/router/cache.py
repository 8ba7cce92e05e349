"""The router's per-process cache of its inputs, and the signal receivers that make it forget what changed.

Per user, the loaded identities and preferences (never the decision: `now` matters), for
ROUTING_CACHE_SECONDS (default 5) so changes made in other processes apply soon; the connector
states for all connectors, separately, so that a heartbeat (which saves the Connector row)
reloads one small query instead of evicting every user. post_save/post_delete of
ChannelIdentity and ConnectorPreference evict that user (at once and again on commit); of
Connector, the connector states (a deletion evicts everyone); a new InboundMessage on a WhatsApp
address evicts the person it belongs to. Bulk updates (`QuerySet.update`, `bulk_update`) send no
signals: callers must call `invalidate(user_id)` after them. At most ROUTING_CACHE_MAX_USERS
people are kept (the oldest entries go first). The receivers are connected in routing.receivers.
"""
import threading
import time

from django.conf import settings
from django.db import transaction

from routing.router.loading import load_connector_states, load_entries


def _setting(name, default):
    return getattr(settings, name, default)


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


# --- signal receivers (connected in routing.receivers) -----------------------------------------


def _evict_user(user_id):
    invalidate(user_id)
    # Again after commit: a decision made meanwhile on another thread may have cached the old rows.
    transaction.on_commit(lambda: invalidate(user_id))


def on_identity_or_preference_changed(sender, instance, **kwargs):
    if instance.user_id is not None:
        _evict_user(instance.user_id)


def on_connector_saved(sender, instance, **kwargs):
    invalidate_connectors()
    transaction.on_commit(invalidate_connectors)


def on_connector_deleted(sender, instance, **kwargs):
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

