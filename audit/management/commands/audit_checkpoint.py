"""`manage.py audit_checkpoint`: checkpoints the audit chain's head now."""

from django.core.management.base import BaseCommand, CommandError

from audit import checkpoints


class Command(BaseCommand):
    help = (
        "Checkpoint the audit chain's head now (what Celery beat and daphne do every "
        "AUDIT_CHECKPOINT_INTERVAL_SECONDS). For deployments that schedule it with cron instead."
    )

    def handle(self, *args, **options):
        try:
            written = checkpoints.write()
        except checkpoints.CheckpointError as exc:
            raise CommandError(str(exc)) from None
        if written is None:
            self.stdout.write("The audit log is empty: no checkpoint written.")
            return
        self.stdout.write(
            self.style.SUCCESS(f"Audit checkpoint written: seq {written.seq} ({written.hash[:16]}…) in {written.path}")
        )
