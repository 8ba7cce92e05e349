"""The event log's sequencer: numbers committed events after commit, one short transaction at a time.

On PostgreSQL publish() appends an Event without a `seq` and without any lock, and registers
`sequence_pending()` to run after its transaction commits. Readers only ever see sequenced
rows (`seq IS NOT NULL`, see connectors.events.log), in `seq` order. `sequence_pending()`:

1. looks for unsequenced rows with one cheap statement (the partial index `event_unsequenced`);
   under load one pass serves many writers, and most callers find nothing left and stop here;
2. otherwise, in its own transaction, takes a transaction-scoped advisory lock (blocking), then
   numbers every committed unsequenced row in `id` order after the log's highest seq, in one
   UPDATE, and commits, which releases the lock;
3. pushes the events it numbered live (connectors.events.push), now carrying their seq.

Why no row is stranded: the writer calls this after its own COMMIT. Under READ COMMITTED the
UPDATE's snapshot is taken when the statement starts, which is after the lock was granted, which
is after the writer's commit; so the writer's row is in it, unless a pass that ran while this one
waited for the lock had already numbered it (and committed). Step 1 is safe for the same reason:
a row it does not see as unsequenced was numbered by a pass that had already committed.

Why a reader never skips an event that commits late: seqs are handed out only inside these
transactions, one at a time (the lock), each above every seq already committed (the MAX is read
after the lock, when the previous pass has committed), and each pass's seqs become visible all
at once at its commit. So the set of visible seqs is always 1..head with no holes (purges
aside, which only remove old ones): `seq > N` misses nothing that becomes visible later. A
transaction still open holds no seq at all, so it cannot leave a hole behind it.

A process that dies between its commit and its pass leaves rows unsequenced; the next pass of
any writer, or the periodic relay (`relay()` here: this first, then connectors.events.push.relay),
numbers them.

SQLite numbers events inline in publish(): its IMMEDIATE transaction already holds the database's
write lock, so MAX + 1 there adds no lock and no second step. `numbers_inline()` decides.
"""
import logging

from django.db import connection, transaction

from connectors.events import push as live
from connectors.models import Event

logger = logging.getLogger(__name__)

# Any constant distinct from the audit chain's key (audit.services): this lock guards only the
# few milliseconds of a sequencing pass, never a writer's transaction.
SEQUENCER_LOCK_KEY = 0x65766E74_73657121 & 0x7FFF_FFFF_FFFF_FFFF
# The NOTIFY channel a sequencing pass signals at commit (PostgreSQL LISTEN/NOTIFY).
SEQUENCED_CHANNEL = "brain_events_sequenced"
# Rows numbered per pass: bounds a pass's transaction after a long outage of the sequencer.
PASS_LIMIT = 5000


def numbers_inline() -> bool:
    """Does publish() give each event its seq itself (SQLite) rather than the sequencer (PostgreSQL)?

    The one place the vendor decides it. On SQLite a write transaction holds the database's write
    lock from its start (IMMEDIATE), so MAX(seq) + 1 at insert is already serialised and free. On
    PostgreSQL the same would need a lock held until commit by every publisher: the global lock
    this module exists to remove.
    """
    return connection.vendor != "postgresql"


def _quoted():
    q = connection.ops.quote_name
    return q(Event._meta.db_table), q("id"), q("seq")


def _anything_pending() -> bool:
    table, id_, seq = _quoted()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE {seq} IS NULL LIMIT 1")  # noqa: S608  # nosec B608  # quoted model names
        return cursor.fetchone() is not None


def _number_one_pass() -> list:
    """Lock, number up to PASS_LIMIT committed unsequenced rows in id order, commit. The rows, numbered."""
    table, id_, seq = _quoted()
    with transaction.atomic():
        with connection.cursor() as cursor:
            # The NOTIFY rides on the same round trip and is delivered at COMMIT, when the numbers are visible: it
            # wakes the bus bridge (connectors/events/bus_bridge.py) at once instead of at its next poll.
            cursor.execute("SELECT pg_advisory_xact_lock(%s), pg_notify(%s, '')", [SEQUENCER_LOCK_KEY, SEQUENCED_CHANNEL])
        # A new statement, so a new snapshot: taken after the lock was granted (see the module docstring).
        sql = (
            f"UPDATE {table} AS e SET {seq} = p.head + p.n "  # noqa: S608  # nosec B608  # quoted model names, %s marks
            f"FROM (SELECT {id_}, (SELECT COALESCE(MAX({seq}), 0) FROM {table}) AS head, "
            f"row_number() OVER (ORDER BY {id_}) AS n FROM {table} WHERE {seq} IS NULL ORDER BY {id_} LIMIT %s) AS p "
            f"WHERE e.{id_} = p.{id_} RETURNING e.*"
        )
        events = list(Event.objects.raw(sql, [PASS_LIMIT]))
    events.sort(key=lambda event: event.seq)
    return events


def sequence_pending() -> int:
    """Number the committed events that have no seq yet, then push them live. Returns how many.

    Runs after the writer's commit (publish() registers it with transaction.on_commit), and from
    the relay. Never raises: whatever it leaves undone, the next pass or the relay does.
    """
    if numbers_inline():
        return 0
    total = 0
    try:
        while _anything_pending():
            events = _number_one_pass()
            if events:
                live.push(events)
                total += len(events)
            if len(events) < PASS_LIMIT:
                break
    except Exception as exc:  # the writer has committed already; the relay numbers what is left
        logger.warning("Sequencing events failed (the relay will retry): %s", exc)
    return total


def register_after_commit():
    """Run sequence_pending() once after the current transaction commits, however many events it
    appends: one pass numbers them all. Django drops the callback if the transaction (or the
    savepoint that registered it) rolls back, and a later publish registers it again."""
    if any(entry[1] is sequence_pending for entry in connection.run_on_commit):
        return
    transaction.on_commit(sequence_pending)


def relay() -> dict:
    """The periodic safety net (Celery beat `relay_events`): number what no writer numbered (its
    process died between commit and sequencing), then re-push what the channel layer never got."""
    numbered = sequence_pending()
    return {"sequenced": numbered, "pushed": live.relay()}
