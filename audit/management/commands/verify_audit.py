"""`manage.py verify_audit`: verifies the audit log's hash chain and its checkpoints."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from audit import checkpoints
from audit.models import AuditEvent
from audit.services import verify_chain


class Command(BaseCommand):
    help = (
        "Verify the audit log's hash chain from the first row to the last, and that it still holds the "
        "newest checkpoint of its head (so that deleting the newest rows is seen). Exits non-zero on any failure."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--without-checkpoint",
            action="store_true",
            help="Verify the chain alone, e.g. where the checkpoint directory is not available. The deletion "
            "of the newest rows then goes unnoticed.",
        )

    def handle(self, *args, without_checkpoint=False, **options):
        # The checkpoint before the chain: rows appended meanwhile only extend what it vouches for.
        checkpoint, problems = (None, []) if without_checkpoint else checkpoints.newest()
        total = AuditEvent.objects.filter(seq__isnull=False).count()
        with tqdm(total=total, unit="rows", desc="verify_audit", file=self.stderr._out, disable=None) as bar:
            report = verify_chain(progress=bar.update, anchor_seq=checkpoint.seq if checkpoint else None)

        failures = list(problems)
        if not report.ok:
            failures.insert(
                0,
                f"Audit chain broken at seq {report.broken_seq}: {report.reason} "
                f"({report.checked} rows verified before it).",
            )
        elif checkpoint:
            why = checkpoints.mismatch(checkpoint, report.last_seq, report.anchor_hash)
            if why:
                failures.append(why)
        for row_id, why in report.unsealable[:20]:
            failures.append(f"Audit row id {row_id}, waiting to be sealed, is refused by the sealer: {why}.")
        if len(report.unsealable) > 20:
            failures.append(f"… and {len(report.unsealable) - 20} more waiting rows refused by the sealer.")
        if not without_checkpoint and checkpoint is None and report.checked and not problems:
            failures.append(
                f"No audit checkpoint in {checkpoints.directory()}: cannot tell whether the newest rows were "
                f"deleted. The service writes one every {settings.AUDIT_CHECKPOINT_INTERVAL_SECONDS:g} s (daphne, "
                "Celery beat) into AUDIT_CHECKPOINT_DIR, which this command must see; `manage.py audit_checkpoint` "
                "writes one now. --without-checkpoint verifies the chain alone."
            )
        if failures:
            raise CommandError("\n".join(failures))

        unkeyed = f" ({report.unkeyed} unkeyed rows from before AUDIT_CHAIN_KEY)" if report.unkeyed else ""
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {report.checked} rows verified{unkeyed}."))
        self._report_pending(report)
        if checkpoint:
            self.stdout.write(
                f"The log matches the newest checkpoint (seq {checkpoint.seq}, written "
                f"{checkpoint.written_at:%Y-%m-%d %H:%M:%S} UTC, {checkpoint.path}). Rows written after it could "
                "have been deleted unseen."
            )
        elif without_checkpoint:
            self.stdout.write(
                self.style.WARNING("Checkpoint not compared (--without-checkpoint): deletion of the newest rows was "
                                   "not checked.")
            )

    def _report_pending(self, report):
        """Rows not sealed yet are in no chain: counted, not verified. One waiting far longer than the
        sealer's interval means no sealer runs: a warning (their rows are not lost, only unchained)."""
        self.stdout.write(f"{report.pending} rows waiting to be sealed.")
        age = report.oldest_pending_age_seconds
        if age is not None and age > stale_after_seconds():
            self.stdout.write(
                self.style.WARNING(
                    f"Warning: the oldest row waiting to be sealed was written {age:.0f} s ago, longer than "
                    f"{stale_after_seconds():g} s: is a sealer running (Celery beat `audit.tasks.seal_pending`, or "
                    "daphne with AUDIT_CHECKPOINT_IN_DAPHNE)? Until sealed, those rows are in no chain."
                )
            )


def stale_after_seconds():
    """How long a row may wait for the sealer before verify_audit warns: 10 intervals and 60 s."""
    return 10 * settings.AUDIT_SEAL_INTERVAL_SECONDS + 60
