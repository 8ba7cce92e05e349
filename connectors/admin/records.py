"""Admin of what the connectors carried: deliveries (read-only; a dead or stuck one can be re-queued), inbound messages."""

from django.contrib import admin, messages

from brain_connectors.shared.errors import ServiceError
from connectors import services
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
    actions = ["requeue_selected"]

    def has_view_permission(self, request, obj=None):
        return obj is None or has_perm(principal_of(request), PERM_VIEW, obj.connector)

    @admin.action(description="Re-queue selected deliveries (failed, dead or stuck sending)")
    def requeue_selected(self, request, queryset):
        """Each one through the service: it checks send permission on the connector and audits."""
        principal = principal_of(request)
        done = 0
        for pk in queryset.values_list("pk", flat=True):
            try:
                services.requeue_delivery(principal, pk)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"{done} deliver{'y' if done == 1 else 'ies'} queued again.", messages.SUCCESS)


@admin.register(InboundMessage)
class InboundMessageAdmin(DeliveryAdmin):
    list_display = ("platform_message_id", "connector", "sender", "received_at", "brain_status")
    list_filter = ("brain_status", ("connector", admin.RelatedOnlyFieldListFilter))
    search_fields = ("platform_message_id", "sender")
    fields = ("connector", "platform_message_id", "sender", "sender_name", "received_at", "brain_status", "brain_error")
    readonly_fields = fields
    actions = []
