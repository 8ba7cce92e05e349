"""The router: a table of cases over the pure `choose()`, hypothesis properties, and `decide()` on
the database (cache invalidation, queries when warm)."""
import uuid
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from brain_connectors.shared.errors import ValidationFailed
from connectors.models import Connector, InboundMessage
from connectors.platforms.addresses import mask_address
from routing.models import ChannelIdentity, ConnectorPreference
from routing.router import cache as router_cache
from routing.router import decision as router_decision
from routing.router import loading
from routing.router.chain import INCLUDED_REASONS, choose
from routing.router.snapshot import NOTIFICATION_TYPES, ConnectorState, Entry, Snapshot
from tests.clock import stepping_time

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

# (name, snapshot, type, now, expected reason of identity 1, expected chain)
CASES = [
    ("ok", snap(pref(1, "tg", 1)), "standard", NOW, "ok", [1]),
    ("disabled", snap(pref(1, "tg", 1, enabled=False), pref(2, "sms", 2)), "standard", NOW, "disabled", [2]),
    ("type not served", snap(pref(1, "tg", 1, notification_types=("urgent",)), pref(2, "sms", 2)),
     "standard", NOW, "type not served", [2]),
    ("type served", snap(pref(1, "tg", 1, notification_types=("digest", "urgent"))), "digest", NOW, "ok", [1]),
    ("empty types serve all", snap(pref(1, "tg", 1, notification_types=())), "digest", NOW, "ok", [1]),
    ("connector stopped", snap(pref(1, "down", 1), pref(2, "sms", 2)), "urgent", NOW, "connector not connected", [2]),
    ("connector in error", snap(pref(1, "errored", 1)), "standard", NOW, "connector not connected", []),
    ("connector deleted", snap(pref(1, "gone", 1)), "standard", NOW, "connector not connected", []),
    ("stale poller", snap(pref(1, "poller_stale", 1), pref(2, "sms", 2)), "urgent", NOW, "stale heartbeat", [2]),
    ("fresh poller", snap(pref(1, "poller_fresh", 1)), "standard", NOW, "ok", [1]),
    ("old heartbeat without a lease: status only", snap(pref(1, "unleased_old", 1)), "standard", NOW, "ok", [1]),
    ("stale threshold is a setting", snap(pref(1, "poller_fresh", 1), stale_seconds=60), "standard", NOW,
     "stale heartbeat", []),
    ("quota exhausted", snap(pref(1, "quota", 1), pref(2, "tg", 2), exhausted=frozenset({1})), "urgent", NOW,
     "quota exhausted", [2]),
    ("whatsapp inside window", snap(pref(1, "wa", 1, last_inbound=RECENT)), "standard", NOW, "ok", [1]),
    ("whatsapp never wrote", snap(pref(1, "wa", 1), pref(2, "sms", 2)), "standard", NOW,
     "outside the WhatsApp 24 h window", [2]),
    ("whatsapp window closed, even urgent", snap(pref(1, "wa", 1, last_inbound=OLD)), "urgent", NOW,
     "outside the WhatsApp 24 h window", []),
    ("whatsapp margin: 23h58 ago is outside", snap(pref(1, "wa", 1, last_inbound=NOW - timedelta(hours=23, minutes=58))),
     "standard", NOW, "outside the WhatsApp 24 h window", []),
    ("whatsapp template outside window", snap(pref(1, "wa_tpl", 1, last_inbound=OLD)), "standard", NOW,
     "template (outside the WhatsApp 24 h window)", [1]),
    # Quiet hours 22:00-07:00 in the preference's zone.
    ("quiet hours after midnight", snap(pref(1, "tg", 1, **QUIET_NIGHT), pref(2, "sms", 2)), "standard",
     datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc), "quiet hours", [2]),
    ("quiet hours before midnight", snap(pref(1, "tg", 1, **QUIET_NIGHT)), "digest",
     datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc), "quiet hours", []),
    ("quiet hours end is exclusive", snap(pref(1, "tg", 1, **QUIET_NIGHT)), "standard",
     datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc), "ok", [1]),
    ("quiet hours start is inclusive", snap(pref(1, "tg", 1, **QUIET_NIGHT)), "standard",
     datetime(2026, 11, 25, 22, 0, tzinfo=timezone.utc), "quiet hours", []),
    ("urgent overrides quiet hours", snap(pref(1, "tg", 1, **QUIET_NIGHT)), "urgent",
     datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc), "urgent overrides quiet hours", [1]),
    ("urgent in quiet hours, connector down", snap(pref(1, "down", 1, **QUIET_NIGHT)), "urgent",
     datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc), "connector not connected", []),
    ("daytime window", snap(pref(1, "tg", 1, quiet_start=time(9), quiet_end=time(17))), "standard", NOW,
     "quiet hours", []),
    # 12:00 UTC is 21:00 in Tokyo (quiet from 20:00) and 07:00 in New York (quiet until 08:00).
    ("Tokyo evening", snap(pref(1, "tg", 1, quiet_start=time(20), quiet_end=time(6), timezone="Asia/Tokyo")),
     "standard", NOW, "quiet hours", []),
    ("New York early morning", snap(pref(1, "tg", 1, quiet_start=time(22), quiet_end=time(8),
                                         timezone="America/New_York")), "standard", NOW, "quiet hours", []),
    ("London noon", snap(pref(1, "tg", 1, quiet_start=time(22), quiet_end=time(8), timezone="Europe/London")),
     "standard", NOW, "ok", [1]),
    ("equal start and end: no quiet hours", snap(pref(1, "tg", 1, quiet_start=time(12), quiet_end=time(12))),
     "standard", NOW, "ok", [1]),
    ("unknown zone counts as UTC", snap(pref(1, "tg", 1, quiet_start=time(11), quiet_end=time(13),
                                             timezone="Mars/Olympus")), "standard", NOW, "quiet hours", []),
    ("identity without a preference", snap(bare(1, "tg"), pref(2, "sms", 1)), "standard", NOW, "no preference", [2]),
    ("another person's identity", snap(replace(pref(1, "tg", 1), user_id=USER + 1)), "standard", NOW,
     "unknown identity", []),
    # Without preferences: the default order of kinds.
    ("default order", snap(bare(1, "mail"), bare(2, "tg"), bare(3, "sms")), "standard", NOW, "ok", [2, 3, 1]),
    ("default order: voice for urgent only", snap(bare(1, "voice"), bare(2, "mail")), "standard", NOW,
     "type not served", [2]),
    ("default order: voice when urgent", snap(bare(1, "voice"), bare(2, "mail")), "urgent", NOW, "ok", [2, 1]),
    ("default order: unlisted kind", snap(bare(1, "odd"), bare(2, "mail")), "standard", NOW,
     "kind not in default order", [2]),
    ("default order is a setting", snap(bare(1, "mail"), bare(2, "tg"), default_order=("email", "telegram")),
     "standard", NOW, "ok", [1, 2]),
    ("default order: connector state still counts", snap(bare(1, "down"), bare(2, "mail")), "standard", NOW,
     "connector not connected", [2]),
    ("nobody to reach", snap(), "urgent", NOW, None, []),
]


