"""The router's hypothesis properties over the pure `choose()`: chain order, exclusions, quiet hours, determinism."""
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from routing.router.chain import INCLUDED_REASONS, choose
from routing.router.snapshot import NOTIFICATION_TYPES, ConnectorState, Entry, Snapshot
from tests.routing import router_support
from tests.routing.router_support import NOW, USER

_fresh_router_cache = router_support._fresh_router_cache  # autouse, as in the module these tests came from


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
