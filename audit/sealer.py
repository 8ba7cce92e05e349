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

Only rows that record() wrote are sealed: it gives each row a write MAC (an HMAC of its content
under AUDIT_CHAIN_KEY, outside the chain). A row inserted or changed in SQL by someone without the
key fails it; the sealer leaves it unsealed and logs an error, and verify_audit reports it as a
failure. Without this, the sealer would chain a forged row under the key.

Who seals: the Celery beat task `audit.tasks.seal_pending` every AUDIT_SEAL_INTERVAL_SECONDS, and
the audit thread of each daphne process (audit.checkpoints.start_writer) on the same interval.
Several sealers are harmless (the try-lock, and the unique seq as a last guard). `verify_audit`
never seals: it reports how many rows wait.
"""
import hmac
import logging

from django.db import connection, transaction
from django.db.models import Count, Min

from audit import keys
from audit.models import GENESIS_HASH, AuditEvent, compute_hash

logger = logging.getLogger("audit.sealer")

# Any stable 64-bit number, other than the old chain lock's (…301, no longer taken): it names the sealer's lock.
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


def write_mac(row, algorithm, key):
    """The row's write MAC, "<key id>:<hex>": its content under `key`, outside any chain (a prefix
    that no chain hash has, and no seq)."""
    return f"{algorithm.removeprefix(keys.KEYED_PREFIX)}:{_content_mac(row, algorithm, key)}"


def _content_mac(row, algorithm, key):
    return compute_hash(
        prev_hash="write", seq=None, time=row.time, action=row.action, principal=row.principal,
        target_type=row.target_type, target_id=row.target_id, details=row.details, result=row.result,
        algorithm=algorithm, key=key,
    )


def write_mac_problem(row, ring):
    """Why `row` (unsealed) cannot be sealed, or "": its write MAC must match its content."""
    key_id, _, mac = (row.write_mac or "").partition(":")
    if not mac:
        return "it has no write MAC: it was inserted outside record()"
    algorithm = keys.KEYED_PREFIX + key_id
    try:
        key = keys.lookup(algorithm, ring)
    except keys.UnknownKeyError as exc:
        return f"its write MAC was {exc}"
    if not hmac.compare_digest(_content_mac(row, algorithm, key), mac):
        return "its write MAC does not match its content: inserted or changed outside record()"
    return ""


def chain(rows, after, algorithm, key):
    """Set seq, prev_hash, algorithm and hash on `rows` (in order) so that they follow `after` (seq, hash)."""
    seq, prev_hash = after
    for row in rows:
        seq += 1
        row.seq, row.prev_hash, row.algorithm = seq, prev_hash, algorithm
        row.hash = row.compute_hash(key)
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


def _seal_batch(after_id, batch_size, algorithm, key, ring):
    """Seal up to `batch_size` rows with an id above `after_id`, in one transaction. Returns (rows
    read, rows sealed, the last id read), or None when another sealer holds the lock."""
    with transaction.atomic():
        if not _take_lock():
            return None
        rows = list(AuditEvent.objects.filter(seq__isnull=True, id__gt=after_id).order_by("id")[:batch_size])
        good = []
        for row in rows:
            problem = write_mac_problem(row, ring)
            if problem:
                logger.error("audit row id %s is not sealed: %s", row.id, problem)
            else:
                good.append(row)
        if good:
            _write(chain(good, head(), algorithm, key))
        return len(rows), len(good), (rows[-1].id if rows else after_id)


def seal_pending(batch_size=BATCH_SIZE):
    """Seal every committed unsealed row that record() wrote, in batches; returns how many this call
    sealed (0 when another sealer is at work). Raises ImproperlyConfigured without AUDIT_CHAIN_KEY."""
    algorithm, key = keys.current()
    ring = keys.keyring()
    total, after_id = 0, 0
    while True:
        done = _seal_batch(after_id, batch_size, algorithm, key, ring)
        if done is None:
            return total
        read, sealed, after_id = done
        total += sealed
        if read < batch_size:
            return total


def pending():
    """(how many rows wait to be sealed, the time of the oldest of them or None)."""
    found = AuditEvent.objects.filter(seq__isnull=True).aggregate(count=Count("id"), oldest=Min("time"))
    return found["count"], found["oldest"]


def unsealable(ring=None, batch_size=2000):
    """[(id, why)] of the waiting rows the sealer refuses: forged or changed outside record()."""
    ring = keys.keyring() if ring is None else ring
    found, after_id = [], 0
    while True:
        rows = list(AuditEvent.objects.filter(seq__isnull=True, id__gt=after_id).order_by("id")[:batch_size])
        found += [(row.id, why) for row in rows if (why := write_mac_problem(row, ring))]
        if len(rows) < batch_size:
            return found
        after_id = rows[-1].id


def tick():
    """One round of a periodic sealer: errors are logged, never raised (the next round retries)."""
    try:
        return seal_pending()
    except Exception:
        logger.exception("sealing the audit log failed")
        return 0
