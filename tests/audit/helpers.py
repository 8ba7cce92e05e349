"""Shared by the audit tests: rows with varied fields, an attacker with DDL rights, and verify_audit
as an operator runs it."""
import hashlib
import hmac
import json
from datetime import datetime, timezone
from io import StringIO

from django.core.management import call_command
from django.db import connection

from audit import sealer, services, triggers
from audit.models import AuditEvent

TABLE = triggers.TABLE


def record_rows(count, start=1, *, sealed=True):
    """`count` rows with varied fields, including details that need JSON encoding; sealed (as the
    sealer does after commit) unless told not to, and returned as the database then holds them."""
    events = []
    for i in range(start, start + count):
        events.append(
            services.record(
                f"test.action{i % 3}",
                principal=f"user:person{i}",
                result=[services.SUCCESS, services.FAILURE, services.DENIED][i % 3],
                target_type="connector",
                target_id=f"conn_{i}",
                details={"via": "test", "n": i, "at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)},
            )
        )
    if not sealed:
        return events
    seal()
    by_id = AuditEvent.objects.in_bulk([e.id for e in events])
    return [by_id[e.id] for e in events]


def seal():
    """What the periodic sealer does after commit (on SQLite record() has sealed already: 0)."""
    return sealer.seal_pending()


def tamper(*statements):
    """An attacker with DDL rights: lift the triggers, change rows in SQL, put the triggers back."""
    triggers.remove(connection)
    try:
        with connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
    finally:
        triggers.install(connection)


def verify_audit(*args):
    """stdout of `manage.py verify_audit`; a failure raises CommandError."""
    out, err = StringIO(), StringIO()
    call_command("verify_audit", *args, stdout=out, stderr=err)
    return out.getvalue()


# --- the documented hash, re-implemented here with hashlib/hmac only (no import of audit.models.compute_hash) ---
# README, "Keyed chain": each row's `hash` is an HMAC-SHA256 under AUDIT_CHAIN_KEY over the row, its key id and the
# previous row's hash; rows from before the key are plain SHA-256 (`algorithm` = `sha256`). "Rotating the audit chain
# key": the key id is an HMAC of a constant under the key, 8 hex digits. The row is its content columns as canonical
# JSON (sorted keys, no spaces, `time` in ISO 8601 with microseconds); `prev_hash` and the algorithm come before it.
KEY_ID_CONSTANT = b"brain-connectors audit chain key id"
HASHED_COLUMNS = ("seq", "time", "action", "principal", "target_type", "target_id", "details", "result")


def documented_key_id(key: str) -> str:
    return hmac.new(key.encode(), KEY_ID_CONSTANT, hashlib.sha256).hexdigest()[:8]


def documented_algorithm(key: str) -> str:
    return "hmac-sha256:" + documented_key_id(key)


def canonical_row(row, **override) -> str:
    """The row's hashed columns as canonical JSON. `details` is stored JSON already, so plain json.dumps serves."""
    content = {column: getattr(row, column) for column in HASHED_COLUMNS} | override
    content["time"] = row.time.isoformat(timespec="microseconds")
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


def plain_sha256(prev_hash, row):
    """The unkeyed hash of a row as anyone can compute it from the published format (rows from before the chain
    was keyed); also what an attacker with only the database would run."""
    return hashlib.sha256(f"{prev_hash}:{canonical_row(row)}".encode()).hexdigest()


def keyed_hmac(key: str, prev_hash, row, algorithm=None):
    """The keyed hash of a row under `key`: HMAC-SHA256 over "<prev_hash>:<algorithm>:<canonical row>"."""
    algorithm = algorithm or documented_algorithm(key)
    return hmac.new(key.encode(), f"{prev_hash}:{algorithm}:{canonical_row(row)}".encode(), hashlib.sha256).hexdigest()


def keyed_write_mac(key: str, row):
    """The write MAC record() gives a row ("<key id>:<HMAC of its content>", the model's help text): the keyed
    hash with "write" for the previous hash and no seq, so it can never equal a chain hash."""
    algorithm = documented_algorithm(key)
    payload = canonical_row(row, seq=None)
    mac = hmac.new(key.encode(), f"write:{algorithm}:{payload}".encode(), hashlib.sha256).hexdigest()
    return f"{documented_key_id(key)}:{mac}"


def expected_hash(row, prev_hash, key: str):
    """What `row.hash` must be, by its own `algorithm` (sha256, or keyed under `key`)."""
    return plain_sha256(prev_hash, row) if row.algorithm == "sha256" else keyed_hmac(key, prev_hash, row, row.algorithm)


def rewrite_from(seq, changes, *, algorithm=None, until=None):
    """An attacker with only the database: change row `seq`, then recompute every later row's hash
    (up to row `until`, by default the last) and prev_hash with plain SHA-256 so that the chain links
    again. `algorithm`, if given, is also written to each rewritten row (to pose as a row from before
    the chain was keyed, and then without a write MAC, as such rows are)."""
    rows = list(AuditEvent.objects.filter(seq__gte=seq, seq__lte=until or 2**62).order_by("seq"))
    prev = AuditEvent.objects.filter(seq=seq - 1).values_list("hash", flat=True).first() or "0" * 64
    statements = []
    for row in rows:
        if row.seq == seq:
            for column, value in changes.items():
                setattr(row, column, value)
        new_hash = plain_sha256(prev, row)
        sets = {**({k: row.__dict__[k] for k in changes} if row.seq == seq else {}), "prev_hash": prev}
        if algorithm is not None:
            sets["algorithm"] = algorithm
        if algorithm == "sha256":
            sets["write_mac"] = None  # unkeyed rows predate write MACs: posing as one means dropping it
        assignments = ", ".join(f"{column} = %s" for column in sets)
        values = [json.dumps(v) if isinstance(v, dict) else v for v in sets.values()]
        statements.append((f"UPDATE {TABLE} SET {assignments}, hash = %s WHERE seq = %s", [*values, new_hash, row.seq]))
        prev = new_hash
    tamper(*statements)
