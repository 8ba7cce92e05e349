"""The chain is keyed (HMAC-SHA256 under AUDIT_CHAIN_KEY, a key kept outside the database), so whoever
holds only the database can no longer rewrite a row and re-chain everything after it."""
import hashlib
import hmac
import json
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError

from audit import keys, services
from audit.models import GENESIS_HASH, AuditEvent
from brain_connectors import dotenv_init
from brain_connectors.shared.log_redaction import RedactSecretsFilter
from tests.audit.helpers import documented_key_id, plain_sha256, record_rows, rewrite_from, tamper, verify_audit
from tests.log_guard import collect_settings_secrets, scanner

OTHER_KEY = "another-audit-chain-key-0123456789abcdef"


def _legacy_rows(count):
    """Rows as a deployment from before the keyed chain has them: plain SHA-256, algorithm "sha256", no write MAC."""
    record_rows(count)
    rows = list(AuditEvent.objects.order_by("seq"))
    prev = GENESIS_HASH
    statements = []
    for row in rows:
        new_hash = plain_sha256(prev, row)
        statements.append(
            (
                f"UPDATE {AuditEvent._meta.db_table} SET algorithm = %s, prev_hash = %s, hash = %s, write_mac = NULL "
                "WHERE seq = %s",
                ["sha256", prev, new_hash, row.seq],
            )
        )
        prev = new_hash
    tamper(*statements)


# --- the attack of the issue -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("column, value", [("action", "tampered"), ("principal", "user:mallory")])
def test_a_row_rewritten_and_rechained_with_plain_sha256_is_detected(column, value):
    """Rewrite row 3 and recompute every later hash: before the key, verify_audit said "intact"."""
    record_rows(6)
    rewrite_from(3, {column: value})
    assert AuditEvent.objects.get(seq=3).__dict__[column] == value

    report = services.verify_chain()
    assert (report.ok, report.broken_seq, report.checked) == (False, 3, 2)
    with pytest.raises(CommandError) as exc:
        verify_audit("--without-checkpoint")
    assert "broken at seq 3:" in str(exc.value) and "AUDIT_CHAIN_KEY" in str(exc.value)


@pytest.mark.django_db
def test_posing_as_unkeyed_rows_from_before_the_key_is_a_downgrade():
    """The attacker also marks the rewritten rows as old unkeyed ones: once a keyed row exists,
    an unkeyed row after it is a break."""
    record_rows(6)
    rewrite_from(4, {"action": "tampered"}, algorithm="sha256")

    with pytest.raises(CommandError) as exc:
        verify_audit("--without-checkpoint")
    message = str(exc.value)
    assert "broken at seq 4:" in message and "unkeyed row after keyed rows" in message


# --- what is written -------------------------------------------------------------------------


@pytest.mark.django_db
def test_rows_are_an_hmac_under_the_configured_key(settings):
    """An auditor holding the key can check a row with nothing but the documented format."""
    record_rows(3)
    key = settings.AUDIT_CHAIN_KEY.encode()
    prev = GENESIS_HASH
    for row in AuditEvent.objects.order_by("seq"):
        assert row.algorithm == "hmac-sha256:" + documented_key_id(settings.AUDIT_CHAIN_KEY)
        payload = json.dumps(
            {f: getattr(row, f) for f in ("seq", "action", "principal", "target_type", "target_id", "details", "result")}
            | {"time": row.time.isoformat(timespec="microseconds")},
            sort_keys=True,
            separators=(",", ":"),
        )
        expected = hmac.new(key, f"{prev}:{row.algorithm}:{payload}".encode(), hashlib.sha256).hexdigest()
        assert (row.prev_hash, row.hash) == (prev, expected)
        assert row.hash != plain_sha256(prev, row)
        prev = row.hash


@pytest.mark.django_db
def test_the_key_id_names_the_key_without_revealing_it(settings):
    kid = keys.key_id(settings.AUDIT_CHAIN_KEY)
    assert kid == documented_key_id(settings.AUDIT_CHAIN_KEY)
    assert len(kid) == 8 and kid != keys.key_id(OTHER_KEY)
    assert kid not in settings.AUDIT_CHAIN_KEY and kid != hashlib.sha256(settings.AUDIT_CHAIN_KEY.encode()).hexdigest()[:8]


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["", "too-short-key"])
def test_nothing_is_written_without_a_usable_key(settings, value):
    """No silent fallback to an unkeyed chain: the write fails, naming the variable."""
    settings.AUDIT_CHAIN_KEY = value
    with pytest.raises(ImproperlyConfigured, match="AUDIT_CHAIN_KEY"):
        services.record("test.nokey", principal="system:tests")
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_chain_does_not_verify_under_another_key(settings):
    record_rows(3)
    settings.AUDIT_CHAIN_KEY = OTHER_KEY
    report = services.verify_chain()
    assert (report.ok, report.broken_seq) == (False, 1)
    assert "AUDIT_CHAIN_PREVIOUS_KEYS" in report.reason


