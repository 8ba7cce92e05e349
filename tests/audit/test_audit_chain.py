"""The audit log: a hash chain that is append-only in the ORM and in SQL, and whose tampering
`manage.py verify_audit` finds and names."""

import re

import pytest
from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from audit import checkpoints, services
from audit.models import GENESIS_HASH, AppendOnlyError, AuditEvent
from tests.audit.helpers import (
    TABLE,
    documented_algorithm,
    expected_hash,
    keyed_hmac,
    keyed_write_mac,
    seal,
    verify_audit,
)
from tests.audit.helpers import record_rows as _record_rows
from tests.audit.helpers import tamper as _tamper
from tests.concurrency import run_at_once


def _assert_linked_chain(rows):
    """Every row follows the previous one: seq without gaps, prev_hash linking, own hash valid."""
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    prev = GENESIS_HASH
    for row in rows:
        assert row.prev_hash == prev, f"row {row.seq} does not link to row {row.seq - 1}"
        assert row.hash == expected_hash(row, prev, settings.AUDIT_CHAIN_KEY), f"row {row.seq}: hash is not its contents"
        prev = row.hash
    assert len({r.hash for r in rows}) == len(rows)
    assert len({r.prev_hash for r in rows}) == len(rows), "two rows share a parent: the chain forked"


def _verify_audit():
    """The chain alone: these tests are about the chain; tests/audit/test_audit_checkpoints.py adds
    the checkpoint."""
    return verify_audit("--without-checkpoint")


def _broken_at(message, seq):
    return re.search(rf"\bbroken at seq {seq}\b:", message) is not None


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_record_builds_a_valid_chain():
    events = _record_rows(7)

    rows = list(AuditEvent.objects.order_by("seq"))
    assert len(rows) == 7
    assert rows[0].prev_hash == GENESIS_HASH
    _assert_linked_chain(rows)
    # What record() returned is what the database holds, and the stored details are what was hashed.
    assert [e.hash for e in events] == [r.hash for r in rows]
    assert rows[2].details == {"via": "test", "n": 3, "at": "2026-01-02T03:04:05.678Z"}
    # The documented form, computed in the test: HMAC-SHA256 under the key over prev hash, key id and the row.
    assert {r.algorithm for r in rows} == {documented_algorithm(settings.AUDIT_CHAIN_KEY)}
    assert (rows[2].seq, rows[2].action, rows[2].principal, rows[2].target_id) == (3, "test.action0", "user:person3", "conn_3")
    assert rows[2].hash == keyed_hmac(settings.AUDIT_CHAIN_KEY, rows[1].hash, rows[2])

    report = services.verify_chain()
    assert (report.ok, report.checked, report.broken_seq) == (True, 7, None)


@pytest.mark.django_db
def test_verify_chain_walks_across_batches():
    _record_rows(5)
    batches = []
    report = services.verify_chain(progress=batches.append, batch_size=2)
    assert report.ok and report.checked == 5
    assert batches == [2, 2, 1]


@pytest.mark.django_db
def test_record_joins_the_callers_transaction():
    services.record("kept", principal="system:tests")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        services.record("rolled.back", principal="system:tests")
        raise Boom

    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["kept"]
    # The rolled-back row left no hole: the next row takes seq 2 and links to row 1.
    services.record("after", principal="system:tests")
    seal()
    _assert_linked_chain(list(AuditEvent.objects.all()))


FORBIDDEN = ["content", "text", "body", "credentials", "token", "password", "secret", "bot_token", "auth_token"]


