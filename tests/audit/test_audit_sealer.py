"""The sealer: writers append audit rows without a lock, and `seal_pending` chains the committed ones.

On PostgreSQL record() appends rows unsealed. On SQLite it seals them itself; the `deferred`
fixture makes it append them unsealed there too, so that the sealer and the triggers that let
sealing (and nothing else) through are proven on both databases.
"""
import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import checkpoints, keys, sealer, services, tasks
from audit.models import AppendOnlyError, AuditEvent
from tests.audit.helpers import TABLE, record_rows, seal, tamper, verify_audit
from tests.concurrency import run_at_once

ON_POSTGRES = django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
postgres_only = pytest.mark.skipif(
    not ON_POSTGRES,
    reason="PostgreSQL only: SQLite seals in the writer's own transaction (nothing waits unsealed between "
    "connections) and has no advisory locks",
)
# The chain's old global lock, which record() and the event log took until commit before the sealer
# and the sequencer (no code takes it now; a test shows nothing waits on it).
OLD_CHAIN_LOCK_KEY = 7_310_424_117_301


@pytest.fixture
def deferred(monkeypatch):
    """record() appends unsealed rows, as on PostgreSQL, whatever the database."""
    monkeypatch.setattr(sealer, "seals_inline", lambda conn=None: False)


def _unsealed(count, start=1):
    return record_rows(count, start=start, sealed=False)


def _refused(sql, params=()):
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)


def _seal_sql(row_id, seq=1, **content):
    """A hand-written sealing UPDATE of row `row_id`, optionally changing `content` columns too."""
    sets = {"seq": seq, "prev_hash": "0" * 64, "hash": "a" * 64, "algorithm": "hmac-sha256:x", **content}
    return f"UPDATE {TABLE} SET {', '.join(f'{c} = %s' for c in sets)} WHERE id = %s", [*sets.values(), row_id]


# --- PostgreSQL: appended unsealed, sealed in commit-visibility order ------------------------


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db
def test_rows_are_appended_unsealed_and_sealed_in_id_order():
    events = _unsealed(3)
    assert [(e.seq, e.prev_hash, e.hash, e.algorithm) for e in events] == [(None, None, None, None)] * 3
    assert services.verify_chain().pending == 3

    assert seal() == 3
    rows = list(AuditEvent.objects.order_by("id"))
    assert [r.seq for r in rows] == [1, 2, 3] and [r.id for r in rows] == [e.id for e in events]
    report = services.verify_chain()
    assert (report.ok, report.checked, report.pending) == (True, 3, 0)
    assert seal() == 0


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_row_of_an_open_transaction_is_sealed_only_after_it_commits_with_a_later_seq():
    written, release = threading.Event(), threading.Event()

    def late_writer():
        try:
            with transaction.atomic():
                services.record("late.commit", principal="system:tests")
                written.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=late_writer)
    thread.start()
    try:
        assert written.wait(30)
        services.record("early.commit", principal="system:tests")
        assert seal() == 1, "the sealer must not wait for, nor seal past, the open transaction"
        assert AuditEvent.objects.get(action="early.commit").seq == 1
    finally:
        release.set()
        thread.join(30)

    assert seal() == 1
    late, early = AuditEvent.objects.get(action="late.commit"), AuditEvent.objects.get(action="early.commit")
    assert late.id < early.id and (early.seq, late.seq) == (1, 2)
    assert late.prev_hash == early.hash
    report = services.verify_chain()
    assert (report.ok, report.checked, report.pending) == (True, 2, 0)


