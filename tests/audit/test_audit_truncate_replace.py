"""The ways around the row triggers: TRUNCATE on PostgreSQL (it fires no row trigger) and INSERT OR
REPLACE on SQLite (its implicit delete fires no delete trigger). Both are refused now; the test
harness's own flush still empties the table between transactional tests."""
import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from audit import services
from audit.models import AuditEvent
from tests.audit.helpers import TABLE, record_rows

COLUMNS = "seq, time, action, principal, target_type, target_id, details, result, prev_hash, hash, algorithm"


def _snapshot():
    return list(AuditEvent.objects.values_list("seq", "action", "principal", "prev_hash", "hash"))


def _refused(sql, params=()):
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)


def _copy_of(source, **changes):
    """A full row, as an attacker would write it in SQL: row `source`'s values with `changes`."""
    row = AuditEvent.objects.filter(seq=source).values(*[c.strip() for c in COLUMNS.split(",")]).get()
    row.update(changes)
    row["details"] = '{"forged": true}'
    return list(row.values())


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        f"TRUNCATE {TABLE}",
        f"TRUNCATE TABLE ONLY {TABLE} RESTART IDENTITY",
        f"TRUNCATE {TABLE} CASCADE",
        f"TRUNCATE django_session, {TABLE}",
    ],
    ids=["plain", "only-restart-identity", "cascade", "with-another-table"],
)
def test_postgresql_refuses_truncate(sql):
    record_rows(4)
    before = _snapshot()
    _refused(sql)
    assert _snapshot() == before
    assert services.verify_chain().ok


@pytest.mark.django_db
@pytest.mark.parametrize("verb", ["INSERT OR REPLACE", "REPLACE"])
def test_sqlite_refuses_to_replace_a_row_with_the_same_seq(verb):
    if connection.vendor != "sqlite":
        pytest.skip("INSERT OR REPLACE is SQLite's")
    record_rows(4)
    before = _snapshot()
    placeholders = ", ".join(["%s"] * len(COLUMNS.split(",")))
    _refused(f"{verb} INTO {TABLE} ({COLUMNS}) VALUES ({placeholders})", _copy_of(2, action="tampered"))
    assert _snapshot() == before
    assert services.verify_chain().ok


@pytest.mark.django_db
def test_sqlite_refuses_a_replace_that_would_evict_a_row_through_its_unique_hash():
    """A new seq with an existing row's hash: REPLACE would silently delete that row to make room."""
    if connection.vendor != "sqlite":
        pytest.skip("INSERT OR REPLACE is SQLite's")
    record_rows(4)
    before = _snapshot()
    placeholders = ", ".join(["%s"] * len(COLUMNS.split(",")))
    _refused(f"INSERT OR REPLACE INTO {TABLE} ({COLUMNS}) VALUES ({placeholders})", _copy_of(2, seq=99))
    assert _snapshot() == before


@pytest.mark.django_db
def test_an_upsert_in_sql_is_an_update_and_is_refused():
    """INSERT … ON CONFLICT DO UPDATE (PostgreSQL, SQLite) goes through the update trigger."""
    record_rows(3)
    before = _snapshot()
    placeholders = ", ".join(["%s"] * len(COLUMNS.split(",")))
    _refused(
        f"INSERT INTO {TABLE} ({COLUMNS}) VALUES ({placeholders}) "
        "ON CONFLICT (seq) DO UPDATE SET action = 'tampered', hash = excluded.hash",
        _copy_of(2, hash="f" * 64),
    )
    assert _snapshot() == before


@pytest.mark.django_db
def test_appending_a_new_row_is_still_allowed():
    """The replace guard looks for an existing seq or hash only: an ordinary append passes it."""
    record_rows(2)
    services.record("after.guard", principal="system:tests")
    assert AuditEvent.objects.count() == 3 and services.verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_the_test_harness_flush_empties_the_log_and_leaves_every_trigger_in_place():
    """Transactional tests end with a flush (TRUNCATE on PostgreSQL, DELETE on SQLite): tests/conftest.py
    lifts the triggers for the flush only. Production's `manage.py flush` is refused, as it should be."""
    record_rows(3)
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists()

    record_rows(2)
    _refused(f"DELETE FROM {TABLE}")
    if connection.vendor == "postgresql":
        _refused(f"TRUNCATE {TABLE}")
    else:
        placeholders = ", ".join(["%s"] * len(COLUMNS.split(",")))
        _refused(f"INSERT OR REPLACE INTO {TABLE} ({COLUMNS}) VALUES ({placeholders})", _copy_of(1, action="x"))
    assert AuditEvent.objects.count() == 2


@pytest.mark.slow
def test_manage_py_flush_is_refused_outside_the_test_harness(manage):
    """`manage.py flush` empties every table, the audit log included: the triggers refuse it, and the
    whole flush rolls back."""
    record_rows(2)
    done = manage("flush", "--no-input", "--traceback")  # flush's own message hides the cause
    assert done.returncode != 0 and "couldn't be flushed" in done.stderr, done.stderr
    assert "audit log is append-only" in done.stderr
    assert AuditEvent.objects.count() == 2
