"""A connector's permission page: who holds which level in plain words, a user picker to grant, a button to revoke.

Every change goes through services.grant_permission / revoke_permission (audited)."""

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from guardian.shortcuts import get_groups_with_perms, get_users_with_perms

from brain_connectors.shared.errors import ServiceError, ValidationFailed
from connectors import services
from connectors.admin.base import principal_of
from connectors.models import PERM_ADMIN, PERM_MANAGE, PERM_READ_CONVERSATIONS, PERM_SEND, PERM_VIEW
from connectors.permissions import LEVELS

# What each grantable level lets a person do, lowest first (connectors/permissions.py LEVELS).
PLAIN_WORDS = {
    PERM_VIEW: "View: see the connector, its status and its deliveries",
    PERM_SEND: "Send: send messages through it (includes view)",
    PERM_MANAGE: "Manage: start, stop, test and configure it (includes view)",
    PERM_READ_CONVERSATIONS: "Read conversations: read other people's conversations on it (includes view)",
    PERM_ADMIN: "Admin: everything, including its credentials, deleting it and granting access",
}
LEVEL_CHOICES = [(perm, PLAIN_WORDS[perm]) for perm in LEVELS]


class UserChoice(forms.ModelChoiceField):
    def label_from_instance(self, user):
        name = user.get_full_name() if hasattr(user, "get_full_name") else ""
        return f"{user.get_username()} ({name})" if name else user.get_username()


class GrantForm(forms.Form):
    user = UserChoice(queryset=None, label="Person", empty_label="Choose a user…")
    level = forms.ChoiceField(choices=LEVEL_CHOICES, widget=forms.RadioSelect, label="May")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = get_user_model()
        self.fields["user"].queryset = model.objects.filter(is_active=True).order_by(model.USERNAME_FIELD)


def grants_of(connector):
    """[(kind, grantee, [(perm, words)])] for the users and groups holding a level on this connector."""
    rows = []
    for user, perms in sorted(get_users_with_perms(connector, attach_perms=True, with_group_users=False).items(),
                              key=lambda item: item[0].get_username()):
        rows.append(("user", user, [(p, PLAIN_WORDS[p]) for p in LEVELS if p in perms]))
    for group, perms in sorted(get_groups_with_perms(connector, attach_perms=True).items(), key=lambda i: i[0].name):
        rows.append(("group", group, [(p, PLAIN_WORDS[p]) for p in LEVELS if p in perms]))
    return [row for row in rows if row[2]]


def grants_page(model_admin, request, connector):
    principal = principal_of(request)
    form = GrantForm(request.POST if "grant" in request.POST else None)
    if request.method == "POST":
        try:
            if "revoke" in request.POST:
                revoke(principal, connector, request.POST)
                return redirect(request.path)
            if form.is_valid():
                user, perm = form.cleaned_data["user"], form.cleaned_data["level"]
                services.grant_permission(principal, connector.pk, perm, user=user)
                model_admin.message_user(request, f"{user.get_username()} may now: {PLAIN_WORDS[perm]}.",
                                         messages.SUCCESS)
                return redirect(request.path)
        except ServiceError as exc:
            model_admin.message_user(request, exc.message, messages.ERROR)
            return redirect(request.path)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "original": connector,
        "title": f"Who may use {connector}",
        "form": form,
        "grants": grants_of(connector),
    }
    return TemplateResponse(request, "admin/connectors/connector/grants.html", context)


def revoke(principal, connector, data):
    """`revoke` is "user:<pk>:<perm>" or "group:<pk>:<perm>"."""
    kind, _, rest = data["revoke"].partition(":")
    pk, _, perm = rest.partition(":")
    model = get_user_model() if kind == "user" else Group
    grantee = model.objects.filter(pk=pk).first() if pk.isdigit() else None
    if grantee is None or kind not in ("user", "group"):
        raise ValidationFailed("No such user or group.")
    services.revoke_permission(principal, connector.pk, perm, **{kind: grantee})
