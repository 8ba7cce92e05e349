"""What every admin of the project builds on: the staff principal, service-backed writes, read-only rows."""

from django.contrib import admin, messages
from django.contrib.admin.options import csrf_protect_m
from django.shortcuts import redirect

from brain_connectors.shared.errors import ServiceError
from connectors.permissions import Principal, viewable_connectors


def principal_of(request):
    return Principal.for_user(request.user, via="admin")


class ServiceBackedAdmin(admin.ModelAdmin):
    """An admin whose saves and deletes go through services.

    Not Django's changeform_view/delete_view: they run a POST in one transaction, whose rollback
    would take the audit row of a refused or failed service call with it (services are atomic
    themselves). A refusal becomes an error message instead of a 500. Bulk deletes go object by
    object through `delete_model`, so each one is a service call with its audit row.
    """

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)

    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return self._changeform_view(request, object_id, form_url, extra_context)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return redirect(request.path)

    @csrf_protect_m
    def delete_view(self, request, object_id, extra_context=None):
        try:
            return self._delete_view(request, object_id, extra_context)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return redirect(request.path)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: the admin shows them and changes nothing."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OpenToStaff:
    """Mixin: every active staff member sees the model in the admin; object checks decide the rest
    (Django's per-model permissions do not apply)."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff


class NoBulkDelete:
    """Mixin: no "delete selected" action, so that deletion goes one by one, through the service."""

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


class OnViewableConnectors:
    """Mixin: rows of a connector are listed only to those who may view that connector."""

    def get_queryset(self, request):
        return super().get_queryset(request).filter(connector__in=viewable_connectors(principal_of(request)))
