"""Upgrading a deployment: rows written before the keyed chain keep verifying, the chain goes on keyed
after them, and every trigger is in place after the migration (and after undoing it)."""
import hashlib
import json
from datetime import datetime, timezone

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from audit import services
from audit.models import GENESIS_HASH, AuditEvent
from tests.audit.helpers import TABLE

BEFORE, AFTER = ("audit", "0002_append_only_triggers"), ("audit", "0003_keyed_chain_truncate_replace_triggers")


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def _trigger_names():
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [TABLE])
        else:
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", [TABLE]
            )
        return sorted(row[0] for row in cursor.fetchall())


def _insert_old_rows(count):
    """What record() wrote before the key: plain SHA-256, and no algorithm column yet."""
    prev = GENESIS_HASH
    with connection.cursor() as cursor:
        for seq in range(1, count + 1):
            time = datetime(2026, 1, 1, 12, 0, seq, tzinfo=timezone.utc)
            fields = {"seq": seq, "time": time.isoformat(timespec="microseconds"), "action": "old.action",
                      "principal": "system:old", "target_type": "", "target_id": str(seq), "details": {"n": seq},
                      "result": "success"}
            payload = json.dumps(fields, sort_keys=True, separators=(",", ":"))
            digest = hashlib.sha256(f"{prev}:{payload}".encode()).hexdigest()
            cursor.execute(
                f"INSERT INTO {TABLE} (seq, time, action, principal, target_type, target_id, details, result, "
                "prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [seq, time, "old.action", "system:old", "", str(seq), json.dumps({"n": seq}), "success", prev, digest],
            )
            prev = digest


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_keeps_old_rows_verifiable_and_every_trigger_in_place():
    first_triggers = {"sqlite": ["audit_no_delete", "audit_no_update"], "postgresql": ["audit_no_update_delete"]}
    added = {"sqlite": ["audit_no_replace"], "postgresql": ["audit_no_truncate"]}
    try:
        _migrate(BEFORE)
        assert _trigger_names() == first_triggers[connection.vendor]
        _insert_old_rows(3)

        _migrate(AFTER)
        assert _trigger_names() == sorted(first_triggers[connection.vendor] + added[connection.vendor])
        assert list(AuditEvent.objects.values_list("algorithm", flat=True)) == ["sha256"] * 3
        services.record("after.upgrade", principal="system:tests")
        report = services.verify_chain()
        assert (report.ok, report.checked, report.unkeyed) == (True, 4, 3)
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"UPDATE {TABLE} SET action = 'x' WHERE seq = 1")

        _migrate(BEFORE)  # undoing it leaves the first triggers, as 0002 made them
        assert _trigger_names() == first_triggers[connection.vendor]
    finally:
        _migrate(AFTER)
