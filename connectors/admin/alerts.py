"""Admin of alert recipients (who hears about downtime), writing through connectors.monitoring.alert_recipients."""

from django.contrib import admin

from connectors.admin.base import OnViewableConnectors, ServiceBackedAdmin, principal_of
from connectors.models import AlertRecipient
from connectors.monitoring import alert_recipients
from connectors.permissions import viewable_connectors


@admin.register(AlertRecipient)
class AlertRecipientAdmin(OnViewableConnectors, ServiceBackedAdmin):
    """Who hears about downtime. Writes go through connectors.monitoring.alert_recipients (permission checks, audit):
    Django's model permissions on alert recipients, plus send permission on the channel connector."""

    fields = ("connector", "recipient", "description", "active")
    list_display = ("recipient", "connector", "description", "active", "created_at")
    list_filter = ("active", ("connector", admin.RelatedOnlyFieldListFilter))
    search_fields = ("recipient", "description")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "connector":
            kwargs["queryset"] = viewable_connectors(principal_of(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        saved = alert_recipients.save_alert_recipient(
            principal_of(request), pk=obj.pk if change else None, connector_id=obj.connector_id,
            recipient=obj.recipient, description=obj.description, active=obj.active,
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        alert_recipients.delete_alert_recipient(principal_of(request), obj.pk)
