"""BusCursor: how far the event bus bridge has published the log to one JetStream stream, and who may advance it."""
from django.db import models


class BusCursor(models.Model):
    """One row per stream: the last `seq` JetStream acknowledged, and the lease of the one bridge that publishes.

    The cursor only moves forward and only under an unexpired lease (connectors/events/bus_lease.py); a bridge
    killed between JetStream's ack and this update re-publishes the tail, which the stream's de-duplication drops.
    """

    stream = models.CharField(max_length=200, unique=True)
    last_seq = models.BigIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.stream} @ {self.last_seq}"
