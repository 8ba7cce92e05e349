"""The router tests' fixed clock, connector states, snapshot builders and the autouse fixture that empties the router cache."""
from datetime import datetime, time, timedelta, timezone

import pytest

from connectors.platforms.addresses import mask_address
from routing.router import cache as router_cache
from routing.router.snapshot import ConnectorState, Entry, Snapshot

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)  # a Wednesday, noon UTC
USER = 7

CONNECTORS = {
    "tg": ConnectorState("tg", "telegram", "CONNECTED", NOW - timedelta(seconds=10)),
    "sms": ConnectorState("sms", "sms", "CONNECTED"),
    "wa": ConnectorState("wa", "whatsapp", "CONNECTED"),
    "wa_tpl": ConnectorState("wa_tpl", "whatsapp", "CONNECTED", has_template=True),
    "mail": ConnectorState("mail", "email", "CONNECTED"),
    "voice": ConnectorState("voice", "voice", "CONNECTED"),
    "down": ConnectorState("down", "sms", "STOPPED"),
    "errored": ConnectorState("errored", "telegram", "ERROR"),
    "poller_stale": ConnectorState("poller_stale", "telegram", "CONNECTED", NOW - timedelta(seconds=301), "runner-1"),
    "poller_fresh": ConnectorState("poller_fresh", "telegram", "CONNECTED", NOW - timedelta(seconds=299), "runner-1"),
    "unleased_old": ConnectorState("unleased_old", "telegram", "CONNECTED", NOW - timedelta(days=3)),
    "quota": ConnectorState("quota", "sms", "CONNECTED", quota_per_minute=1),
    "odd": ConnectorState("odd", "pigeon", "CONNECTED"),
}


def pref(identity_id, connector_id, priority, **kwargs):
    kwargs.setdefault("address", f"+4477009{identity_id:05d}")
    kwargs.setdefault("address_hint", mask_address(kwargs["address"]))
    return Entry(identity_id=identity_id, connector_id=connector_id, preference_id=100 + identity_id,
                 priority=priority, user_id=USER, **kwargs)


def bare(identity_id, connector_id, **kwargs):
    """An identity without a preference."""
    kwargs.setdefault("address", f"+4477009{identity_id:05d}")
    kwargs.setdefault("address_hint", mask_address(kwargs["address"]))
    return Entry(identity_id=identity_id, connector_id=connector_id, user_id=USER, **kwargs)


def snap(*entries, **kwargs):
    return Snapshot(user_id=USER, entries=tuple(entries), connectors=CONNECTORS, **kwargs)


def reasons(decision):
    return {c["identity_id"]: c["reason"] for c in decision.trace["candidates"]}


QUIET_NIGHT = {"quiet_start": time(22), "quiet_end": time(7)}  # crosses midnight
RECENT = NOW - timedelta(hours=2)
OLD = NOW - timedelta(hours=25)


@pytest.fixture(autouse=True)
def _fresh_router_cache():
    router_cache.invalidate()
    yield
    router_cache.invalidate()
