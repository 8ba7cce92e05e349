"""Writing and verifying the audit log.

`record()` is the only writer; services use `record_action()` and `audited()` on top of it.

`record()` joins the caller's transaction, so an audit row commits or rolls back with the change
it describes. It takes no lock: on PostgreSQL it appends the row unsealed and the sealer
(audit.sealer) chains it after commit; on SQLite, whose IMMEDIATE transactions already hold the
write lock from BEGIN, it seals the row itself (`sealer.seals_inline`). The unique `seq` is a last
guard: two rows can never both take the same position.

Rows are HMACs under AUDIT_CHAIN_KEY (audit.keys). Unkeyed rows from before the key still verify,
but only before the first keyed row: an unkeyed row after it is a downgrade, i.e. a rewrite by
someone without the key. Checkpoints of the head (audit.checkpoints) catch what the chain alone
cannot: the deletion of its newest rows.
"""
import hmac
import json
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from audit import keys, sealer
from audit.models import GENESIS_HASH, AuditEvent

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


def record(action, *, principal, result=SUCCESS, target_type="", target_id="", details=None):
    """Append one row to the audit log in the current transaction (or its own).

    On PostgreSQL the row is returned unsealed (`seq`, `hash` None; `id` set): the sealer chains it
    after commit, with the key current then. Without AUDIT_CHAIN_KEY nothing is written.
    """
    details = _clean_details(details)
    algorithm, key = keys.current()  # before any write: no key, no row (ImproperlyConfigured)
    event = AuditEvent(
        time=timezone.now(),
        action=action,
        principal=str(principal)[:200],
        target_type=target_type,
        target_id=str(target_id)[:200],
        details=details,
        result=str(result),
    )
    # No savepoint when nested: an audit failure must fail the caller's whole transaction anyway,
    # and two round trips fewer matter on hot paths such as webhook ingest.
    event.write_mac = sealer.write_mac(event, algorithm, key)
    with transaction.atomic(savepoint=False):
        if sealer.seals_inline():
            sealer.chain([event], sealer.head(), algorithm, key)
        event.save()
    return event


def record_action(action, principal, target_type, target_id, result=SUCCESS, **details):
    """Record what `principal` did, with its `via` (a detail of that name wins) and `details`."""
    return record(
        action,
        principal=principal,
        result=result,
        target_type=target_type,
        target_id=target_id,
        details={"via": getattr(principal, "via", ""), **details},
    )


@contextmanager
def audited(action, principal, target_type, target_id, *, classify, message_limit=None, **details):
    """Record an error escaping the block as `classify(exc)` (`denied`, `failure`; None: not recorded), re-raise it."""
    # `audit` imports no other app: the caller's error family (with `code` and `message`) is known
    # only through `classify`. The block's transaction has rolled back: the row is written on its own.
    try:
        yield
    except Exception as exc:
        result = classify(exc)
        if result is None:
            raise
        message = exc.message if message_limit is None else exc.message[:message_limit]
        record_action(action, principal, target_type, target_id, result=result, error=exc.code, message=message,
                      **details)
        raise


@dataclass
class ChainReport:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""
    unkeyed: int = 0  # rows from before AUDIT_CHAIN_KEY (plain SHA-256)
    last_seq: int = 0  # the last row verified
    anchor_hash: str | None = None  # the hash of the row at `anchor_seq`, if the walk reached it
    pending: int = 0  # rows written but not sealed yet (not part of the chain that was verified)
    oldest_pending_age_seconds: float | None = None
    unsealable: list = field(default_factory=list)  # [(id, why)]: waiting rows that fail their write MAC


def _row_problem(event, keyed_seen, ring):
    """Why `event`'s own hash is wrong, or "" (its link to the previous row is checked by the caller)."""
    if event.algorithm == keys.LEGACY_ALGORITHM:
        if keyed_seen:
            return "unkeyed row after keyed rows: rewritten by someone without AUDIT_CHAIN_KEY (a downgrade)"
        key = None
    elif event.algorithm.startswith(keys.KEYED_PREFIX):
        try:
            key = keys.lookup(event.algorithm, ring)
        except keys.UnknownKeyError as exc:
            return str(exc)
    else:
        return f"unknown hash algorithm {event.algorithm[:40]!r}"
    if not hmac.compare_digest(event.compute_hash(key), event.hash):
        if key is None:
            return "hash does not match the row's contents (edited row)"
        return "hash does not match the row's contents under AUDIT_CHAIN_KEY (edited row, or re-hashed without the key)"
    return ""


def _write_mac_problem(event, mac_seen, ring):
    """Why a sealed row's write MAC is wrong, or "". The chain covers the content; this covers the write MAC
    itself, which rows have had since the sealer (older rows have none: none is allowed only before the first)."""
    if not event.write_mac:
        return "write MAC removed: every row after the first with one has one" if mac_seen else ""
    problem = sealer.write_mac_problem(event, ring)
    return f"write MAC check failed: {problem}" if problem else ""


def verify_chain(progress=None, batch_size=2000, anchor_seq=None):
    """Walk the whole sealed chain in seq order; report the first broken link, and how many rows
    wait to be sealed (counted before the walk: this never seals).

    `progress`, if given, is called with the number of rows checked in each batch. `anchor_seq`
    (a checkpoint's seq): the report carries the hash of that row as verified, to compare.
    """
    ring = keys.keyring()
    expected_seq = 1
    prev_hash = GENESIS_HASH
    report = ChainReport(True, 0)
    report.pending, oldest = sealer.pending()
    if oldest is not None:
        report.oldest_pending_age_seconds = max(0.0, (timezone.now() - oldest).total_seconds())
        report.unsealable = sealer.unsealable(ring)
    keyed_seen = mac_seen = False
    last_seq = 0
    while True:
        batch = list(AuditEvent.objects.filter(seq__gt=last_seq).order_by("seq")[:batch_size])
        if not batch:
            break
        for event in batch:
            if event.seq != expected_seq:
                reason = f"expected seq {expected_seq}, found {event.seq}: rows are missing"
            elif event.prev_hash != prev_hash:
                reason = "prev_hash does not match the previous row's hash (reordered or removed rows)"
            else:
                reason = _row_problem(event, keyed_seen, ring) or _write_mac_problem(event, mac_seen, ring)
            if reason:
                report.ok, report.broken_seq, report.reason = False, event.seq, reason
                return report
            keyed_seen = keyed_seen or event.algorithm != keys.LEGACY_ALGORITHM
            mac_seen = mac_seen or bool(event.write_mac)
            report.unkeyed += not keyed_seen
            if event.seq == anchor_seq:
                report.anchor_hash = event.hash
            prev_hash = event.hash
            expected_seq += 1
            report.checked += 1
            report.last_seq = event.seq
        last_seq = batch[-1].seq
        if progress:
            progress(len(batch))
    return report
