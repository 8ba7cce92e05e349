"""Upgrading a deployment: rows written before the keyed chain keep verifying, the chain goes on keyed
after them, rows from before the sealer keep their seq (and get id = seq), and every trigger is in
place after each migration (and after undoing it)."""
import hashlib
import json
from datetime import datetime, timezone

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from audit import services
from audit.models import GENESIS_HASH, AuditEvent
from tests.audit.helpers import TABLE, seal

BEFORE, AFTER = ("audit", "0002_append_only_triggers"), ("audit", "0003_keyed_chain_truncate_replace_triggers")
LATEST = ("audit", "0004_sealed_chain")
FIRST_TRIGGERS = {"sqlite": ["audit_no_delete", "audit_no_update"], "postgresql": ["audit_no_update_delete"]}
ADDED = {"sqlite": ["audit_no_replace"], "postgresql": ["audit_no_truncate"]}


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


def _column(sql):
    """Raw SQL: between migrations the model does not describe the table."""
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]


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
    try:
        _migrate(BEFORE)
        assert _trigger_names() == FIRST_TRIGGERS[connection.vendor]
        _insert_old_rows(3)

        _migrate(AFTER)
        assert _trigger_names() == sorted(FIRST_TRIGGERS[connection.vendor] + ADDED[connection.vendor])
        assert _column(f"SELECT algorithm FROM {TABLE} ORDER BY seq") == ["sha256"] * 3

        _migrate(LATEST)
        services.record("after.upgrade", principal="system:tests")
        seal()
        report = services.verify_chain()
        assert (report.ok, report.checked, report.unkeyed) == (True, 4, 3)
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"UPDATE {TABLE} SET action = 'x' WHERE seq = 1")

        _migrate(BEFORE)  # undoing both leaves the first triggers, as 0002 made them
        assert _trigger_names() == FIRST_TRIGGERS[connection.vendor]
    finally:
        _migrate(LATEST)


@pytest.mark.django_db(transaction=True)
def test_the_sealer_migration_gives_old_rows_id_equal_to_seq_and_puts_every_trigger_back():
    try:
        _migrate(BEFORE)
        _insert_old_rows(3)
        _migrate(AFTER)

        _migrate(LATEST)
        assert list(AuditEvent.objects.values_list("id", "seq")) == [(1, 1), (2, 2), (3, 3)]
        assert _trigger_names() == sorted(FIRST_TRIGGERS[connection.vendor] + ADDED[connection.vendor])
        new = services.record("after.sealer", principal="system:tests")
        assert new.id == 4, "the id sequence starts past the copied rows"
        seal()
        assert AuditEvent.objects.get(id=4).seq == 4
        assert services.verify_chain().checked == 4
        for sql in (f"UPDATE {TABLE} SET action = 'x' WHERE seq = 4", f"DELETE FROM {TABLE} WHERE seq = 1"):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql)

        _migrate(AFTER)  # undone: seq is the key again, every row kept
        assert _column(f"SELECT seq FROM {TABLE} ORDER BY seq") == [1, 2, 3, 4]
        assert _trigger_names() == sorted(FIRST_TRIGGERS[connection.vendor] + ADDED[connection.vendor])
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"UPDATE {TABLE} SET action = 'x' WHERE seq = 4")
    finally:
        _migrate(LATEST)
