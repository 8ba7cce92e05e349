"""manage.py invite EMAIL [--username NAME]: email a person a link to choose their password (routing.accounts.invitations)."""
from django.core.management.base import BaseCommand, CommandError

from brain_connectors.shared.errors import ServiceError
from connectors.permissions import Principal
from routing.accounts.invitations import invite_person


class Command(BaseCommand):
    help = "Invite a person by email: creates their account without a password and mails them a link to choose one."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--username", default="", help="the account's username (default: the email address)")
        parser.add_argument("--base-url", default="", help="the site's address for the link (default: PUBLIC_BASE_URL)")

    def handle(self, *args, email, username, base_url, **options):
        try:
            user = invite_person(Principal.system_actor("invite", via="command"), email, username or None,
                                 base_url=base_url or None)
        except ServiceError as exc:
            raise CommandError(exc.message)
        self.stdout.write(f"Invited {user.get_username()}: the link went to {user.email}.")
