"""Shared by the audit tests: rows with varied fields, an attacker with DDL rights, and verify_audit
as an operator runs it."""
import hashlib
import json
from datetime import datetime, timezone
from io import StringIO

from django.core.management import call_command
from django.core.serializers.json import DjangoJSONEncoder
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


def plain_sha256(prev_hash, row):
    """The unkeyed hash of a row as anyone can compute it from the published format (what
    `compute_hash` was before the chain was keyed): written out here, not imported, because it is
    what an attacker with only the database would run."""
    payload = json.dumps(
        {
            "seq": row.seq,
            "time": row.time.isoformat(timespec="microseconds"),
            "action": row.action,
            "principal": row.principal,
            "target_type": row.target_type,
            "target_id": row.target_id,
            "details": row.details,
            "result": row.result,
        },
        sort_keys=True,
        separators=(",", ":"),
        cls=DjangoJSONEncoder,
    )
    return hashlib.sha256(f"{prev_hash}:{payload}".encode()).hexdigest()


def rewrite_from(seq, changes, *, algorithm=None, until=None):
    """An attacker with only the database: change row `seq`, then recompute every later row's hash
    (up to row `until`, by default the last) and prev_hash with plain SHA-256 so that the chain links
    again. `algorithm`, if given, is also written to each rewritten row (to pose as a row from before
    the chain was keyed)."""
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
        assignments = ", ".join(f"{column} = %s" for column in sets)
        values = [json.dumps(v) if isinstance(v, dict) else v for v in sets.values()]
        statements.append((f"UPDATE {TABLE} SET {assignments}, hash = %s WHERE seq = %s", [*values, new_hash, row.seq]))
        prev = new_hash
    tamper(*statements)
