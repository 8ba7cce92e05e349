"""Sign-in help for end users: Django's password-reset views, and the invitation link's set-a-password page.

Thin over routing.accounts.invitations: setting a password goes through set_password_from_link()
(its audit row in the same transaction). The answer to a reset request is the same whether or not
the address has an account. Neither kind of link signs the person in (post_reset_login stays off),
so a login lockout (django-axes) still holds after a new password is set.
"""
import hashlib
import math

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.shortcuts import render
from django.urls import reverse_lazy

from brain_connectors.access.ip import client_ip, throttle_key
from connectors import quotas
from routing.accounts.invitations import describe_duration, set_password_from_link
from routing.accounts.tokens import invitation_token_generator

# Reset mails per minute (bucket size): per client address, and per address asked about (so that
# nobody can fill a stranger's mailbox). They count whether or not the address has an account.
RESET_MAILS_PER_IP = 5
RESET_MAILS_PER_ADDRESS = 1


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "registration/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")

    def form_valid(self, form):
        self.extra_email_context = {"valid_for": describe_duration(settings.PASSWORD_RESET_TIMEOUT)}
        address = form.cleaned_data["email"].strip().lower()
        wait = quotas.take([
            (f"pwreset:ip:{throttle_key(client_ip(self.request))}", RESET_MAILS_PER_IP),
            ("pwreset:to:" + hashlib.sha256(address.encode()).hexdigest()[:32], RESET_MAILS_PER_ADDRESS),
        ])
        if wait > 0:
            response = render(self.request, "registration/password_reset_wait.html",
                              {"minutes": max(1, math.ceil(wait / 60))}, status=429)
            response["Retry-After"] = str(math.ceil(wait))
            return response
        return super().form_valid(form)


class _LinkSetsPassword:
    """Save through the service, so that the new password has its audit row."""

    link_kind = "reset"

    def form_valid(self, form):
        set_password_from_link(form, self.link_kind, client_ip(self.request))
        del self.request.session[auth_views.INTERNAL_RESET_SESSION_TOKEN]
        return super(auth_views.PasswordResetConfirmView, self).form_valid(form)


class PasswordResetConfirmView(_LinkSetsPassword, auth_views.PasswordResetConfirmView):
    template_name = "registration/password_reset_confirm.html"
    success_url = reverse_lazy("password_reset_complete")


class InvitationAcceptView(_LinkSetsPassword, auth_views.PasswordResetConfirmView):
    link_kind = "invitation"
    token_generator = invitation_token_generator
    template_name = "registration/invitation_accept.html"
    success_url = reverse_lazy("invitation_complete")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "registration/password_reset_done.html"

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "valid_for": describe_duration(settings.PASSWORD_RESET_TIMEOUT)}


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "registration/password_reset_complete.html"


class InvitationCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "registration/invitation_complete.html"