def _hold_locks(keys, held, release):
    """In a thread of its own: hold the advisory locks `keys` in an open transaction until released."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for key in keys:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            held.set()
            release.wait(30)
    finally:
        connection.close()


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_record_takes_no_lock_and_a_busy_sealer_lock_makes_another_sealer_return_at_once():
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_locks, args=([OLD_CHAIN_LOCK_KEY, sealer.SEALER_LOCK_KEY], held, release))
    holder.start()
    try:
        assert held.wait(30)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")  # a lock wait would fail here, not hang
            services.record("while.locked", principal="system:tests")
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            assert cursor.fetchone()[0] == 0, "record() took an advisory lock"
        assert seal() == 0, "another sealer holds the lock: this one leaves the rows to it"
        assert AuditEvent.objects.get(action="while.locked").seq is None
    finally:
        release.set()
        holder.join(30)
    assert seal() == 1 and AuditEvent.objects.get(action="while.locked").seq == 1


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_sealers_and_writers_never_double_assign_a_seq():
    writers, per_writer = 4, 15

    def work(n):
        if n < writers:
            for i in range(per_writer):
                services.record("test.concurrent", principal=f"system:writer{n}", target_id=f"{n}:{i}")
            return 0
        return sum(sealer.seal_pending(batch_size=4) for _ in range(10))

    results, errors = run_at_once(work, writers + 4, timeout=120)
    assert errors == []
    sealed_after = seal()
    assert sum(results) + sealed_after == writers * per_writer, "every row sealed exactly once"
    seqs = sorted(AuditEvent.objects.values_list("seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 1))
    report = services.verify_chain()
    assert (report.ok, report.checked, report.pending) == (True, writers * per_writer, 0)


# --- both databases: the sealer, and the triggers that let only sealing through ------------


@pytest.mark.django_db
def test_sqlite_seals_inline_and_postgresql_defers():
    assert sealer.seals_inline() is (connection.vendor != "postgresql")


@pytest.mark.django_db
def test_seal_pending_seals_in_batches(deferred):
    _unsealed(5)
    assert sealer.seal_pending(batch_size=2) == 5
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [1, 2, 3, 4, 5]
    assert services.verify_chain().checked == 5


@pytest.mark.django_db
def test_the_sealer_hashes_with_the_key_current_when_it_seals(deferred, settings):
    old_key, new_key = "o" * 40, "n" * 40
    settings.AUDIT_CHAIN_KEY = old_key
    _unsealed(2)
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_PREVIOUS_KEYS = new_key, [old_key]
    seal()
    assert set(AuditEvent.objects.values_list("algorithm", flat=True)) == {keys.algorithm_for(new_key)}
    assert services.verify_chain().ok


@pytest.mark.django_db
def test_record_still_refuses_to_write_without_a_key(deferred, settings):
    settings.AUDIT_CHAIN_KEY = ""
    with pytest.raises(ImproperlyConfigured, match="AUDIT_CHAIN_KEY"):
        services.record("no.key", principal="system:tests")
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "column, value",
    [("action", "tampered"), ("principal", "user:mallory"), ("target_type", "x"), ("target_id", "other"),
     ("details", '{"forged": true}'), ("result", "denied"), ("time", "2020-01-01 00:00:00+00:00"), ("id", 999),
     ("write_mac", "0badc0de:" + "f" * 64)],
)
def test_sealing_that_changes_a_rows_content_is_refused(deferred, column, value):
    [row] = _unsealed(1)
    _refused(*_seal_sql(row.id, **{column: value}))
    assert AuditEvent.objects.get(id=row.id).seq is None
    assert seal() == 1 and services.verify_chain().ok


@pytest.mark.django_db
def test_a_sealed_row_can_never_be_updated_again(deferred):
    [row] = _unsealed(1)
    seal()
    _refused(*_seal_sql(row.id, seq=7))  # re-sealing
    _refused(f"UPDATE {TABLE} SET seq = NULL, prev_hash = NULL, hash = NULL, algorithm = NULL WHERE id = %s",
             [row.id])  # unsealing, to seal it again
    _refused(f"UPDATE {TABLE} SET hash = %s WHERE id = %s", ["b" * 64, row.id])
    assert services.verify_chain().checked == 1


@pytest.mark.django_db
def test_a_half_seal_and_deleting_an_unsealed_row_are_refused(deferred):
    [row] = _unsealed(1)
    _refused(f"UPDATE {TABLE} SET seq = 1 WHERE id = %s", [row.id])  # seq without its hash
    _refused(f"DELETE FROM {TABLE} WHERE id = %s", [row.id])
    assert AuditEvent.objects.filter(id=row.id, seq__isnull=True).exists()


@pytest.mark.django_db
def test_the_orm_refuses_to_seal_or_change_unsealed_rows(deferred):
    [row] = _unsealed(1)
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq__isnull=True).update(seq=1)
    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(id=row.id).delete()


@pytest.mark.django_db
def test_sealed_rows_are_not_resealed_and_new_ones_follow_the_head(deferred):
    first = _unsealed(2)
    seal()
    second = _unsealed(2, start=3)
    assert seal() == 2
    rows = list(AuditEvent.objects.all())  # the chain's order: seq
    assert [r.id for r in rows] == [e.id for e in first + second] and [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[2].prev_hash == rows[1].hash


# --- rows that record() did not write are never sealed ---------------------------------------


def _forge(mac_key=None, **content):
    """A row inserted in SQL by someone with only the database: no write MAC, or one under `mac_key`."""
    row = AuditEvent(time=timezone.now(), action="forged.entry", principal="user:mallory", result="success",
                     **content)
    if mac_key:
        row.write_mac = sealer.write_mac(row, keys.algorithm_for(mac_key), mac_key.encode())
    row.save()
    return row


@pytest.mark.django_db
@pytest.mark.parametrize("mac_key", [None, "m" * 40], ids=["no-write-mac", "write-mac-under-another-key"])
def test_a_row_inserted_outside_record_is_never_sealed_and_fails_verify_audit(deferred, mac_key, caplog):
    _unsealed(1)
    forged = _forge(mac_key)
    _unsealed(1, start=2)  # written after the forged row: not held up by it

    assert seal() == 2
    assert AuditEvent.objects.get(id=forged.id).seq is None
    assert f"audit row id {forged.id} is not sealed" in caplog.text
    report = services.verify_chain()
    assert (report.ok, report.checked, report.pending) == (True, 2, 1)
    assert [row_id for row_id, _ in report.unsealable] == [forged.id]
    with pytest.raises(CommandError, match=f"Audit row id {forged.id}, waiting to be sealed, is refused"):
        verify_audit("--without-checkpoint")


@pytest.mark.django_db
def test_an_unsealed_row_changed_in_sql_is_never_sealed(deferred):
    """An attacker with DDL rights lifts the triggers and edits a row before the sealer gets to it."""
    [row] = _unsealed(1)
    tamper((f"UPDATE {TABLE} SET action = %s WHERE id = %s", ["tampered", row.id]))
    assert seal() == 0
    [(row_id, why)] = services.verify_chain().unsealable
    assert row_id == row.id and "does not match its content" in why


# --- verify_audit, checkpoints, the admin and the periodic sealers ---------------------------


@pytest.mark.django_db
def test_verify_audit_verifies_sealed_rows_and_reports_those_waiting(deferred):
    record_rows(3)
    _unsealed(2, start=4)
    out = verify_audit("--without-checkpoint")
    assert "Audit chain intact: 3 rows verified." in out and "2 rows waiting to be sealed." in out
    assert "Warning" not in out
    seal()
    out = verify_audit("--without-checkpoint")
    assert "5 rows verified" in out and "0 rows waiting to be sealed." in out


@pytest.mark.django_db
def test_verify_audit_warns_when_a_row_has_waited_far_longer_than_the_sealer_interval(settings):
    settings.AUDIT_SEAL_INTERVAL_SECONDS = 1.0
    stale = timezone.now() - timedelta(seconds=10 * 1.0 + 60 + 30)
    row = AuditEvent(time=stale, action="stuck", principal="system:tests", result="success")
    row.write_mac = sealer.write_mac(row, *keys.current())  # as record() would have, 90 s ago
    row.save()  # unsealed
    out = verify_audit("--without-checkpoint")
    assert "1 rows waiting to be sealed." in out
    assert "Warning: the oldest row waiting to be sealed was written" in out and "sealer running" in out
    report = services.verify_chain()
    assert report.pending == 1 and report.oldest_pending_age_seconds >= 100


@pytest.mark.django_db
def test_checkpoints_take_the_head_of_the_sealed_chain(deferred):
    record_rows(3)
    _unsealed(2, start=4)
    assert checkpoints.write().seq == 3
    seal()
    assert checkpoints.write().seq == 5
    assert "matches the newest checkpoint (seq 5" in verify_audit()


@pytest.mark.django_db
def test_the_admin_lists_unsealed_rows_as_sealing(deferred, client, make_user):
    record_rows(1)
    _unsealed(1, start=2)
    client.force_login(make_user("root", superuser=True))
    page = client.get("/admin/audit/auditevent/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "(sealing)" in html and "test.action2" in html and "test.action1" in html
    assert django_settings.AUDIT_CHAIN_KEY not in html


@pytest.mark.django_db
def test_the_beat_task_seals_and_is_scheduled_every_interval(deferred):
    _unsealed(2)
    tasks.seal_pending()
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [1, 2]
    entry = django_settings.CELERY_BEAT_SCHEDULE["audit-seal"]
    assert entry["task"] == "audit.tasks.seal_pending"
    assert entry["schedule"] == django_settings.AUDIT_SEAL_INTERVAL_SECONDS


@pytest.mark.django_db
def test_a_failing_sealer_round_is_logged_and_retried_by_the_next(deferred, settings, caplog):
    _unsealed(1)
    key, settings.AUDIT_CHAIN_KEY = settings.AUDIT_CHAIN_KEY, ""
    assert sealer.tick() == 0
    assert "sealing the audit log failed" in caplog.text
    settings.AUDIT_CHAIN_KEY = key
    assert sealer.tick() == 1

