"""The router's `decide()` on the database: preferences, cache invalidation and expiry, queries when warm."""
import uuid
from datetime import datetime, time, timedelta, timezone

import pytest
from django.test import override_settings

from brain_connectors.shared.errors import ValidationFailed
from connectors.models import Connector, InboundMessage
from routing.models import ChannelIdentity, ConnectorPreference
from routing.router import cache as router_cache
from routing.router import decision as router_decision
from routing.router import loading
from tests.clock import stepping_time
from tests.routing import router_support
from tests.routing.router_support import NOW

_fresh_router_cache = router_support._fresh_router_cache  # autouse, as in the module these tests came from


# --- decide() on the database -------------------------------------------------------------------


@pytest.fixture
def ada(make_user, make_connector):
    user = make_user("ada")
    make_connector("locmem_a")
    make_connector("locmem_b")
    first = ChannelIdentity.objects.create(user=user, connector_id="locmem_a", address="+442071234567", verified_at=NOW)
    second = ChannelIdentity.objects.create(user=user, connector_id="locmem_b", address="ada-cli", verified_at=NOW)
    return user, first, second


def test_decide_without_preferences_uses_the_default_order(ada, monkeypatch):
    user, first, second = ada
    monkeypatch.setattr(router_decision, "time", stepping_time(0.0125))  # the decision takes 12.5 ms exactly
    decision = router_decision.decide(user.pk, "standard")
    assert decision.trace["source"] == "default_order"
    assert [r.identity_id for r in decision.chain] == [first.pk, second.pk]
    assert decision.trace["decision_ms"] == 12.5
    with override_settings(ROUTING_DEFAULT_KIND_ORDER=["telegram"]):
        router_cache.invalidate()
        decision = router_decision.decide(user, "standard")  # a User works as well as its id
    assert decision.chain == []
    assert {c["reason"] for c in decision.trace["candidates"]} == {"kind not in default order"}


def test_decide_sees_a_changed_preference_at_once(ada):
    user, first, second = ada
    p1 = ConnectorPreference.objects.create(user=user, identity=first, priority=1, notification_types=[])
    ConnectorPreference.objects.create(user=user, identity=second, priority=2, notification_types=[])
    assert [r.identity_id for r in router_decision.decide(user.pk, "standard").chain] == [first.pk, second.pk]
    p1.enabled = False
    p1.save()
    decision = router_decision.decide(user.pk, "standard")
    assert [r.identity_id for r in decision.chain] == [second.pk]
    assert {c["identity_id"]: c["reason"] for c in decision.trace["candidates"]}[first.pk] == "disabled"
    p1.delete()
    decision = router_decision.decide(user.pk, "standard")
    assert {c["identity_id"]: c["reason"] for c in decision.trace["candidates"]}[first.pk] == "no preference"


def test_decide_sees_a_new_identity_and_a_stopped_connector(ada, make_connector):
    from connectors import services
    from tests.conftest import SYSTEM

    user, first, second = ada
    assert len(router_decision.decide(user.pk, "urgent").chain) == 2
    make_connector("locmem_c")
    third = ChannelIdentity.objects.create(user=user, connector_id="locmem_c", address="c", verified_at=NOW)
    assert third.pk in router_decision.decide(user.pk, "urgent").trace["chain"]
    services.stop_connector(SYSTEM, "locmem_a")
    decision = router_decision.decide(user.pk, "urgent")
    assert first.pk not in decision.trace["chain"]
    assert {c["identity_id"]: c["reason"] for c in decision.trace["candidates"]}[first.pk] == "connector not connected"


def test_a_warm_decision_makes_no_query(ada, django_assert_num_queries):
    user, first, second = ada
    ConnectorPreference.objects.create(user=user, identity=first, priority=1, notification_types=["urgent"])
    with django_assert_num_queries(2):  # cold: connector states + identities with preferences
        cold = router_decision.decide(user.pk, "urgent")
    with django_assert_num_queries(0):
        warm = router_decision.decide(user.pk, "urgent")
    assert warm.chain == cold.chain
    with django_assert_num_queries(0):
        for kind in ("standard", "digest"):
            router_decision.decide(user.pk, kind)


