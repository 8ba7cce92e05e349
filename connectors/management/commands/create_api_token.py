"""`manage.py create_api_token <username>`: issue an API token, printed alone on the last line."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from brain_connectors.shared.errors import ServiceError
from connectors.permissions import Principal
from connectors.tokens import create_token


class Command(BaseCommand):
    help = (
        "Create an API token for a user and print it once (alone on the last line). "
        "Only its SHA-256 digest is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--expires-in", default=None, help="Lifetime such as 90d, 12h or 30m (default: 90d).")
        parser.add_argument("--name", default="", help="A label to recognise the token by.")

    def handle(self, *args, username, expires_in, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        try:
            token, plaintext = create_token(
                Principal.system_actor("create_api_token", via="command"), user, expires_in=expires_in, name=name
            )
        except ServiceError as exc:
            raise CommandError(exc.message)
        self.stderr.write(
            f"Created token bct_{token.prefix}… for {username}, expiring {token.expires_at:%Y-%m-%d %H:%M} UTC. "
            "It is shown once; store it now."
        )
        self.stdout.write(plaintext)
