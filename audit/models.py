"""The audit log: append-only and hash-chained.

Each row's hash covers its own fields and the previous row's hash, so editing, deleting or
reordering rows breaks the chain (`manage.py verify_audit`). On PostgreSQL writers append rows
unsealed (no seq, no hash) and the sealer (audit.sealer) chains them after commit; `id` is the
order of insertion, `seq` the position in the chain. The hash is an HMAC under
AUDIT_CHAIN_KEY (audit.keys), so the database alone is not enough to re-chain a rewritten log;
rows from before the key keep their plain SHA-256. The ORM refuses update and delete here, and
database triggers (migrations 0002-0004) refuse them, TRUNCATE and REPLACE in SQL too; the one
update they let through is sealing an unsealed row without touching its contents.
"""
import hashlib
import hmac
import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from audit import keys

GENESIS_HASH = "0" * 64


class AppendOnlyError(Exception):
    """Raised when code tries to change or remove an audit row."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("The audit log is append-only: rows cannot be updated.")

    def delete(self):
        raise AppendOnlyError("The audit log is append-only: rows cannot be deleted.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AppendOnlyError("The audit log is append-only: rows cannot be updated.")


class AuditEvent(models.Model):
    class Result(models.TextChoices):
        SUCCESS = "success"
        FAILURE = "failure"
        DENIED = "denied"

    id = models.BigAutoField(primary_key=True)
    seq = models.BigIntegerField(
        null=True, blank=True, unique=True,
        help_text="Position in the hash chain, from 1, without gaps; empty until the sealer chains the row.",
    )
    time = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    principal = models.CharField(max_length=200, help_text="Who acted, e.g. user:alice, system:brain.")
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=200, blank=True, db_index=True)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    result = models.CharField(max_length=16, choices=Result.choices)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)
    hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    algorithm = models.CharField(
        max_length=40, null=True, blank=True,
        help_text="How `hash` was made: hmac-sha256:<key id>, or sha256 for rows from before the key.",
    )

    write_mac = models.CharField(
        max_length=80, null=True, blank=True,
        help_text="<key id>:<HMAC of the row's content>, made by record(): the sealer chains no row without it.",
    )

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        # The chain first, in its order, then the rows still waiting for the sealer, in insertion
        # order (NULLs would otherwise go first on SQLite and last on PostgreSQL).
        ordering = [models.F("seq").asc(nulls_last=True), "id"]
        # Read-only for everyone: no add/change/delete permissions exist to grant.
        default_permissions = ("view",)

    def __str__(self):
        position = "(sealing)" if self.seq is None else f"#{self.seq}"
        return f"{position} {self.action} by {self.principal}: {self.result}"

    @property
    def sealed(self):
        return self.seq is not None

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("The audit log is append-only: rows cannot be updated.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("The audit log is append-only: rows cannot be deleted.")

    def compute_hash(self, key=None):
        """This row's hash; a keyed row takes its key from the configured keys unless given one."""
        if key is None and self.algorithm != keys.LEGACY_ALGORITHM:
            key = keys.lookup(self.algorithm)
        return compute_hash(
            prev_hash=self.prev_hash,
            seq=self.seq,
            time=self.time,
            action=self.action,
            principal=self.principal,
            target_type=self.target_type,
            target_id=self.target_id,
            details=self.details,
            result=self.result,
            algorithm=self.algorithm,
            key=key,
        )


def compute_hash(
    *, prev_hash, seq, time, action, principal, target_type, target_id, details, result, algorithm, key=None
):
    """A canonical JSON form of one row plus the previous hash: HMAC-SHA256 under `key` (the
    algorithm, naming the key, is covered too), or plain SHA-256 for rows from before the key."""
    payload = json.dumps(
        {
            "seq": seq,
            "time": time.isoformat(timespec="microseconds"),
            "action": action,
            "principal": principal,
            "target_type": target_type,
            "target_id": target_id,
            "details": details,
            "result": result,
        },
        sort_keys=True,
        separators=(",", ":"),
        cls=DjangoJSONEncoder,
    )
    if algorithm == keys.LEGACY_ALGORITHM:
        return hashlib.sha256(f"{prev_hash}:{payload}".encode()).hexdigest()
    if not algorithm.startswith(keys.KEYED_PREFIX) or not key:
        raise ValueError(f"cannot hash with algorithm {algorithm!r} and no key")
    return hmac.new(key, f"{prev_hash}:{algorithm}:{payload}".encode(), hashlib.sha256).hexdigest()
