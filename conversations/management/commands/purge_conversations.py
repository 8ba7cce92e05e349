"""`manage.py purge_conversations`: deletes messages past their retention, and conversations left empty.

The retention is the connector's RetentionPolicy, else CONVERSATION_RETENTION_DAYS. Writes an audit row with the
counts."""
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from conversations.privacy import expired_count, purge_expired


class Command(BaseCommand):
    help = "Purge conversation messages older than their retention period (with a progress bar)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, dry_run, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if dry_run:
            result = purge_expired(dry_run=True, via="command")
            self.stdout.write(
                f"Dry run: {result['messages']} messages and {result['conversations']} conversations would be deleted."
            )
            return
        with tqdm(total=expired_count(), desc="messages", unit="rows", file=self.stderr._out, disable=None) as bar:
            result = purge_expired(progress=bar.update, batch_size=batch_size, via="command")
        self.stdout.write(
            self.style.SUCCESS(f"Purged {result['messages']} messages and {result['conversations']} empty conversations.")
        )
