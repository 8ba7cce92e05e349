"""The admin's users, with invitations: an "Invite a person" page and an action for accounts without a password.

Both go through routing.accounts.invitations.invite_person(), which checks `auth.add_user` and
writes the audit row; the admin only collects the address and reports the outcome.
"""
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from brain_connectors.shared.errors import ServiceError
from connectors.admin.base import principal_of
from routing.accounts.invitations import INVITE_PERMISSION, describe_duration, invite_person


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email address", help_text="The invitation goes here.")
    username = forms.CharField(label="Username", required=False, max_length=150,
                               help_text="What they sign in with. Leave empty to use the email address.")


def _base_url(request):
    return request.build_absolute_uri("/").rstrip("/")


class InvitingUserAdmin(UserAdmin):
    change_list_template = "admin/auth/user/change_list_invite.html"
    actions = ["send_invitation"]

    def get_urls(self):
        return [
            path("invite/", self.admin_site.admin_view(self.invite_view), name="auth_user_invite"),
            *super().get_urls(),
        ]

    def invite_view(self, request):
        if not request.user.has_perm(INVITE_PERMISSION):
            raise DjangoPermissionDenied
        form = InviteForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                user = invite_person(principal_of(request), form.cleaned_data["email"], form.cleaned_data["username"],
                                     base_url=_base_url(request))
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, f"Invitation sent to {user.email} for {user.get_username()}.",
                                  messages.SUCCESS)
                back = "admin:auth_user_changelist" if self.has_view_or_change_permission(request) else "admin:index"
                return redirect(reverse(back))
        context = {**self.admin_site.each_context(request), "title": "Invite a person", "form": form,
                   "opts": self.model._meta, "valid_for": describe_duration(settings.INVITATION_TIMEOUT)}
        return TemplateResponse(request, "admin/auth/user/invite.html", context)

    @admin.action(description="Send an invitation (accounts without a password)", permissions=["add"])
    def send_invitation(self, request, queryset):
        sent = 0
        for user in queryset:
            try:
                invite_person(principal_of(request), user.email, user.get_username(), base_url=_base_url(request))
                sent += 1
            except ServiceError as exc:
                self.message_user(request, f"{user.get_username()}: {exc.message}", messages.WARNING)
        if sent:
            self.message_user(request, f"Sent {sent} invitation{'s' if sent != 1 else ''}.", messages.SUCCESS)


def install():
    """Replace django.contrib.auth's user admin (called from routing/admin.py)."""
    User = get_user_model()
    if admin.site.is_registered(User):
        admin.site.unregister(User)
    admin.site.register(User, InvitingUserAdmin)
