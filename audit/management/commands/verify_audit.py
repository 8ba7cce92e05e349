from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from audit.models import AuditEvent
from audit.services import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain from the first row to the last; exit non-zero at the first broken link."

    def handle(self, *args, **options):
        total = AuditEvent.objects.count()
        with tqdm(total=total, unit="rows", desc="verify_audit", file=self.stderr._out, disable=None) as bar:
            report = verify_chain(progress=bar.update)
        if not report.ok:
            raise CommandError(
                f"Audit chain broken at seq {report.broken_seq}: {report.reason} "
                f"({report.checked} rows verified before it)."
            )
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {report.checked} rows verified."))
