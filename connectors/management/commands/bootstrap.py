"""`manage.py bootstrap`: what `make run` does before serving (migrate, then the admin account)."""
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "What `make run` does before serving, in one process: migrate, then ensure the admin account exists."

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("ensure_admin", stdout=self.stdout)
