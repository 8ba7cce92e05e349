"""The audit log: append-only and hash-chained.

Each row's hash covers its own fields and the previous row's hash, so editing, deleting or
reordering rows breaks the chain (`manage.py verify_audit`). The ORM refuses update and delete
here, and database triggers (migration 0002) refuse them in SQL too.
"""
import hashlib
import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

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

    seq = models.BigIntegerField(primary_key=True, help_text="Position in the hash chain, from 1, without gaps.")
    time = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    principal = models.CharField(max_length=200, help_text="Who acted, e.g. user:alice, system:brain.")
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=200, blank=True, db_index=True)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    result = models.CharField(max_length=16, choices=Result.choices)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]
        # Read-only for everyone: no add/change/delete permissions exist to grant.
        default_permissions = ("view",)

    def __str__(self):
        return f"#{self.seq} {self.action} by {self.principal}: {self.result}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("The audit log is append-only: rows cannot be updated.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("The audit log is append-only: rows cannot be deleted.")

    def compute_hash(self):
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
        )


def compute_hash(*, prev_hash, seq, time, action, principal, target_type, target_id, details, result):
    """SHA-256 over a canonical JSON form of one row plus the previous hash."""
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
    return hashlib.sha256(f"{prev_hash}:{payload}".encode()).hexdigest()
