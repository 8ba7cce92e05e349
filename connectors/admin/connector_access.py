"""Who may open a connector's admin pages, and guardian's object-permission pages.

Refusals are audited as the API audits them; guardian's pages are limited to our four levels and save through
the services."""

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from guardian.admin import AdminGroupObjectPermissionsForm, AdminUserObjectPermissionsForm, GuardedModelAdminMixin

from audit import services as audit
from connectors import services
from connectors.admin.base import principal_of
from connectors.admin.grants_page import LEVEL_CHOICES, grants_page
from connectors.models import PERM_ADMIN, PERM_VIEW, Connector
from connectors.permissions import LEVELS, has_perm


def audit_refusal(request, object_id, perm, action):
    """Django refuses some requests before any service runs (403, or the "doesn't exist" redirect
    for a hidden connector): leave the `denied` audit row a refused service call would leave."""
    connector = Connector.objects.filter(pk=unquote(object_id)).first()
    principal = principal_of(request)
    if connector is None or has_perm(principal, perm, connector):
        return
    hidden = not has_perm(principal, PERM_VIEW, connector)
    audit.record_action(
        action,
        principal,
        "connector",
        connector.pk,
        result=audit.DENIED,
        error="not_found" if hidden else "permission_denied",
    )


class ConnectorObjectPermissions(GuardedModelAdminMixin):
    """Guardian's per-object permission pages, open only to those with admin permission on the connector."""

    def admin_object_or_404(self, request, object_pk):
        action = "permission.grant" if request.method == "POST" else "connector.get"
        audit_refusal(request, object_pk, PERM_ADMIN, action)
        connector = Connector.objects.filter(pk=object_pk).first()
        principal = principal_of(request)
        if connector is None or not has_perm(principal, PERM_VIEW, connector):
            raise Http404("No such connector.")
        if not has_perm(principal, PERM_ADMIN, connector):
            raise DjangoPermissionDenied
        return connector

    def obj_perms_manage_view(self, request, object_pk):
        # Our own page (levels in plain words, a user picker), not guardian's username box.
        return grants_page(self, request, self.admin_object_or_404(request, object_pk))

    def obj_perms_manage_user_view(self, request, object_pk, user_id):
        self.admin_object_or_404(request, object_pk)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        self.admin_object_or_404(request, object_pk)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)

    def get_obj_perms_manage_user_form(self, request):
        return permission_form_through_services(AdminUserObjectPermissionsForm, principal_of(request), "user")

    def get_obj_perms_manage_group_form(self, request):
        return permission_form_through_services(AdminGroupObjectPermissionsForm, principal_of(request), "group")


def permission_form_through_services(base, principal, grantee_attr):
    """Guardian's permission form, limited to our four levels and saving through the services."""

    class Form(base):
        def get_obj_perms_field_choices(self):
            return LEVEL_CHOICES

        def get_obj_perms_field_initial(self):
            return [perm for perm in super().get_obj_perms_field_initial() if perm in LEVELS]

        def save_obj_perms(self):
            wanted = set(self.cleaned_data[self.get_obj_perms_field_name()])
            current = set(self.get_obj_perms_field_initial())
            grantee = {grantee_attr: getattr(self, grantee_attr)}
            for perm in sorted(current - wanted):
                services.revoke_permission(principal, self.obj.pk, perm, **grantee)
            for perm in sorted(wanted - current):
                services.grant_permission(principal, self.obj.pk, perm, **grantee)

    return Form
