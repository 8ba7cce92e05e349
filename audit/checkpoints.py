"""Checkpoints of the audit chain's head, kept outside the database.

The chain shows an edited, reordered or removed row, but not the removal of its newest rows: what
is left is a valid, shorter chain. So every AUDIT_CHECKPOINT_INTERVAL_SECONDS the head (seq and
hash) is written to a small JSON file under AUDIT_CHECKPOINT_DIR, one subdirectory per database,
and to the log (logger "audit.checkpoint"; ship it off the host to keep a copy no one on it can
edit). `verify_audit` then requires the row at the newest checkpoint's seq to exist with that hash.

- A checkpoint carries its own MAC under AUDIT_CHAIN_KEY: whoever can write the directory but not
  read the key cannot forge one, nor move one back over deleted rows.
- The writer never moves the checkpoint back: when the log no longer holds the newest checkpoint's
  row as it was, it writes nothing and logs an error, every interval, until someone looks.
- Files are written atomically (temporary file, fsync, rename) and only the newest KEEP are kept.
- Writers: the Celery beat task `audit.tasks.write_checkpoint` and a thread in each daphne process
  (`make run` has no beat). Several writers are harmless: each write is whole, and an unchanged
  head only refreshes `written_at`. The head is that of the SEALED chain (audit.sealer): rows
  waiting to be sealed are in no chain yet. The daphne thread also seals, every
  AUDIT_SEAL_INTERVAL_SECONDS.
"""
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from django.conf import settings
from django.db import connection

from audit import keys, sealer
from audit.models import AuditEvent

logger = logging.getLogger("audit.checkpoint")

KEEP = 10
VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{20})\.json$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_STALE_TEMP_SECONDS = 3600


