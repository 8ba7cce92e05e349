"""The reconciliation of a chaos run (bench/chaos.py): what the clients were told was accepted,
what the database holds, and what the fake platform and the fake BRAIN received.

Pure functions over plain data (no Django, no servers), so the rules are unit-tested on their own
(tests/project/test_chaos_script.py).

Definitions:
- an inbound update is *accepted* when the webhook answered 2xx; it is *lost* if no InboundMessage
  row has its update_id, or if its row never got an answer (no reply delivery from BRAIN);
- an inbound *duplicate* is an effect that happened more than once for one update: two rows (by
  update_id or by text), or two reply deliveries;
- BRAIN being asked twice about one message is reported apart (`brain_asked_again`): a worker
  killed while it waits for BRAIN leaves a claim that the sweeper re-drives, which asks again; the
  stored reply stays one (its idempotency key), so it is bounded like outbound duplicates;
- an outbound message is *accepted* when the API answered 2xx; it is *lost* if its delivery is
  missing, is not settled at the end (sent, delivered, failed or dead), or says sent while the
  platform never received it;
- an outbound *duplicate* is a delivery whose content the platform received more than once. The
  pipeline allows one only for a delivery re-driven after its worker stopped between the
  platform's acceptance and the commit (audited as message.redrive), or from a retry after an
  attempt whose answer the platform's connection cut (the delivery has more than one attempt);
  any other is *unexplained*.
"""
import re
from collections import Counter

SETTLED = {"sent", "delivered", "failed", "dead"}
SENT = {"sent", "delivered"}
ANSWERED = {"replied", "no_reply"}

INBOUND_TEXT = "chaos in {index} {tag}"
OUTBOUND_TEXT = "chaos out {index} {tag}"
INBOUND_PATTERN = re.compile(r"chaos in (\d+) (\w+)")


def inbound_text(index, tag):
    return INBOUND_TEXT.format(index=index, tag=tag)


def outbound_text(index, tag):
    return OUTBOUND_TEXT.format(index=index, tag=tag)


def reconcile(*, inbound_accepted, inbound_rows, outbound_accepted, deliveries, platform_texts, brain_contents,
              redriven):
    """Figures of one run.

    inbound_accepted: {update_id (str): text} the webhook acknowledged
    inbound_rows: [{"id", "platform_message_id", "content", "brain_status"}] every InboundMessage
    outbound_accepted: {idempotency key: (delivery id (str), text)} the API acknowledged
    deliveries: [{"id" (str), "status", "content", "in_reply_to" (inbound id or None)}] every Delivery
    platform_texts: every text the fake platform accepted (sendMessage 200), with repeats
    brain_contents: every message content the fake BRAIN answered, with repeats
    redriven: ids (str) of deliveries the sweeper put back in the queue (message.redrive)
    """
    rows_by_update = Counter(row["platform_message_id"] for row in inbound_rows)
    rows_by_text = Counter(row["content"] for row in inbound_rows)
    row_by_update = {row["platform_message_id"]: row for row in inbound_rows}
    replies_by_inbound = {}
    for delivery in deliveries:
        if delivery["in_reply_to"] is not None:
            replies_by_inbound.setdefault(delivery["in_reply_to"], []).append(delivery)
    received = Counter(platform_texts)
    asked = Counter(brain_contents)
    redriven = set(redriven)

    inbound = Counter()
    inbound["accepted"] = len(inbound_accepted)
    reply_deliveries = []
    for update_id, text in inbound_accepted.items():
        row = row_by_update.get(update_id)
        if row is None:
            inbound["lost"] += 1
            continue
        inbound["stored"] += 1
        if rows_by_update[update_id] > 1 or rows_by_text[text] > 1:
            inbound["duplicate_rows"] += 1
        if asked[text] > 1:
            inbound["brain_asked_again"] += 1
        replies = replies_by_inbound.get(row["id"], [])
        if len(replies) > 1:
            inbound["duplicate_replies"] += 1
        if row["brain_status"] not in ANSWERED or (row["brain_status"] == "replied" and not replies):
            inbound["unanswered"] += 1
            inbound[f"unanswered_{row['brain_status']}"] += 1
        reply_deliveries.extend(replies)
    inbound["duplicates"] = inbound["duplicate_rows"] + inbound["duplicate_replies"]

    by_id = {delivery["id"]: delivery for delivery in deliveries}
    outbound = _deliveries(
        [(by_id.get(delivery_id), text) for delivery_id, text in outbound_accepted.values()], received, redriven
    )
    replies = _deliveries([(delivery, delivery["content"]) for delivery in reply_deliveries], received, redriven)
    return {
        "inbound": dict(sorted(inbound.items())),
        "outbound": outbound,
        "replies": replies,
        "lost": inbound["lost"] + inbound["unanswered"] + outbound["lost"] + replies["lost"],
        "inbound_duplicates": inbound["duplicates"],
        "outbound_duplicates": outbound["duplicates"] + replies["duplicates"],
        "unexplained_outbound_duplicates": outbound["unexplained_duplicates"] + replies["unexplained_duplicates"],
    }


