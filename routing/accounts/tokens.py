"""The links' tokens: Django's own (PasswordResetTokenGenerator), an invitation's lasting INVITATION_TIMEOUT.

A token signs the user's id, password hash, last login and email with a timestamp, so it stops
working once the password is set (used) or the time is up (expired); nothing is stored. Reset links
use Django's default_token_generator and PASSWORD_RESET_TIMEOUT. Invitations get their own salt (a
reset link is no invitation link) and their own, longer lifetime: people open invitations later than
a reset they just asked for.
"""
from django.conf import settings
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.utils.crypto import constant_time_compare
from django.utils.http import base36_to_int


class InvitationTokenGenerator(PasswordResetTokenGenerator):
    key_salt = "brain_connectors.invitation"

    def check_token(self, user, token):
        # Django's check, with INVITATION_TIMEOUT in place of PASSWORD_RESET_TIMEOUT.
        if not (user and token):
            return False
        try:
            ts_b36, _ = token.split("-")
            timestamp = base36_to_int(ts_b36)
        except ValueError:
            return False
        if not any(
            constant_time_compare(self._make_token_with_timestamp(user, timestamp, secret), token)
            for secret in [self.secret, *self.secret_fallbacks]
        ):
            return False
        return (self._num_seconds(self._now()) - timestamp) <= settings.INVITATION_TIMEOUT


invitation_token_generator = InvitationTokenGenerator()