def test_a_heartbeat_reloads_connector_states_but_keeps_people(ada, django_assert_num_queries):
    user, first, second = ada
    router_decision.decide(user.pk, "standard")
    Connector.objects.get(pk="locmem_a").save(update_fields=["last_heartbeat"])
    with django_assert_num_queries(1):  # the connector states only
        router_decision.decide(user.pk, "standard")


def test_the_cache_expires(ada, django_assert_num_queries):
    user, first, second = ada
    router_decision.decide(user.pk, "standard")
    # A change that sends no signal (another process, a bulk update) shows once the entry expires.
    ChannelIdentity.objects.filter(pk=second.pk).update(connector_id="locmem_a", address="other")
    assert router_decision.decide(user.pk, "standard").chain[1].address == "ada-cli"
    with override_settings(ROUTING_CACHE_SECONDS=0):
        assert router_decision.decide(user.pk, "standard").chain[1].address == "other"


def test_decide_is_deterministic_on_the_database(ada):
    user, first, second = ada
    ConnectorPreference.objects.create(user=user, identity=second, priority=1, quiet_start=time(22),
                                       quiet_end=time(7), timezone="Europe/Paris")
    night = datetime(2026, 11, 25, 1, 0, tzinfo=timezone.utc)
    one, two = router_decision.decide(user.pk, "standard", now=night), router_decision.decide(user.pk, "standard", now=night)
    for d in (one, two):
        d.trace.pop("decision_ms")
    assert one.trace == two.trace and one.chain == two.chain
    assert one.trace["candidates"][0]["reason"] == "quiet hours"
    assert router_decision.decide(user.pk, "urgent", now=night).trace["candidates"][0]["reason"] == "urgent overrides quiet hours"


def test_whatsapp_window_from_inbound_messages(make_user, make_connector):
    """The loader finds the person's newest message from that address (Twilio's `whatsapp:` form),
    and a new message evicts the cached entry at once."""
    user = make_user("grace")
    make_connector("locmem_wa")
    identity = ChannelIdentity.objects.create(user=user, connector_id="locmem_wa", address="+14155550123",
                                              verified_at=NOW)
    entries = loading.load_entries(user.pk)
    assert entries[0].last_inbound is None
    router_decision.decide(user.pk, "standard")
    received = NOW - timedelta(hours=1)
    InboundMessage.objects.create(connector_id="locmem_wa", platform_message_id="m1",
                                  sender="whatsapp:+14155550123", content="hi", received_at=received)
    InboundMessage.objects.create(connector_id="locmem_wa", platform_message_id="m0",
                                  sender="whatsapp:+14155550123", content="older", received_at=received - timedelta(hours=5))
    InboundMessage.objects.create(connector_id="locmem_wa", platform_message_id="m2",
                                  sender="whatsapp:+14155550999", content="someone else", received_at=NOW)
    snapshot = router_decision.snapshot_for(user.pk)  # evicted by the new message: reloaded without waiting
    assert snapshot.entries[0].identity_id == identity.pk
    assert snapshot.entries[0].last_inbound == received


def test_quota_exhausted_on_the_database(make_user, make_connector):
    from connectors import quotas

    user = make_user("quota")
    make_connector("locmem_q", recipient_quota_per_minute=1)
    make_connector("locmem_r")
    address = f"q-{uuid.uuid4().hex}"  # a fresh bucket, also in a Redis kept between runs
    limited = ChannelIdentity.objects.create(user=user, connector_id="locmem_q", address=address, verified_at=NOW)
    other = ChannelIdentity.objects.create(user=user, connector_id="locmem_r", address="r", verified_at=NOW)
    ConnectorPreference.objects.create(user=user, identity=limited, priority=1)
    ConnectorPreference.objects.create(user=user, identity=other, priority=2)
    assert router_decision.decide(user.pk, "urgent").trace["chain"] == [limited.pk, other.pk]
    assert quotas.take([(f"recipient:locmem_q:{address}", 1)]) == 0.0  # the one token of this minute
    decision = router_decision.decide(user.pk, "urgent")
    assert decision.trace["chain"] == [other.pk]
    assert decision.trace["candidates"][0]["reason"] == "quota exhausted"


def test_unknown_type_is_refused_by_decide(ada):
    with pytest.raises(ValidationFailed):
        router_decision.decide(ada[0].pk, "loud")