@pytest.mark.parametrize("name,snapshot,kind,now,reason,chain", CASES, ids=[c[0] for c in CASES])
def test_choose_table(name, snapshot, kind, now, reason, chain):
    decision = choose(snapshot, kind, now)
    if reason is not None:
        assert reasons(decision)[1] == reason
    assert [route.identity_id for route in decision.chain] == chain
    assert decision.trace["chain"] == chain
    for candidate in decision.trace["candidates"]:
        assert candidate["included"] == (candidate["identity_id"] in chain)


def test_priority_orders_the_chain_not_the_identity_ids():
    decision = choose(snap(pref(1, "tg", 3), pref(2, "sms", 1), pref(3, "mail", 2)), "standard", NOW)
    assert [r.identity_id for r in decision.chain] == [2, 3, 1]
    assert [r.priority for r in decision.chain] == [1, 2, 3]
    assert [c["priority"] for c in decision.trace["candidates"]] == [1, 2, 3]
    assert decision.chain[0].preference_id == 102 and decision.chain[0].kind == "sms"
    assert decision.trace["source"] == "preferences"


def test_default_order_routes_carry_no_preference():
    decision = choose(snap(bare(1, "mail"), bare(2, "tg")), "standard", NOW)
    assert decision.trace["source"] == "default_order"
    assert [(r.kind, r.preference_id, r.priority) for r in decision.chain] == [("telegram", None, 1), ("email", None, 5)]  # priority: the place in ROUTING_DEFAULT_KIND_ORDER (slack is 2nd)