def _deliveries(pairs, received, redriven):
    """Figures for (delivery row or None, the text it should carry) pairs."""
    figures = Counter(accepted=len(pairs))
    for delivery, text in pairs:
        if delivery is None:
            figures["lost"] += 1
            figures["lost_missing_row"] += 1
            continue
        status = delivery["status"]
        figures[status] += 1
        if status not in SETTLED:
            figures["lost"] += 1
            figures[f"lost_{status}"] += 1
        elif status in SENT and received[text] == 0:
            figures["lost"] += 1
            figures["lost_sent_never_received"] += 1
        if received[text] > 1:
            figures["duplicates"] += 1
            if delivery["id"] in redriven:
                continue
            if delivery.get("attempts", 0) > 1:
                # An attempt failed although the platform had the message: the connection was cut
                # before its answer arrived (the fake going down drops open connections), and the
                # retry sent it again. Platform-side, like a process dying after the platform's OK.
                figures["duplicates_after_a_cut_answer"] += 1
            else:
                figures["unexplained_duplicates"] += 1
    figures["received"] = sum(1 for _, text in pairs if received[text])
    for key in ("lost", "duplicates", "unexplained_duplicates", "sent", "delivered", "failed", "dead"):
        figures.setdefault(key, 0)
    return dict(sorted(figures.items()))


def verdict(figures, *, worker_kills, pg_stops, worker_slots, sender_kills=0, sender_slots=None):
    """(ok, reasons): no loss, no inbound duplicate, outbound duplicates within their bound.

    The bound: a duplicate needs a send the platform accepted whose commit never happened. Each
    worker kill can catch at most one such send per thread of that worker, and a database stop at
    most one per thread of every worker; and every duplicate must be a re-driven delivery.
    A batch sender (`manage.py runsender`) records a batch only once all of it has been sent, so a
    sender kill can catch up to one batch (sender_slots["per_sender"]); a database stop longer
    than its record retries could catch every sender's batch (sender_slots["total"])."""
    reasons = []
    if figures["lost"]:
        reasons.append(f"{figures['lost']} messages lost")
    if figures["inbound_duplicates"]:
        reasons.append(f"{figures['inbound_duplicates']} inbound duplicates")
    sender_slots = sender_slots or {"per_sender": 0, "total": 0}
    bound = (worker_kills * worker_slots["per_worker"] + sender_kills * sender_slots["per_sender"]
             + pg_stops * (worker_slots["total"] + sender_slots["total"]))
    duplicates = figures["outbound_duplicates"]
    if duplicates > bound:
        reasons.append(f"{duplicates} outbound duplicates exceed the bound {bound}")
    if figures["unexplained_outbound_duplicates"]:
        reasons.append(f"{figures['unexplained_outbound_duplicates']} outbound duplicates were never re-driven")
    asked_again = figures["inbound"].get("brain_asked_again", 0)
    if asked_again > bound:
        reasons.append(f"BRAIN asked again about {asked_again} messages, over the bound {bound}")
    return not reasons, reasons, bound


def attribute_duplicates(first_sent_at, outages, kills, window=3.0, sender_kills=None):
    """Which disruption each outbound duplicate follows: {"worker_kill", "database_stop", "other"},
    and "sender_kill" when sender_kills is given.

    first_sent_at: {text: wall time the platform first accepted it} for the duplicated texts;
    outages: [(stopped at, started again at)] of the database; kills: wall times of worker kills;
    sender_kills: wall times of batch sender kills. The commit after a send follows it within
    `window` seconds; a duplicate is the database's if the database was down then, a worker's or
    a sender's kill's if one came then (the database wins a tie, then a worker)."""
    causes = Counter(worker_kill=0, database_stop=0, other=0)
    if sender_kills is not None:
        causes["sender_kill"] = 0
    for sent_at in first_sent_at.values():
        if any(stopped - window <= sent_at <= started for stopped, started in outages):
            causes["database_stop"] += 1
        elif any(sent_at <= killed <= sent_at + window for killed in kills):
            causes["worker_kill"] += 1
        elif any(sent_at <= killed <= sent_at + window for killed in sender_kills or ()):
            causes["sender_kill"] += 1
        else:
            causes["other"] += 1
    return dict(causes)
