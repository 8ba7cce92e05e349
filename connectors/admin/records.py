"""Read-only admin of what the connectors carried: outbound deliveries and inbound messages."""

from django.contrib import admin

from connectors.admin.base import OnViewableConnectors, OpenToStaff, ReadOnlyAdmin, principal_of
from connectors.models import PERM_VIEW, Delivery, InboundMessage
from connectors.permissions import has_perm


@admin.register(Delivery)
class DeliveryAdmin(OpenToStaff, OnViewableConnectors, ReadOnlyAdmin):
    """Status and errors only: message content stays out of the admin."""

    list_display = ("id", "connector", "recipient", "status", "attempts", "created_at", "sent_at", "last_error")
    list_filter = ("status", ("connector", admin.RelatedOnlyFieldListFilter))  # only viewable connectors
    search_fields = ("id", "recipient", "platform_message_id")
    fields = ("id", "connector", "recipient", "status", "attempts", "next_attempt_at", "platform_message_id",
              "last_error", "principal", "idempotency_key", "created_at", "updated_at", "sent_at", "delivered_at")
    readonly_fields = fields

    def has_view_permission(self, request, obj=None):
        return obj is None or has_perm(principal_of(request), PERM_VIEW, obj.connector)


@admin.register(InboundMessage)
class InboundMessageAdmin(DeliveryAdmin):
    list_display = ("platform_message_id", "connector", "sender", "received_at", "brain_status")
    list_filter = ("brain_status", ("connector", admin.RelatedOnlyFieldListFilter))
    search_fields = ("platform_message_id", "sender")
    fields = ("connector", "platform_message_id", "sender", "sender_name", "received_at", "brain_status", "brain_error")
    readonly_fields = fields