def test_trace_shape_and_masking():
    entries = (
        pref(1, "sms", 1, address="+442071234567"),
        pref(2, "mail", 2, address="ada@example.org"),
        pref(3, "tg", 3, address="123456789"),
    )
    decision = choose(Snapshot(user_id=USER, entries=entries, connectors=CONNECTORS), "urgent", NOW)
    trace = decision.trace
    assert set(trace) == {"user_id", "notification_type", "at", "source", "candidates", "chain", "decision_ms"}
    assert trace["at"] == NOW.isoformat() and trace["notification_type"] == "urgent"
    hints = [c["address_hint"] for c in trace["candidates"]]
    assert hints == ["+44••••4567", "a•••@example.org", "••••6789"]
    assert set(trace["candidates"][0]) == {"identity_id", "connector_id", "kind", "address_hint", "priority",
                                          "included", "reason"}
    assert "+442071234567" not in str(trace) and "ada@" not in str(trace)
    assert decision.chain[0].address == "+442071234567"  # the route itself keeps the address
    assert mask_address("whatsapp:+14155550100") == "+14••••0100"
    assert mask_address("https://hooks.example.com/x/secret") == "https://hooks.example.com/••••"


def test_unknown_notification_type_is_refused():
    with pytest.raises(ValidationFailed):
        choose(snap(pref(1, "tg", 1)), "shouting", NOW)


def test_naive_now_is_utc():
    naive = datetime(2026, 11, 25, 3, 0)
    decision = choose(snap(pref(1, "tg", 1, **QUIET_NIGHT)), "standard", naive)
    assert reasons(decision)[1] == "quiet hours"


# --- properties ---------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/London", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe", "Pacific/Kiritimati"]
KINDS = ["telegram", "sms", "whatsapp", "email", "voice", "webhook", "cli", "pigeon"]

connector_states = st.builds(
    lambda i, kind, status, beat, lease, template: ConnectorState(
        f"c{i}", kind, status, None if beat is None else NOW - timedelta(seconds=beat), lease, None, None, template
    ),
    st.integers(0, 5),
    st.sampled_from(KINDS),
    st.sampled_from(["CONNECTED", "CONNECTED", "CONNECTED", "STOPPED", "ERROR", "DISABLED"]),
    st.one_of(st.none(), st.integers(0, 1000)),
    st.sampled_from(["", "runner"]),
    st.booleans(),
)
times = st.one_of(st.none(), st.times().map(lambda t: t.replace(second=0, microsecond=0)))


