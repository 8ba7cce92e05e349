"""Counting windows of refused attempts, so that repeats cost one audit row per window."""
from django.db import models


class RefusalTally(models.Model):
    """One open counting window of a kind of refused attempt (access.refusals).

    The first refusal of a window is audited at once; the repeats only add to `repeats` here, in
    place, so counting them takes a row lock on this row only, never the audit chain's lock. When the
    window is closed its count becomes one audit row and the tally row is deleted.
    """

    key = models.CharField(max_length=64, unique=True)  # SHA-256 of what identifies the kind of refusal
    action = models.CharField(max_length=50)
    target_type = models.CharField(max_length=50, blank=True)
    target_id = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict)  # the window's first audit row's details
    window_start = models.DateTimeField(db_index=True)
    last_at = models.DateTimeField()
    repeats = models.PositiveIntegerField(default=0)  # refusals after the first, not written one by one
    throttled = models.PositiveIntegerField(default=0)  # of which answered 429 by the anonymous throttle

    class Meta:
        # Nobody edits tallies; the one permission of this model is the right to scrape /metrics,
        # kept in this app so that it needs no migration in `connectors`.
        default_permissions = ()
        permissions = [("view_metrics", "Can scrape /metrics (every connector's id, status and counts)")]

    def __str__(self):
        return f"{self.action} since {self.window_start:%H:%M:%S} (+{self.repeats})"
