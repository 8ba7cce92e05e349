"""`manage.py revoke_api_token`: revoke an API token named by its prefix or by the whole token."""
from django.core.management.base import BaseCommand, CommandError

from brain_connectors.shared.errors import ServiceError
from connectors.permissions import Principal
from connectors.tokens import TOKEN_RE, revoke_token


class Command(BaseCommand):
    help = "Revoke an API token, named by its prefix (bct_<prefix>_…) or by the whole token."

    def add_arguments(self, parser):
        parser.add_argument("token_or_prefix")

    def handle(self, *args, token_or_prefix, **options):
        match = TOKEN_RE.fullmatch(token_or_prefix)
        prefix = match.group(1) if match else token_or_prefix.removeprefix("bct_").rstrip("_…")
        try:
            token = revoke_token(Principal.system_actor("revoke_api_token", via="command"), prefix)
        except ServiceError as exc:
            raise CommandError(exc.message)
        self.stdout.write(self.style.SUCCESS(f"Revoked bct_{token.prefix}… of {token.user}."))