@pytest.mark.django_db
@pytest.mark.parametrize("key", FORBIDDEN)
def test_details_refuse_forbidden_keys(key):
    with pytest.raises(ValueError, match=key):
        services.record("test.leak", principal="system:tests", details={"via": "test", key: "s3cr3t-value"})
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["token", "credentials", "content"])
def test_details_refuse_forbidden_keys_nested_inside_other_values(key):
    """The log is append-only: a secret that slipped in could never be removed again."""
    for details in ({"request": {key: "s3cr3t-value"}}, {"items": [{"ok": 1}, {key: "s3cr3t-value"}]}):
        with pytest.raises(ValueError, match=key):
            services.record("test.leak", principal="system:tests", details=details)
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_details_may_mention_forbidden_words_as_values():
    event = services.record("connector.update", principal="system:tests", details={"fields": ["credentials", "config"]})
    assert AuditEvent.objects.get(seq=event.seq).details == {"fields": ["credentials", "config"]}


# --- append-only in the ORM ------------------------------------------------------------------


@pytest.mark.django_db
def test_orm_refuses_updates_and_deletes():
    _record_rows(3)
    before = list(AuditEvent.objects.values_list("seq", "action", "hash"))
    event = AuditEvent.objects.get(seq=2)

    event.action = "tampered"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.save(update_fields=["action"])
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update([event], ["action"])
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq=2).update(action="tampered")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.update(action="tampered")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq=2).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.update_or_create(seq=2, defaults={"action": "tampered"})

    assert list(AuditEvent.objects.values_list("seq", "action", "hash")) == before
    assert services.verify_chain().ok


@pytest.mark.django_db
def test_bulk_create_upsert_cannot_overwrite_a_row():
    """An INSERT … ON CONFLICT DO UPDATE is an update too: the database triggers refuse it."""
    _record_rows(2)
    original = AuditEvent.objects.get(seq=2)
    forged = AuditEvent(
        seq=2,
        time=original.time,
        action="tampered",
        principal=original.principal,
        result=original.result,
        prev_hash=original.prev_hash,
        hash="f" * 64,
    )
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.bulk_create(
            [forged], update_conflicts=True, unique_fields=["seq"], update_fields=["action", "hash"]
        )
    assert AuditEvent.objects.get(seq=2).action == original.action


# --- append-only in SQL ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        f"UPDATE {TABLE} SET action = 'tampered' WHERE seq = 2",
        f"UPDATE {TABLE} SET details = '{{}}'",
        f"DELETE FROM {TABLE} WHERE seq = 2",
        f"DELETE FROM {TABLE}",
    ],
    ids=["update-one", "update-all", "delete-one", "delete-all"],
)
def test_database_triggers_refuse_raw_sql_update_and_delete(sql):
    assert connection.vendor in {"sqlite", "postgresql"}, "no append-only triggers exist for this database"
    _record_rows(3)
    before = list(AuditEvent.objects.values_list("seq", "action", "details", "hash"))

    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)

    assert list(AuditEvent.objects.values_list("seq", "action", "details", "hash")) == before
    assert services.verify_chain().ok


@pytest.mark.django_db
def test_triggers_can_be_lifted_and_put_back():
    """The helper the tampering tests rely on really removes and restores the protection."""
    _record_rows(2)
    _tamper((f"UPDATE {TABLE} SET action = %s WHERE seq = 2", ["lifted"]))
    assert AuditEvent.objects.get(seq=2).action == "lifted"
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"UPDATE {TABLE} SET action = 'again' WHERE seq = 2")


# --- verify_audit ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_verify_audit_passes_on_an_intact_chain():
    _record_rows(6)
    assert "Audit chain intact: 6 rows verified." in _verify_audit()


@pytest.mark.django_db
def test_verify_audit_passes_on_an_empty_log():
    assert "Audit chain intact: 0 rows verified." in _verify_audit()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "column, value",
    [
        ("action", "tampered"),
        ("principal", "user:mallory"),
        ("result", "success"),
        ("target_id", "other"),
        ("details", '{"via": "test", "n": 999}'),
    ],
)
def test_verify_audit_fails_on_an_edited_row(column, value):
    _record_rows(6)
    _tamper((f"UPDATE {TABLE} SET {column} = %s WHERE seq = 4", [value]))

    report = services.verify_chain()
    assert (report.ok, report.broken_seq, report.checked) == (False, 4, 3)
    with pytest.raises(CommandError) as exc:
        _verify_audit()
    assert _broken_at(str(exc.value), 4), str(exc.value)
    assert "edited" in str(exc.value)


