"""The notify_user tests' fixtures (router cache, ada, operator) and helpers: identities with preferences, event/audit lookups, the no-leak check."""

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from connectors.models import Event
from routing.models import ChannelIdentity, ConnectorPreference
from routing.router import cache as router_cache

SECRET = "Ada, the reactor is at 97%"
ALL_TYPES = ["standard", "urgent", "digest"]


@pytest.fixture(autouse=True)
def _fresh_router_cache():
    router_cache.invalidate()
    yield
    router_cache.invalidate()


@pytest.fixture
def ada(make_user):
    return make_user("ada")


@pytest.fixture
def operator(make_user):
    return make_user("operator", superuser=True)


def reach(user, connector_id, address, priority, types=ALL_TYPES, **pref):
    """A verified identity and its preference, straight in the database (test set-up)."""
    identity = ChannelIdentity.objects.create(
        user=user, connector_id=connector_id, address=address, verified_at=timezone.now()
    )
    ConnectorPreference.objects.create(
        user=user, identity=identity, priority=priority, notification_types=types, **pref
    )
    return identity


def events(type_):
    return list(Event.objects.filter(type=type_).order_by("seq"))


def actions(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def assert_no_content_leaked():
    for event in Event.objects.all():
        assert SECRET not in str(event.data)
    for row in AuditEvent.objects.all():
        assert SECRET not in str(row.details)