# --- upgrade and rotation --------------------------------------------------------------------


@pytest.mark.django_db
def test_unkeyed_rows_from_before_the_upgrade_still_verify_and_the_chain_goes_on_keyed():
    _legacy_rows(4)
    record_rows(3, start=5)
    rows = list(AuditEvent.objects.order_by("seq"))
    assert [r.algorithm == "sha256" for r in rows] == [True] * 4 + [False] * 3
    assert rows[4].prev_hash == rows[3].hash

    report = services.verify_chain()
    assert (report.ok, report.checked, report.unkeyed) == (True, 7, 4)
    assert "Audit chain intact: 7 rows verified (4 unkeyed rows from before AUDIT_CHAIN_KEY)" in verify_audit(
        "--without-checkpoint"
    )


@pytest.mark.django_db
def test_unkeyed_rows_before_the_first_keyed_row_are_protected_by_it():
    """Rewriting an old unkeyed row and re-chaining it breaks the first keyed row, whose MAC covers
    its prev_hash."""
    _legacy_rows(4)
    record_rows(2, start=5)
    rewrite_from(2, {"action": "tampered"}, algorithm="sha256", until=4)
    new_head = AuditEvent.objects.get(seq=4).hash
    tamper((f"UPDATE {AuditEvent._meta.db_table} SET prev_hash = %s WHERE seq = 5", [new_head]))
    report = services.verify_chain()
    assert (report.ok, report.broken_seq, report.checked) == (False, 5, 4)
    assert "under AUDIT_CHAIN_KEY" in report.reason


@pytest.mark.django_db
def test_rows_under_a_previous_key_verify_after_a_rotation(settings):
    old_key = settings.AUDIT_CHAIN_KEY
    record_rows(3)
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_PREVIOUS_KEYS = OTHER_KEY, [old_key]
    record_rows(3, start=4)
    algorithms = list(AuditEvent.objects.order_by("seq").values_list("algorithm", flat=True))
    assert algorithms == ["hmac-sha256:" + keys.key_id(old_key)] * 3 + ["hmac-sha256:" + keys.key_id(OTHER_KEY)] * 3
    assert services.verify_chain().ok

    settings.AUDIT_CHAIN_PREVIOUS_KEYS = []
    report = services.verify_chain()
    assert (report.ok, report.broken_seq) == (False, 1)
    assert keys.key_id(old_key) in report.reason and "AUDIT_CHAIN_PREVIOUS_KEYS" in report.reason


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["", "short-key"])
def test_a_missing_or_short_key_is_a_check_error_with_debug_off(settings, value):
    settings.DEBUG = False
    settings.AUDIT_CHAIN_KEY = value
    with pytest.raises(SystemCheckError, match="AUDIT_CHAIN_KEY"):
        call_command("check")


@pytest.mark.django_db
def test_a_short_previous_key_is_a_check_error(settings):
    settings.AUDIT_CHAIN_PREVIOUS_KEYS = ["short"]
    with pytest.raises(SystemCheckError, match="AUDIT_CHAIN_PREVIOUS_KEYS entry #1"):
        call_command("check")


def test_make_run_writes_a_key_into_a_new_env_file_and_adds_one_to_an_old_one(tmp_path):
    fresh = tmp_path / "fresh.env"
    assert dotenv_init.ensure(fresh)
    values = dict(line.split("=", 1) for line in fresh.read_text().splitlines() if "=" in line and line[0] != "#")
    assert len(values["AUDIT_CHAIN_KEY"]) >= keys.MIN_KEY_LENGTH

    old = tmp_path / "old.env"
    old.write_text("DEBUG=true\nSECRET_KEY=abc\n")
    assert dotenv_init.add_missing(old) == ["AUDIT_CHAIN_KEY"]
    lines = old.read_text().splitlines()
    assert lines[:2] == ["DEBUG=true", "SECRET_KEY=abc"]
    added = [line.split("=", 1)[1] for line in lines if line.startswith("AUDIT_CHAIN_KEY=")]
    assert len(added) == 1 and len(added[0]) >= keys.MIN_KEY_LENGTH
    assert dotenv_init.add_missing(old) == [] and old.read_text().splitlines() == lines


def test_the_key_is_redacted_from_logs_and_watched_by_the_log_guard(settings):
    settings.AUDIT_CHAIN_PREVIOUS_KEYS = ["previous-audit-chain-key-0123456789abcdef"]
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("tests.audit.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("keys %s and %s", settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_PREVIOUS_KEYS[0])
    finally:
        logger.removeHandler(handler)
    assert records == ["keys [redacted] and [redacted]"]

    collect_settings_secrets()
    assert scanner.watched(settings.AUDIT_CHAIN_KEY) and scanner.watched(settings.AUDIT_CHAIN_PREVIOUS_KEYS[0])
