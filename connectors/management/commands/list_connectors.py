"""`manage.py list_connectors`: the registry as a table."""
from django.core.management.base import BaseCommand, CommandError

from brain_connectors.shared.errors import ServiceError
from connectors.permissions import Principal
from connectors.registry.records import list_connectors


class Command(BaseCommand):
    help = "List registered connectors with their status and last heartbeat."

    def add_arguments(self, parser):
        parser.add_argument("--kind")
        parser.add_argument("--status")

    def handle(self, *args, kind, status, **options):
        principal = Principal.system_actor("list_connectors", via="command")
        try:
            rows = list_connectors(principal, kind=kind, status=status)
        except ServiceError as exc:
            raise CommandError(exc.message)
        self.stdout.write(f"{'ID':<24} {'KIND':<10} {'STATUS':<10} LAST HEARTBEAT")
        for c in rows:
            beat = c.last_heartbeat.isoformat(timespec="seconds") if c.last_heartbeat else "-"
            self.stdout.write(f"{c.id:<24} {c.kind:<10} {c.status:<10} {beat}")