@st.composite
def snapshots(draw):
    states = {s.id: s for s in draw(st.lists(connector_states, max_size=6))}
    count = draw(st.integers(0, 6))
    with_prefs = draw(st.booleans())
    priorities = draw(st.permutations(range(1, count + 1)))
    entries = []
    for i in range(count):
        has_pref = with_prefs and draw(st.booleans()) if i else with_prefs
        inbound = draw(st.one_of(st.none(), st.integers(0, 60 * 60 * 48)))
        entries.append(
            Entry(
                identity_id=i + 1,
                connector_id=f"c{draw(st.integers(0, 6))}",
                address=f"+4477009{i:05d}",
                address_hint="+44••••",
                preference_id=1000 + i if has_pref else None,
                priority=priorities[i] if has_pref else None,
                enabled=draw(st.booleans()),
                notification_types=tuple(draw(st.sets(st.sampled_from(NOTIFICATION_TYPES)))),
                quiet_start=draw(times),
                quiet_end=draw(times),
                timezone=draw(st.sampled_from(ZONES)),
                last_inbound=None if inbound is None else NOW - timedelta(seconds=inbound),
                user_id=USER,
            )
        )
    exhausted = frozenset(draw(st.sets(st.integers(1, max(count, 1)))))
    return Snapshot(user_id=USER, entries=tuple(entries), connectors=states, exhausted=exhausted,
                    default_order=tuple(draw(st.permutations(KINDS[:7]))))


moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(timezone.utc))
types = st.sampled_from(NOTIFICATION_TYPES)
PROPERTY_SETTINGS = hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(snapshots(), types, moments)
def test_chain_is_sorted_by_priority(snapshot, kind, now):
    priorities = [route.priority for route in choose(snapshot, kind, now).chain]
    assert priorities == sorted(priorities)
    assert None not in priorities


@PROPERTY_SETTINGS
@given(snapshots(), types, moments)
def test_every_excluded_candidate_says_why(snapshot, kind, now):
    for candidate in choose(snapshot, kind, now).trace["candidates"]:
        assert isinstance(candidate["reason"], str) and candidate["reason"]
        if candidate["included"]:
            assert candidate["reason"] in INCLUDED_REASONS
        else:
            assert candidate["reason"] != "ok" and candidate["reason"] not in INCLUDED_REASONS


@PROPERTY_SETTINGS
@given(snapshots(), types, moments)
def test_the_chain_is_exactly_the_included_candidates(snapshot, kind, now):
    decision = choose(snapshot, kind, now)
    included = [c["identity_id"] for c in decision.trace["candidates"] if c["included"]]
    assert [route.identity_id for route in decision.chain] == included == decision.trace["chain"]
    assert len(decision.trace["candidates"]) == len(snapshot.entries)


@PROPERTY_SETTINGS
@given(snapshots(), moments)
def test_urgent_ignores_quiet_hours(snapshot, now):
    decision = choose(snapshot, "urgent", now)
    assert all(c["reason"] != "quiet hours" for c in decision.trace["candidates"])
    silent = replace(snapshot, entries=tuple(replace(e, quiet_start=None, quiet_end=None) for e in snapshot.entries))
    assert decision.chain == choose(silent, "urgent", now).chain


@PROPERTY_SETTINGS
@given(snapshots(), types, moments)
def test_quiet_hours_only_ever_remove_non_urgent_channels(snapshot, kind, now):
    silent = replace(snapshot, entries=tuple(replace(e, quiet_start=None, quiet_end=None) for e in snapshot.entries))
    loud = {r.identity_id for r in choose(silent, kind, now).chain}
    assert {r.identity_id for r in choose(snapshot, kind, now).chain} <= loud


@PROPERTY_SETTINGS
@given(snapshots(), types, moments)
def test_choose_is_deterministic(snapshot, kind, now):
    first, second = choose(snapshot, kind, now), choose(snapshot, kind, now)
    assert first.chain == second.chain and first.trace == second.trace


@PROPERTY_SETTINGS
@given(snapshots(), types, moments)
def test_excluded_channels_are_never_in_the_chain_for_a_down_connector(snapshot, kind, now):
    for route in choose(snapshot, kind, now).chain:
        state = snapshot.connectors[route.connector_id]
        assert state.status == "CONNECTED"
        assert route.identity_id not in snapshot.exhausted


# --- decide() on the database -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_router_cache():
    router_cache.invalidate()
    yield
    router_cache.invalidate()


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