@pytest.mark.django_db
def test_verify_audit_fails_on_an_edited_row_whose_hash_was_recomputed():
    """Even with the key, rewriting a row's own hash and write MAC moves the break to the next row, which still
    links to the old one (re-chaining all later rows too is what the checkpoints catch)."""
    _record_rows(6)
    row = AuditEvent.objects.get(seq=3)
    row.action = "tampered"
    key = settings.AUDIT_CHAIN_KEY
    _tamper((f"UPDATE {TABLE} SET action = %s, hash = %s, write_mac = %s WHERE seq = 3",
             ["tampered", keyed_hmac(key, row.prev_hash, row), keyed_write_mac(key, row)]))

    with pytest.raises(CommandError) as exc:
        _verify_audit()
    assert _broken_at(str(exc.value), 4), str(exc.value)


@pytest.mark.django_db
@pytest.mark.parametrize("deleted, broken", [(1, 2), (3, 4), (5, 6)])
def test_verify_audit_fails_on_a_deleted_row(deleted, broken):
    _record_rows(6)
    _tamper((f"DELETE FROM {TABLE} WHERE seq = %s", [deleted]))

    with pytest.raises(CommandError) as exc:
        _verify_audit()
    message = str(exc.value)
    assert _broken_at(message, broken), message
    assert f"expected seq {deleted}" in message and "missing" in message


@pytest.mark.django_db
def test_verify_audit_fails_on_a_reordered_chain():
    _record_rows(6)
    # Swap rows 3 and 4 (through a free seq, since seq is the primary key).
    _tamper(
        (f"UPDATE {TABLE} SET seq = %s WHERE seq = %s", [-1, 3]),
        (f"UPDATE {TABLE} SET seq = %s WHERE seq = %s", [3, 4]),
        (f"UPDATE {TABLE} SET seq = %s WHERE seq = %s", [4, -1]),
    )
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [1, 2, 3, 4, 5, 6]

    with pytest.raises(CommandError) as exc:
        _verify_audit()
    message = str(exc.value)
    assert _broken_at(message, 3), message
    assert "reordered" in message


@pytest.mark.slow
def test_verify_audit_command_in_a_subprocess(manage):
    _record_rows(5)
    checkpoints.write()
    done = manage("verify_audit")
    assert done.returncode == 0, done.stderr
    assert "Audit chain intact: 5 rows verified." in done.stdout

    _tamper((f"UPDATE {TABLE} SET target_id = %s WHERE seq = 2", ["forged"]))
    done = manage("verify_audit", "--without-checkpoint")
    assert done.returncode != 0
    assert "CommandError" in done.stderr and _broken_at(done.stderr, 2), done.stderr
    # The triggers are back for the real database too.
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {TABLE} WHERE seq = 1")


# --- concurrent writers ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_unbroken_chain():
    threads_count, per_thread = 8, 12

    def writer(n):
        for i in range(per_thread):
            services.record(
                "test.concurrent", principal=f"system:writer{n}", target_id=f"{n}:{i}", details={"writer": n, "i": i}
            )

    _, errors = run_at_once(writer, threads_count, timeout=120)
    assert errors == []
    seal()

    rows = list(AuditEvent.objects.order_by("seq"))
    assert len(rows) == threads_count * per_thread
    _assert_linked_chain(rows)
    assert sorted(r.target_id for r in rows) == sorted(
        f"{n}:{i}" for n in range(threads_count) for i in range(per_thread)
    )
    # Each writer's own rows are in its order.
    for n in range(threads_count):
        assert [r.details["i"] for r in rows if r.details["writer"] == n] == list(range(per_thread))
    report = services.verify_chain()
    assert report.ok and report.checked == threads_count * per_thread
