"""Checkpoints of the chain's head, written outside the database, make the deletion of the newest
rows (and a TRUNCATE followed by re-inserting a prefix) detectable."""
import json
import logging
import time

import pytest
from django.core.management.base import CommandError

from audit import checkpoints, services
from audit.models import AuditEvent
from tests.audit.helpers import TABLE, record_rows, rewrite_from, seal, tamper, verify_audit


def _files():
    return sorted(checkpoints.directory().glob("checkpoint-*.json"))


def _head():
    return AuditEvent.objects.order_by("-seq").first()


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_checkpoint_holds_the_head_outside_the_database_and_in_the_log(settings, caplog):
    record_rows(3)
    caplog.set_level(logging.INFO, logger="audit.checkpoint")
    written = checkpoints.write()

    assert str(checkpoints.directory()).startswith(str(settings.AUDIT_CHECKPOINT_DIR))
    [path] = _files()
    body = json.loads(path.read_text())
    assert (written.seq, written.hash) == (body["seq"], body["hash"]) == (3, _head().hash)
    assert {"written_at", "key_id", "mac", "database"} <= set(body)
    lines = [r.getMessage() for r in caplog.records if r.name == "audit.checkpoint"]
    assert lines == [f"audit checkpoint: seq 3, hash {_head().hash}"]
    assert settings.AUDIT_CHAIN_KEY not in path.read_text() + "".join(lines)


@pytest.mark.django_db
def test_an_unchanged_head_refreshes_the_checkpoint_without_a_new_log_line(caplog):
    record_rows(2)
    caplog.set_level(logging.INFO, logger="audit.checkpoint")
    first = checkpoints.write()
    assert [r.name for r in caplog.records] == ["audit.checkpoint"]
    caplog.clear()
    time.sleep(0.01)
    again = checkpoints.write()
    assert again.seq == first.seq and again.written_at > first.written_at
    assert len(_files()) == 1 and not [r for r in caplog.records if r.name == "audit.checkpoint"]


@pytest.mark.django_db
def test_an_empty_log_writes_no_checkpoint():
    assert checkpoints.write() is None and _files() == []


