"""Admin of event subscriptions (through connectors.events.subscriptions) and of their event deliveries."""

from django import forms
from django.contrib import admin, messages

from brain_connectors.shared.errors import ServiceError
from connectors.admin.base import NoBulkDelete, OpenToStaff, ReadOnlyAdmin, ServiceBackedAdmin, principal_of
from connectors.events import subscriptions
from connectors.models import EventDelivery, EventSubscription

SUBSCRIPTION_FIELDS = ("url", "event_types", "description", "active")


class EventSubscriptionForm(forms.ModelForm):
    """No secret field: the server generates it, and shows it once in a message (create, rotate)."""

    event_types = forms.CharField(
        max_length=2000,
        help_text="Comma-separated event types or prefixes ending in .* (e.g. connector.message.*, connector.error).",
    )

    class Meta:
        model = EventSubscription
        fields = list(SUBSCRIPTION_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and isinstance(self.instance.event_types, list):
            self.initial["event_types"] = ", ".join(self.instance.event_types)

    def clean_event_types(self):
        # Shape only; the service judges the types (and audits a refusal).
        return [t.strip() for t in self.cleaned_data["event_types"].split(",") if t.strip()]


@admin.register(EventSubscription)
class EventSubscriptionAdmin(OpenToStaff, NoBulkDelete, ServiceBackedAdmin):
    """Staff manage their own subscriptions (superusers: all) through connectors.events.subscriptions, so
    the admin checks the same rules (unsafe URLs, event types, ownership) and writes the same audit
    rows as the API."""

    form = EventSubscriptionForm
    list_display = ("__str__", "url", "types_display", "active", "owner", "created_at")
    list_filter = ("active",)
    search_fields = ("url", "description")
    readonly_fields = ("id", "owner", "created_at", "updated_at")
    actions = ["rotate_secret_selected"]

    @admin.display(description="Event types")
    def types_display(self, obj):
        return ", ".join(obj.event_types or [])

    def get_fields(self, request, obj=None):
        fields = list(SUBSCRIPTION_FIELDS)
        return fields + list(self.readonly_fields) if obj else fields

    def get_queryset(self, request):
        qs = super().get_queryset(request).select_related("owner")
        return qs if request.user.is_superuser else qs.filter(owner=request.user)

    def is_theirs(self, request, obj):
        return obj is None or request.user.is_superuser or obj.owner_id == request.user.pk

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request) and self.is_theirs(request, obj)

    has_change_permission = has_view_permission
    has_delete_permission = has_view_permission

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        principal = principal_of(request)
        if change:
            changes = {name: data[name] for name in SUBSCRIPTION_FIELDS if name in form.changed_data}
            if changes:
                subscriptions.update_subscription(principal, obj.pk, **changes)
        else:
            created, secret = subscriptions.create_subscription(
                principal, url=data["url"], event_types=data["event_types"],
                description=data.get("description") or "", active=data.get("active", True),
            )
            obj.pk = created.pk
            self.message_user(
                request,
                f"Signing secret of {created}: {secret} (shown this once: copy it now).",
                messages.SUCCESS,
            )
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        subscriptions.delete_subscription(principal_of(request), obj.pk)

    @admin.action(description="Rotate secret (the new one is shown once)")
    def rotate_secret_selected(self, request, queryset):
        for pk in list(queryset.values_list("pk", flat=True)):
            try:
                subscription, secret = subscriptions.rotate_secret(principal_of(request), pk)
            except ServiceError as exc:
                self.message_user(request, f"{pk}: {exc.message}", messages.ERROR)
                continue
            self.message_user(
                request, f"New signing secret of {subscription}: {secret} (shown this once: copy it now).",
                messages.SUCCESS,
            )


@admin.register(EventDelivery)
class EventDeliveryAdmin(OpenToStaff, ReadOnlyAdmin):
    """What happened to each event sent to a subscription: statuses and errors, read-only."""

    list_display = ("event", "subscription", "status", "attempts", "response_status", "created_at", "sent_at",
                    "last_error")
    list_filter = ("status",)
    list_select_related = ("event", "subscription")
    search_fields = ("id", "event__event_id", "subscription__url")
    fields = ("id", "subscription", "event", "status", "attempts", "next_attempt_at", "response_status",
              "last_error", "created_at", "updated_at", "sent_at")
    readonly_fields = fields

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        return qs if request.user.is_superuser else qs.filter(subscription__owner=request.user)

    def has_view_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        return obj is None or request.user.is_superuser or obj.subscription.owner_id == request.user.pk