class CheckpointError(Exception):
    """The log no longer matches the newest checkpoint: nothing was written."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    written_at: datetime
    path: Path


def database_label(settings_dict=None):
    """Names the database a checkpoint belongs to: its vendor and a digest of host, port and name
    (not the user: the same log read under another role is the same log)."""
    s = settings_dict or connection.settings_dict
    vendor = s["ENGINE"].rsplit(".", 1)[-1].replace("postgresql_psycopg2", "postgresql").replace("sqlite3", "sqlite")
    where = f"{s.get('HOST') or ''}|{s.get('PORT') or ''}|{s['NAME']}"
    return f"{vendor}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


def directory(settings_dict=None) -> Path:
    return Path(settings.AUDIT_CHECKPOINT_DIR) / database_label(settings_dict)


def _mac(key, fields):
    body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, b"brain-connectors audit checkpoint:" + body, hashlib.sha256).hexdigest()


def _parse(path, label, ring):
    """The checkpoint in `path`, or the reason it cannot be trusted."""
    try:
        body = json.loads(path.read_text())
        fields = {k: body[k] for k in ("version", "database", "seq", "hash", "written_at", "key_id")}
        mac = body["mac"]
        seq, written_at = fields["seq"], datetime.fromisoformat(fields["written_at"])
        if not (isinstance(seq, int) and seq > 0 and isinstance(mac, str) and _HEX64.fullmatch(str(fields["hash"]))):
            raise ValueError("bad field")
    except FileNotFoundError:
        return None  # pruned by another writer while this one listed the directory
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"audit checkpoint {path} is not authentic: it is not a checkpoint file this program writes"
    try:
        key = keys.lookup(keys.KEYED_PREFIX + str(fields["key_id"]), ring)
    except keys.UnknownKeyError as exc:
        return f"audit checkpoint {path} is not authentic: {exc}"
    if not hmac.compare_digest(_mac(key, fields), mac) or _NAME.match(path.name).group(1) != f"{seq:020d}":
        return f"audit checkpoint {path} is not authentic: its MAC does not match (edited, or made without the key)"
    if fields["database"] != label:
        return f"audit checkpoint {path} is not authentic: it belongs to another database ({fields['database']})"
    return Checkpoint(seq, fields["hash"], written_at, path)


def _listing(folder):
    try:
        names = [p for p in folder.iterdir() if _NAME.match(p.name)]
    except FileNotFoundError:
        return []
    return sorted(names, key=lambda p: p.name)


def _scan(settings_dict=None):
    """(authentic checkpoints by seq, [why each other file cannot be trusted])."""
    label, ring = database_label(settings_dict), keys.keyring()
    found, problems = [], []
    for path in _listing(directory(settings_dict)):
        parsed = _parse(path, label, ring)
        if isinstance(parsed, Checkpoint):
            found.append(parsed)
        elif parsed:
            problems.append(parsed)
    return sorted(found, key=lambda c: c.seq), problems


def newest(settings_dict=None):
    """(the newest authentic checkpoint or None, [why each other file cannot be trusted])."""
    found, problems = _scan(settings_dict)
    return (found[-1] if found else None), problems


def mismatch(checkpoint, last_seq, hash_at_checkpoint):
    """Why the log (its last seq; the hash of its row at the checkpoint's seq, None if it has none)
    contradicts `checkpoint`, or "" when it holds the checkpoint's row as it was."""
    when = f"written {checkpoint.written_at:%Y-%m-%d %H:%M:%S} UTC"
    if hash_at_checkpoint is None and last_seq >= checkpoint.seq:
        return f"Audit log cut: row {checkpoint.seq} of the newest checkpoint ({when}) is missing."
    if hash_at_checkpoint is None:
        where = f"the last row (seq {last_seq})" if last_seq else "the last row (the log is empty)"
        gone = f"row {checkpoint.seq} was" if last_seq + 1 == checkpoint.seq else f"rows {last_seq + 1}-{checkpoint.seq} were"
        return (
            f"Audit log cut short: the newest checkpoint (seq {checkpoint.seq}, {when}) is beyond {where}: "
            f"{gone} deleted, and any written after the checkpoint."
        )
    if hash_at_checkpoint != checkpoint.hash:
        return (
            f"Audit log rewritten: row {checkpoint.seq} does not match the newest checkpoint ({when}): "
            "the rows up to it were changed and re-chained."
        )
    return ""


def write():
    """Checkpoint the current head. Returns the checkpoint, or None for an empty log (nothing to
    anchor). Raises CheckpointError, writing nothing, when the log contradicts the newest one."""
    algorithm, key = keys.current()
    # The checkpoints first, then the head: rows only ever append, so a checkpoint another writer
    # made meanwhile can only be behind the head read after it.
    previous, problems = newest()
    for problem in problems:
        logger.error("%s", problem)
    head = AuditEvent.objects.filter(seq__isnull=False).order_by("-seq").first()  # the sealed chain's
    last_seq = head.seq if head else 0
    anchored_keyed = False
    if previous:
        row = AuditEvent.objects.filter(seq=previous.seq).values("hash", "algorithm").first()
        anchored_keyed = bool(row) and row["algorithm"] != keys.LEGACY_ALGORITHM
        why = mismatch(previous, last_seq, row["hash"] if row else None)
        if why:
            raise CheckpointError(f"{why} Checkpoint not written: move {previous.path.parent} aside only once "
                                  "this is understood (a restored backup, for one).")
    if head is None:
        return None
    if head.algorithm == keys.LEGACY_ALGORITHM and anchored_keyed:
        raise CheckpointError(f"the newest row (seq {head.seq}) is unkeyed after keyed rows (a downgrade): "
                              "checkpoint not written")
    if head.algorithm != keys.LEGACY_ALGORITHM:
        # Anchoring a forged head would vouch for it: the head must carry a valid MAC.
        try:
            valid = hmac.compare_digest(head.compute_hash(), head.hash)
        except keys.UnknownKeyError as exc:
            raise CheckpointError(f"the newest row (seq {head.seq}) was {exc}: checkpoint not written") from None
        if not valid:
            raise CheckpointError(f"the newest row (seq {head.seq}) fails its MAC: checkpoint not written")
    return _save(head, key, algorithm, unchanged=bool(previous and previous.seq == head.seq))


def _save(head, key, algorithm, unchanged):
    folder = directory()
    folder.mkdir(parents=True, exist_ok=True)
    fields = {
        "version": VERSION,
        "database": database_label(),
        "seq": head.seq,
        "hash": head.hash,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "key_id": algorithm.removeprefix(keys.KEYED_PREFIX),
    }
    data = json.dumps({**fields, "mac": _mac(key, fields)}, sort_keys=True, indent=1).encode()
    path = folder / f"checkpoint-{head.seq:020d}.json"
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(folder)  # so that the rename itself survives a crash
    _prune(folder)
    if not unchanged:
        logger.info("audit checkpoint: seq %d, hash %s", head.seq, head.hash)
    return Checkpoint(head.seq, head.hash, datetime.fromisoformat(fields["written_at"]), path)


def _fsync_directory(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every filesystem lets a directory be synced
    finally:
        os.close(fd)


def _prune(folder):
    # Only authentic checkpoints are pruned: files that are not stay, as evidence, and cannot push
    # the real ones out.
    for old in _scan()[0][:-KEEP]:
        old.path.unlink(missing_ok=True)
    # A writer killed between creating its temporary file and renaming it leaves one behind.
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for temporary in folder.glob(".checkpoint-*.tmp"):
        try:
            if temporary.stat().st_mtime < cutoff:
                temporary.unlink()
        except FileNotFoundError:
            pass


def tick(close_connection=False):
    """One round of a periodic writer: errors are logged, never raised (the next round retries)."""
    try:
        write()
    except CheckpointError as exc:
        logger.error("%s", exc)
    except Exception:
        logger.exception("audit checkpoint failed")
    finally:
        if close_connection:
            connection.close()  # a thread of its own: no connection kept open between rounds


_writer = None
_writer_lock = threading.Lock()


def start_writer(interval=None, seal_interval=None):
    """Start the audit thread of this process (once): it seals (audit.sealer) every `seal_interval`
    where rows are appended unsealed, and checkpoints at once, then every `interval`."""
    global _writer
    interval = settings.AUDIT_CHECKPOINT_INTERVAL_SECONDS if interval is None else interval
    seal_interval = settings.AUDIT_SEAL_INTERVAL_SECONDS if seal_interval is None else seal_interval
    if not sealer.seals_inline() and seal_interval > 0:
        rounds = [(sealer.tick, seal_interval), (tick, interval)] if interval > 0 else [(sealer.tick, seal_interval)]
    elif interval > 0:
        rounds = [(tick, interval)]
    else:
        return None
    with _writer_lock:
        if _writer is None or not _writer.is_alive():
            _writer = threading.Thread(target=_run, args=(rounds,), name="audit-checkpoint", daemon=True)
            # A daemon: it holds nothing that must be finished at exit (each write and seal is whole).
            _writer.start()
    return _writer


def _run(rounds):
    """Each (job, interval) on a fixed schedule, not interval + the time a round takes: "at least
    every interval". Sealing comes first, so that a checkpoint sees the freshest sealed head."""
    now = time.monotonic()
    due = [now] * len(rounds)
    while True:
        for n, (job, interval) in enumerate(rounds):
            if time.monotonic() >= due[n]:
                job()
                due[n] = max(due[n] + interval, time.monotonic())
        # The connection stays open between the frequent sealing rounds; one gone bad is replaced.
        connection.close_if_unusable_or_obsolete()
        time.sleep(max(0.0, min(due) - time.monotonic()))
