"""The sealer: chains audit rows that writers appended unsealed, in the order they became visible.

On PostgreSQL `record()` inserts a row without seq, prev_hash, hash or algorithm and takes no lock,
so writers never queue on each other. `seal_pending()` then, in short transactions of its own:
- takes the sealer lock (`pg_try_advisory_xact_lock` on a constant key; when another sealer holds
  it, that one is sealing, and this one returns 0 at once: a sealer never waits);
- reads the head of the chain (the highest seq and its hash) and the unsealed rows by `id`;
- gives them seq head+1, head+2, … and the HMAC chain under the CURRENT key (AUDIT_CHAIN_KEY when
  it seals, not when the row was written: a row names the key that sealed it), in one UPDATE.

It only ever sees committed rows (READ COMMITTED), so it can never seal past a transaction that is
still open: such a transaction's rows are simply sealed by a later pass, after it commits, with a
later seq than rows committed meanwhile. The chain is therefore in commit-visibility order; `id`
(insertion order) may differ from it. The database triggers let exactly this update through
(audit.triggers): seq set where it was NULL, content unchanged.

Who seals: the Celery beat task `audit.tasks.seal_pending` every AUDIT_SEAL_INTERVAL_SECONDS, and
the audit thread of each daphne process (audit.checkpoints.start_writer) on the same interval.
Several sealers are harmless (the try-lock, and the unique seq as a last guard). `verify_audit`
never seals: it reports how many rows wait.
"""
import logging

from django.db import connection, transaction
from django.db.models import Count, Min

from audit import keys
from audit.models import GENESIS_HASH, AuditEvent, compute_hash

logger = logging.getLogger("audit.sealer")

# Any stable 64-bit number, other than the one of services.lock_log: it names the sealer's lock.
SEALER_LOCK_KEY = 7_310_424_117_302
BATCH_SIZE = 500


def seals_inline(conn=None):
    """Whether record() seals its row itself, in the writer's transaction.

    The one place that decides per database. SQLite: yes. Its IMMEDIATE transactions take the
    database's write lock at BEGIN, so writers are serialised anyway; sealing inline adds no lock,
    there is nothing to gain by deferring, and `make run` needs no sealer. PostgreSQL: no. Sealing
    inline would need a lock held until commit, which every send, receive and reply queued on.
    """
    return (conn or connection).vendor != "postgresql"


def head():
    """(seq, hash) of the last sealed row; (0, GENESIS_HASH) for an empty chain."""
    last = AuditEvent.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "hash").first()
    return last or (0, GENESIS_HASH)


def chain(rows, after, algorithm, key):
    """Set seq, prev_hash, algorithm and hash on `rows` (in order) so that they follow `after` (seq, hash)."""
    seq, prev_hash = after
    for row in rows:
        seq += 1
        row.seq, row.prev_hash, row.algorithm = seq, prev_hash, algorithm
        row.hash = compute_hash(
            prev_hash=prev_hash,
            seq=seq,
            time=row.time,
            action=row.action,
            principal=row.principal,
            target_type=row.target_type,
            target_id=row.target_id,
            details=row.details,
            result=row.result,
            algorithm=algorithm,
            key=key,
        )
        prev_hash = row.hash
    return rows


def _take_lock():
    if connection.vendor != "postgresql":
        return True  # SQLite: the IMMEDIATE transaction already holds the database's write lock
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEALER_LOCK_KEY])
        return cursor.fetchone()[0]


def _write(rows):
    """The sealing UPDATE: one statement for the whole batch on PostgreSQL (arrays, unnested)."""
    fields = ("id", "seq", "prev_hash", "hash", "algorithm")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "UPDATE audit_auditevent AS a "
                "SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash, algorithm = v.algorithm "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::varchar[], %s::varchar[], %s::varchar[]) "
                "AS v(id, seq, prev_hash, hash, algorithm) "
                "WHERE a.id = v.id AND a.seq IS NULL",
                [[getattr(row, field) for row in rows] for field in fields],
            )
            updated = cursor.rowcount
        else:
            updated = 0
            for row in rows:
                cursor.execute(
                    "UPDATE audit_auditevent SET seq = %s, prev_hash = %s, hash = %s, algorithm = %s "
                    "WHERE id = %s AND seq IS NULL",
                    [row.seq, row.prev_hash, row.hash, row.algorithm, row.id],
                )
                updated += cursor.rowcount
    if updated != len(rows):
        # Only another sealer could have sealed them, and the lock rules that out: roll back.
        raise RuntimeError(f"sealed {updated} audit rows of {len(rows)}: the batch is rolled back")


def _seal_batch(batch_size, algorithm, key):
    """Seal up to `batch_size` rows in one transaction; None when another sealer holds the lock."""
    with transaction.atomic():
        if not _take_lock():
            return None
        rows = list(AuditEvent.objects.filter(seq__isnull=True).order_by("id")[:batch_size])
        if rows:
            _write(chain(rows, head(), algorithm, key))
        return len(rows)


def seal_pending(batch_size=BATCH_SIZE):
    """Seal every committed unsealed row, in batches; returns how many this call sealed (0 when
    another sealer is at work). Raises ImproperlyConfigured without AUDIT_CHAIN_KEY."""
    algorithm, key = keys.current()
    total = 0
    while True:
        sealed = _seal_batch(batch_size, algorithm, key)
        if not sealed:
            return total
        total += sealed
        if sealed < batch_size:
            return total


def pending():
    """(how many rows wait to be sealed, the time of the oldest of them or None)."""
    found = AuditEvent.objects.filter(seq__isnull=True).aggregate(count=Count("id"), oldest=Min("time"))
    return found["count"], found["oldest"]


def tick():
    """One round of a periodic sealer: errors are logged, never raised (the next round retries)."""
    try:
        return seal_pending()
    except Exception:
        logger.exception("sealing the audit log failed")
        return 0
