"""The router: a table of cases over the pure `choose()` and its examples (hypothesis properties:
test_router_properties.py; `decide()` on the database: test_router_decide.py)."""
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

import pytest

from brain_connectors.shared.errors import ValidationFailed
from connectors.platforms.addresses import mask_address
from routing.router.chain import choose
from routing.router.snapshot import Snapshot
from tests.routing import router_support
from tests.routing.router_support import CONNECTORS, NOW, OLD, QUIET_NIGHT, RECENT, USER, bare, pref, reasons, snap

_fresh_router_cache = router_support._fresh_router_cache  # autouse, as in the module these tests came from


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
