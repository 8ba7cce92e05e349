"""Routing's admin: identities, preferences, pairing codes and notifications; every write goes through a service."""
from django.contrib import admin

from connectors.admin.base import ReadOnlyAdmin, ServiceBackedAdmin
from connectors.admin.base import principal_of as admin_principal
from routing import identities, preferences
from routing.accounts import user_admin
from routing.models import ChannelIdentity, ConnectorPreference, Notification, PairingCode
from routing.trace_display import attempts_html, trace_html

user_admin.install()  # the admin's users, with invitations

# --- identities, preferences, pairing codes (routing.identities, routing.preferences): every write through a service ----


@admin.register(ChannelIdentity)
class ChannelIdentityAdmin(ServiceBackedAdmin):
    """Verified addresses. People pair their own; staff with `routing.add_channelidentity` may add
    one they verified another way (e.g. a voice number). Only the label changes afterwards."""

    list_display = ("id", "user", "connector", "address", "label", "verified_at")
    list_filter = (("connector", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("user__username", "address", "label")
    list_select_related = ("user", "connector")
    raw_id_fields = ("user",)

    def get_fields(self, request, obj=None):
        return ("user", "connector", "address", "label") if obj is None else ("user", "connector", "address", "label", "verified_at")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("user", "connector", "address", "verified_at")

    def save_model(self, request, obj, form, change):
        principal = admin_principal(request)
        if change:
            saved = identities.update_identity(principal, obj.user, obj.pk, label=obj.label)
        else:
            saved = identities.add_identity(principal, obj.user, obj.connector_id, obj.address, label=obj.label)
        obj.pk, obj.verified_at = saved.pk, saved.verified_at

    def delete_model(self, request, obj):
        identities.delete_identity(admin_principal(request), obj.user, obj.pk)



@admin.register(ConnectorPreference)
class ConnectorPreferenceAdmin(ServiceBackedAdmin):
    list_display = ("user", "priority", "identity", "enabled", "notification_types", "quiet_start", "quiet_end", "timezone")
    list_filter = ("enabled",)
    search_fields = ("user__username",)
    list_select_related = ("user", "identity", "identity__connector")
    raw_id_fields = ("user", "identity")
    fields = ("user", "identity", "priority", "enabled", "notification_types", "quiet_start", "quiet_end", "timezone")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("user",)

    def save_model(self, request, obj, form, change):
        principal = admin_principal(request)
        names = [n for n in self.fields if n != "user" and (not change or n in form.changed_data)]
        data = {}
        for name in names:
            value = form.cleaned_data.get(name)
            data[name] = value.pk if name == "identity" and value is not None else value
        if change:
            saved = preferences.update_preference(principal, obj.user, obj.pk, data) if data else obj
        else:
            saved = preferences.create_preference(principal, obj.user, data)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        preferences.delete_preference(admin_principal(request), obj.user, obj.pk)



@admin.register(PairingCode)
class PairingCodeAdmin(ReadOnlyAdmin):
    """Read-only. The code itself is never stored, and its digest is not shown."""

    list_display = ("id", "user", "connector", "created_at", "expires_at", "used_at", "identity")
    list_filter = ("used_at",)
    search_fields = ("user__username",)
    fields = ("user", "connector", "address", "created_at", "expires_at", "used_at", "identity")
    readonly_fields = fields


# --- notifications (routing.notify): read-only, the trace as tables, content never shown ----


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """What the router decided and what happened on each channel. Read-only: notifications are
    created by notify_user and moved by their deliveries. The content stays out of the admin."""

    list_display = ("id", "user", "notification_type", "status", "step", "created_at", "acknowledged_at")
    list_filter = ("status", "notification_type")
    search_fields = ("id", "user__username", "requested_by")
    date_hierarchy = "created_at"
    fields = (
        "id", "user", "notification_type", "status", "step", "current_delivery", "ack_deadline",
        "acknowledged_at", "requested_by", "idempotency_key", "created_at", "updated_at",
        "trace_pretty", "attempts_pretty",
    )
    readonly_fields = fields

    @admin.display(description="trace (the router's decision)")
    def trace_pretty(self, obj):
        return trace_html(obj.trace)

    @admin.display(description="attempts (each channel tried)")
    def attempts_pretty(self, obj):
        return attempts_html(obj.attempts)
