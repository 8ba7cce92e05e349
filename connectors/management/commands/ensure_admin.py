"""`manage.py ensure_admin`: create the admin account once, printing its random password once."""
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from audit import services as audit
from brain_connectors.shared.served_at import served_url


class Command(BaseCommand):
    help = "Create the superuser `admin` with a random password if it does not exist; print the password once."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        User = get_user_model()
        with transaction.atomic():
            if User.objects.filter(username=username).exists():
                self.stdout.write(f"Admin account {username!r} exists; its password is unchanged.")
                return
            password = secrets.token_urlsafe(18)
            User.objects.create_superuser(username=username, email="", password=password)
            audit.record(
                "user.create_admin",
                principal="system:ensure_admin",
                target_type="user",
                target_id=username,
                details={"via": "command"},
            )
        bar = "=" * 64
        self.stdout.write(
            f"\n{bar}\n Admin account created.\n   user:     {username}\n   password: {password}\n"
            f" It is shown only this once. Log in at {served_url('/admin/')}\n{bar}\n"
        )
