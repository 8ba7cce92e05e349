"""The reconciliation rules of the chaos run (bench/chaos_reconcile.py): what counts as lost, as a
duplicate, and when the outbound duplicate bound holds. The run itself is bench/chaos.py (CI)."""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def rules():
    spec = importlib.util.spec_from_file_location("bench_chaos_reconcile", BENCH / "chaos_reconcile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TAG = "abc123"


def clean_run(rules):
    """Two inbound updates (each answered by BRAIN) and two outbound sends, all delivered once."""
    in0, in1 = rules.inbound_text(0, TAG), rules.inbound_text(2, TAG)
    out1, out3 = rules.outbound_text(1, TAG), rules.outbound_text(3, TAG)
    return {
        "inbound_accepted": {"700000000": in0, "700000002": in1},
        "inbound_rows": [
            {"id": 1, "platform_message_id": "700000000", "content": in0, "brain_status": "replied"},
            {"id": 2, "platform_message_id": "700000002", "content": in1, "brain_status": "replied"},
        ],
        "outbound_accepted": {"k1": ("d-out1", out1), "k3": ("d-out3", out3)},
        "deliveries": [
            {"id": "d-out1", "status": "sent", "content": out1, "in_reply_to": None},
            {"id": "d-out3", "status": "sent", "content": out3, "in_reply_to": None},
            {"id": "d-r1", "status": "sent", "content": f"fake brain got: {in0}", "in_reply_to": 1},
            {"id": "d-r2", "status": "sent", "content": f"fake brain got: {in1}", "in_reply_to": 2},
        ],
        "platform_texts": [out1, out3, f"fake brain got: {in0}", f"fake brain got: {in1}"],
        "brain_contents": [in0, in1],
        "redriven": set(),
    }


def test_a_clean_run_has_nothing_lost_or_duplicated(rules):
    figures = rules.reconcile(**clean_run(rules))
    assert figures["lost"] == 0
    assert figures["inbound_duplicates"] == figures["outbound_duplicates"] == 0
    assert figures["inbound"]["stored"] == 2
    assert figures["outbound"]["sent"] == figures["outbound"]["received"] == 2
    assert figures["replies"]["received"] == 2
    assert rules.verdict(figures, worker_kills=0, pg_stops=0, worker_slots={"per_worker": 4, "total": 8})[0]


def test_an_acknowledged_update_without_a_row_is_lost(rules):
    run = clean_run(rules)
    run["inbound_rows"] = run["inbound_rows"][:1]
    figures = rules.reconcile(**run)
    assert figures["inbound"]["lost"] == 1
    assert figures["lost"] == 1
    ok, reasons, _ = rules.verdict(figures, worker_kills=5, pg_stops=1, worker_slots={"per_worker": 4, "total": 8})
    assert not ok and "1 messages lost" in reasons


def test_an_inbound_message_never_answered_is_lost(rules):
    run = clean_run(rules)
    run["inbound_rows"][1]["brain_status"] = "failed"
    run["deliveries"] = [d for d in run["deliveries"] if d["in_reply_to"] != 2]
    figures = rules.reconcile(**run)
    assert figures["inbound"]["unanswered"] == figures["inbound"]["unanswered_failed"] == 1
    assert figures["lost"] == 1


def test_two_replies_to_one_update_are_an_inbound_duplicate(rules):
    run = clean_run(rules)
    run["deliveries"].append({"id": "d-r1b", "status": "sent", "content": "again", "in_reply_to": 1})
    figures = rules.reconcile(**run)
    assert figures["inbound_duplicates"] == 1
    assert not rules.verdict(figures, worker_kills=9, pg_stops=9, worker_slots={"per_worker": 4, "total": 8})[0]


def test_an_accepted_send_that_never_settles_or_never_arrives_is_lost(rules):
    run = clean_run(rules)
    run["deliveries"][0]["status"] = "sending"  # stuck
    run["platform_texts"].remove(rules.outbound_text(3, TAG))  # "sent", but the platform never got it
    figures = rules.reconcile(**run)
    assert figures["outbound"]["lost"] == 2
    assert figures["outbound"]["lost_sending"] == figures["outbound"]["lost_sent_never_received"] == 1


def test_dead_and_failed_deliveries_are_settled_not_lost(rules):
    run = clean_run(rules)
    run["deliveries"][0]["status"] = "dead"
    run["deliveries"][1]["status"] = "failed"
    run["platform_texts"] = run["platform_texts"][2:]
    figures = rules.reconcile(**run)
    assert figures["lost"] == 0
    assert figures["outbound"]["dead"] == figures["outbound"]["failed"] == 1


def test_outbound_duplicates_must_be_redriven_and_within_the_bound(rules):
    run = clean_run(rules)
    run["platform_texts"].append(rules.outbound_text(1, TAG))
    figures = rules.reconcile(**run)
    assert figures["outbound_duplicates"] == figures["unexplained_outbound_duplicates"] == 1
    ok, reasons, _ = rules.verdict(figures, worker_kills=3, pg_stops=0, worker_slots={"per_worker": 4, "total": 8})
    assert not ok and "never re-driven" in reasons[0]

    run["deliveries"][0]["attempts"] = 2  # retried after an attempt whose answer was cut off
    figures = rules.reconcile(**run)
    assert figures["unexplained_outbound_duplicates"] == 0
    assert figures["outbound"]["duplicates_after_a_cut_answer"] == 1
    run["deliveries"][0]["attempts"] = 1

    run["redriven"] = {"d-out1"}
    figures = rules.reconcile(**run)
    assert figures["unexplained_outbound_duplicates"] == 0
    assert rules.verdict(figures, worker_kills=1, pg_stops=0, worker_slots={"per_worker": 4, "total": 8})[0]
    ok, reasons, bound = rules.verdict(figures, worker_kills=0, pg_stops=0,
                                       worker_slots={"per_worker": 4, "total": 8})
    assert not ok and bound == 0 and "exceed the bound 0" in reasons[0]


def test_duplicates_are_attributed_to_the_disruption_that_followed_the_send(rules):
    outages, kills = [(100.0, 103.0)], [200.0]
    causes = rules.attribute_duplicates({"a": 98.5, "b": 101.0, "c": 199.0, "d": 150.0}, outages, kills)
    assert causes == {"database_stop": 2, "worker_kill": 1, "other": 1}
