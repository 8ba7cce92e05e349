"""Writing and verifying the audit log. `record()` is the only writer.

`record()` joins the caller's transaction, so an audit row commits or rolls back with the change
it describes. The chain is serialised: on PostgreSQL by a transaction-scoped advisory lock, on
SQLite by the write lock that IMMEDIATE transactions take at BEGIN. The primary key on `seq`
is a last guard: two writers can never both append the same position.
"""
import json
from dataclasses import dataclass

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from .models import GENESIS_HASH, AuditEvent, compute_hash

# Any stable 64-bit number; it names the lock that serialises appends to the chain.
_CHAIN_LOCK_KEY = 7_310_424_117_301

# Keys never stored in details, whatever a caller passes: the audit log holds no secrets
# and no message content.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"content", "text", "body", "credentials", "token", "password", "secret", "bot_token", "auth_token"}
)

SUCCESS = AuditEvent.Result.SUCCESS
FAILURE = AuditEvent.Result.FAILURE
DENIED = AuditEvent.Result.DENIED


def forbidden_keys(value):
    """Forbidden keys anywhere in `value`, nested dicts and lists included."""
    if isinstance(value, dict):
        found = FORBIDDEN_DETAIL_KEYS.intersection(value)
        return found.union(*(forbidden_keys(v) for v in value.values()))
    if isinstance(value, (list, tuple)):
        return set().union(*(forbidden_keys(v) for v in value))
    return set()


def _clean_details(details):
    details = dict(details or {})
    leaked = forbidden_keys(details)
    if leaked:
        raise ValueError(f"Audit details must not contain {sorted(leaked)}")
    # Round-trip through JSON so the stored value and the hashed value are identical.
    return json.loads(json.dumps(details, cls=DjangoJSONEncoder))


def _log_lock_released():
    """Marks, in the transaction's on-commit list, that it holds the log lock (see lock_log)."""


def lock_log():
    """Serialise appends to the audit chain until the current transaction ends.

    The event log (connectors.events) takes this same lock rather than one of its own: both are
    written in the same transactions, and one lock cannot deadlock against itself.

    Taken once per transaction: a marker callback sits in the transaction's on-commit list
    until it commits, and Django drops it on rollback (also of the savepoint that took the
    lock, which releases the lock). One round trip fewer for each further audit row or event.
    """
    if connection.vendor != "postgresql":
        return  # SQLite: the IMMEDIATE transaction already holds the database's write lock
    if connection.in_atomic_block and any(entry[1] is _log_lock_released for entry in connection.run_on_commit):
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    if connection.in_atomic_block:
        transaction.on_commit(_log_lock_released)


def record(action, *, principal, result=SUCCESS, target_type="", target_id="", details=None):
    """Append one row to the audit chain in the current transaction (or its own)."""
    details = _clean_details(details)
    # No savepoint when nested: an audit failure must fail the caller's whole transaction anyway,
    # and two round trips fewer matter on hot paths such as webhook ingest.
    with transaction.atomic(savepoint=False):
        lock_log()
        last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
        seq = last["seq"] + 1 if last else 1
        prev_hash = last["hash"] if last else GENESIS_HASH
        fields = {
            "seq": seq,
            "time": timezone.now(),
            "action": action,
            "principal": str(principal)[:200],
            "target_type": target_type,
            "target_id": str(target_id)[:200],
            "details": details,
            "result": str(result),
        }
        event = AuditEvent(prev_hash=prev_hash, hash=compute_hash(prev_hash=prev_hash, **fields), **fields)
        event.save()
    return event


@dataclass
class ChainReport:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""


def verify_chain(progress=None, batch_size=2000):
    """Walk the whole chain in order; report the first broken link.

    `progress`, if given, is called with the number of rows checked in each batch.
    """
    expected_seq = 1
    prev_hash = GENESIS_HASH
    checked = 0
    last_seq = 0
    while True:
        batch = list(AuditEvent.objects.filter(seq__gt=last_seq).order_by("seq")[:batch_size])
        if not batch:
            break
        for event in batch:
            if event.seq != expected_seq:
                return ChainReport(
                    False, checked, event.seq, f"expected seq {expected_seq}, found {event.seq}: rows are missing"
                )
            if event.prev_hash != prev_hash:
                return ChainReport(
                    False, checked, event.seq, "prev_hash does not match the previous row's hash (reordered or removed rows)"
                )
            if event.compute_hash() != event.hash:
                return ChainReport(False, checked, event.seq, "hash does not match the row's contents (edited row)")
            prev_hash = event.hash
            expected_seq += 1
            checked += 1
        last_seq = batch[-1].seq
        if progress:
            progress(len(batch))
    return ChainReport(True, checked)