@pytest.mark.django_db
def test_old_checkpoints_are_pruned():
    for n in range(checkpoints.KEEP + 5):
        services.record("test.tick", principal="system:tests", details={"n": n})
        seal()
        checkpoints.write()
    seqs = [int(p.stem.split("-")[1]) for p in _files()]
    assert seqs == list(range(6, checkpoints.KEEP + 6))
    assert not list(checkpoints.directory().glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.django_db
def test_the_writer_never_moves_the_checkpoint_back_over_deleted_rows(caplog):
    """After the newest rows vanish, writing again would hide the deletion: the writer refuses and
    logs an error each time, and the old checkpoint stays."""
    record_rows(5)
    checkpoints.write()
    tamper((f"DELETE FROM {TABLE} WHERE seq >= %s", [4]))

    with pytest.raises(checkpoints.CheckpointError, match="seq 5.*last row .seq 3"):
        checkpoints.write()
    caplog.set_level(logging.INFO, logger="audit.checkpoint")
    caplog.clear()
    checkpoints.tick()
    assert [r.levelname for r in caplog.records if r.name == "audit.checkpoint"] == ["ERROR"]
    assert [json.loads(p.read_text())["seq"] for p in _files()] == [5]


@pytest.mark.django_db
@pytest.mark.parametrize("forgery", ["edited-keyed-row", "unkeyed-row"])
def test_the_writer_does_not_vouch_for_a_forged_head(forgery):
    """A checkpoint of a forged newest row would anchor the forgery: the head must verify first."""
    record_rows(3)
    checkpoints.write()
    record_rows(1, start=4)
    if forgery == "edited-keyed-row":
        tamper((f"UPDATE {TABLE} SET action = %s WHERE seq = 4", ["tampered"]))
    else:
        rewrite_from(4, {"action": "tampered"}, algorithm="sha256")

    with pytest.raises(checkpoints.CheckpointError, match="newest row .seq 4."):
        checkpoints.write()
    assert [json.loads(p.read_text())["seq"] for p in _files()] == [3]


# --- verify_audit against the newest checkpoint ----------------------------------------------


@pytest.mark.django_db
def test_verify_audit_checks_the_newest_checkpoint():
    record_rows(4)
    checkpoints.write()
    record_rows(2, start=5)
    out = verify_audit()
    assert "Audit chain intact: 6 rows verified." in out
    assert "matches the newest checkpoint (seq 4" in out


@pytest.mark.django_db
@pytest.mark.parametrize("first_deleted", [5, 2])
def test_deleting_the_newest_rows_is_detected(first_deleted):
    record_rows(6)
    checkpoints.write()
    tamper((f"DELETE FROM {TABLE} WHERE seq >= %s", [first_deleted]))
    assert services.verify_chain().ok, "the chain alone cannot see it"

    with pytest.raises(CommandError) as exc:
        verify_audit()
    message = str(exc.value)
    assert "Audit log cut short" in message and f"rows {first_deleted}-6 were deleted" in message, message


@pytest.mark.django_db
def test_truncate_and_reinsert_a_prefix_is_detected():
    """The PostgreSQL attack of the issue, done here with the triggers lifted on either database."""
    record_rows(6)
    checkpoints.write()
    prefix = list(AuditEvent.objects.filter(seq__lte=3).values())
    tamper((f"DELETE FROM {TABLE}", []))
    for row in prefix:
        AuditEvent(**row).save()
    assert services.verify_chain().ok

    with pytest.raises(CommandError, match="rows 4-6 were deleted"):
        verify_audit()


@pytest.mark.django_db
def test_a_whole_chain_rewritten_unkeyed_from_the_first_row_is_caught_by_the_checkpoint():
    """Posing as a log from before the key, from row 1 on, re-chains cleanly: only the checkpoint sees it."""
    record_rows(5)
    checkpoints.write()
    rewrite_from(1, {"principal": "user:mallory"}, algorithm="sha256")
    assert services.verify_chain().ok

    with pytest.raises(CommandError) as exc:
        verify_audit()
    assert "Audit log rewritten: row 5 does not match the newest checkpoint" in str(exc.value)


@pytest.mark.django_db
def test_a_checkpoint_edited_without_the_key_is_refused():
    """Someone who can write the checkpoint directory but not read the key moves the checkpoint back
    to hide deleted rows: its MAC no longer matches."""
    record_rows(6)
    checkpoints.write()
    [path] = _files()
    body = json.loads(path.read_text())
    body.update(seq=4, hash=AuditEvent.objects.get(seq=4).hash)
    path.write_text(json.dumps(body))
    tamper((f"DELETE FROM {TABLE} WHERE seq >= %s", [5]))

    with pytest.raises(CommandError) as exc:
        verify_audit()
    assert f"{path.name} is not authentic" in str(exc.value)


@pytest.mark.django_db
def test_verify_audit_needs_a_checkpoint_for_a_non_empty_log():
    """Without one it cannot tell whether the newest rows were deleted, and says so rather than
    "intact"; --without-checkpoint verifies the chain alone, saying what it did not check."""
    assert "Audit chain intact: 0 rows verified." in verify_audit()
    record_rows(2)
    with pytest.raises(CommandError) as exc:
        verify_audit()
    assert "No audit checkpoint" in str(exc.value) and str(checkpoints.directory()) in str(exc.value)

    out = verify_audit("--without-checkpoint")
    assert "Audit chain intact: 2 rows verified." in out and "deletion of the newest rows was not checked" in out


@pytest.mark.django_db
def test_checkpoints_are_kept_per_database(settings):
    """A checkpoint of another database (a developer switching DATABASE_URL) is not this log's."""
    record_rows(3)
    checkpoints.write()
    here = checkpoints.directory()
    other = dict(settings.DATABASES["default"], NAME="some_other_database")
    assert checkpoints.directory(other) != here and checkpoints.directory(other).parent == here.parent


# --- writers: the command, the beat task, daphne ---------------------------------------------


@pytest.mark.django_db
def test_the_beat_task_writes_checkpoints_every_interval(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert entry == {"task": "audit.tasks.write_checkpoint", "schedule": settings.AUDIT_CHECKPOINT_INTERVAL_SECONDS}
    assert settings.AUDIT_CHECKPOINT_INTERVAL_SECONDS <= 60
    from audit.tasks import write_checkpoint

    record_rows(2)
    write_checkpoint.delay()
    assert [json.loads(p.read_text())["seq"] for p in _files()] == [2]


@pytest.mark.slow
def test_the_commands_in_a_subprocess(manage):
    record_rows(4)
    written = manage("audit_checkpoint")
    assert written.returncode == 0, written.stderr
    assert "Audit checkpoint written: seq 4" in written.stdout
    assert manage("verify_audit").returncode == 0

    tamper((f"DELETE FROM {TABLE} WHERE seq = %s", [4]))
    verified = manage("verify_audit")
    assert verified.returncode != 0 and "row 4 was deleted" in verified.stderr, verified.stderr
    refused = manage("audit_checkpoint")
    assert refused.returncode != 0 and "Checkpoint not written" in refused.stderr, refused.stderr


@pytest.mark.slow
def test_daphne_writes_checkpoints_while_it_runs(subprocess_env):
    """`make run` has no Celery beat: the daphne process writes them itself, every interval."""
    import subprocess
    import sys

    import httpx

    from tests.conftest import BASE_DIR, free_port

    record_rows(2)
    port = free_port()
    env = {**subprocess_env, "AUDIT_CHECKPOINT_INTERVAL_SECONDS": "0.3"}
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "brain_connectors.asgi:application"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def newest_seq():
        seqs = [json.loads(p.read_text())["seq"] for p in _files()]
        return max(seqs, default=0)

    def wait_for(seq):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and newest_seq() != seq:
            time.sleep(0.1)
        return newest_seq()

    try:
        assert wait_for(2) == 2
        record_rows(3, start=3)
        assert wait_for(5) == 5
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        server.kill()
        server.wait(timeout=10)
    assert "Audit chain intact: 5 rows verified." in verify_audit()
