"""Django admin for staff. Every change goes through `connectors.services`, so the admin checks the
same object permissions and writes the same audit rows as the API.

Staff see only the connectors they may view. Credentials are write-only: the form has an empty
"new credentials" box and shows only whether credentials are set.
"""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import csrf_protect_m
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from guardian.admin import (
    AdminGroupObjectPermissionsForm,
    AdminUserObjectPermissionsForm,
    GuardedModelAdminMixin,
)

from audit import services as audit
from brain_connectors.shared.errors import ServiceError
from brain_connectors.shared.parsers import SafeJSONFormField
from connectors import services
from connectors.api import tokens
from connectors.models import (
    PERM_ADMIN,
    PERM_MANAGE,
    PERM_SEND,
    PERM_VIEW,
    ApiToken,
    Connector,
    Delivery,
    InboundMessage,
)
from connectors.permissions import LEVELS, Principal, can_create_connectors, has_perm, viewable_connectors
from connectors.registry.kinds import UnknownKind, available_kinds, get_connector_class

# Staff land on the live dashboard from every admin page's "View site" link.
admin.site.site_header = "BRAIN Connectors"
admin.site.site_title = "BRAIN Connectors"
admin.site.site_url = "/dashboard/"


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


class ConnectorAdminForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=())
    config = SafeJSONFormField(required=False, initial=dict, widget=forms.Textarea(attrs={"rows": 4}))
    new_credentials = SafeJSONFormField(
        required=False,
        label="New credentials",
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="Write-only JSON object. Leave empty to keep the current credentials; they are never shown.",
    )

    class Meta:
        model = Connector
        fields = ["id", "kind", "display_name", "config", "quota_per_minute", "recipient_quota_per_minute"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "kind" in self.fields:
            self.fields["kind"].choices = [(k, k) for k in available_kinds()]

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind") or self.instance.kind
        try:
            kind_class = get_connector_class(kind)
        except UnknownKind as exc:
            self.add_error(None, str(exc))
            return cleaned
        config = cleaned.get("config")
        if config is None:
            cleaned["config"] = config = {}
        if not isinstance(config, dict):
            self.add_error("config", "Must be a JSON object.")
        else:
            for path, error in kind_class.validate_config(config).items():
                self.add_error("config", f"{path}: {error}")
        credentials = cleaned.get("new_credentials")
        if credentials not in (None, "", {}):
            if not isinstance(credentials, dict):
                self.add_error("new_credentials", "Must be a JSON object.")
            else:
                for path, error in kind_class.validate_credentials(credentials).items():
                    self.add_error("new_credentials", f"{path}: {error}")
        return cleaned


class SendTestForm(forms.Form):
    recipient = forms.CharField(max_length=255, help_text="A platform address: chat id, phone number, e-mail, CLI user.")
    content = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), initial="Test message from BRAIN Connectors.", max_length=10_000
    )


class ConnectorAdmin(GuardedModelAdminMixin, ServiceBackedAdmin):
    form = ConnectorAdminForm
    list_display = ("id", "display_name", "kind", "status", "last_heartbeat", "has_credentials_display")
    list_filter = ("kind", "status")
    search_fields = ("id", "display_name")
    ordering = ("id",)
    actions = ["start_selected", "stop_selected", "test_selected"]

    @admin.display(description="Credentials", boolean=True)
    def has_credentials_display(self, obj):
        return obj.has_credentials

    def get_readonly_fields(self, request, obj=None):
        base = ["status", "has_credentials_display", "created_at", "updated_at", "last_heartbeat", "last_error",
                "lease_owner", "lease_expires_at"]
        return (["id", "kind"] + base) if obj else base

    def get_fields(self, request, obj=None):
        fields = ["id", "kind", "display_name", "config", "quota_per_minute", "recipient_quota_per_minute"]
        if obj is None or has_perm(principal_of(request), PERM_ADMIN, obj):
            fields.append("new_credentials")
        if obj is not None:
            fields += ["status", "has_credentials_display", "created_at", "updated_at", "last_heartbeat",
                       "last_error", "lease_owner", "lease_expires_at"]
        return fields

    # --- who sees what ------------------------------------------------------------------------
    def get_queryset(self, request):
        return viewable_connectors(principal_of(request))

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return self.has_module_permission(request)
        return has_perm(principal_of(request), PERM_VIEW, obj)

    def has_change_permission(self, request, obj=None):
        if obj is None:
            # The changelist and actions are open to staff; each action checks the object.
            return self.has_module_permission(request)
        return has_perm(principal_of(request), PERM_MANAGE, obj)

    def has_delete_permission(self, request, obj=None):
        return obj is not None and has_perm(principal_of(request), PERM_ADMIN, obj)

    def has_add_permission(self, request):
        return request.user.is_staff and can_create_connectors(principal_of(request))

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletion goes one by one, through the service
        return actions

    # --- writes go through services ------------------------------------------------------------
    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        credentials = data.get("new_credentials")
        principal = principal_of(request)
        if change:
            changes = {
                name: data[name]
                for name in ("display_name", "config", "quota_per_minute", "recipient_quota_per_minute")
                if name in form.changed_data
            }
            if credentials:
                changes["credentials"] = credentials
            if changes:
                services.update_connector(principal, obj.pk, **changes)
        else:
            services.register_connector(
                principal,
                id=data["id"],
                kind=data["kind"],
                display_name=data["display_name"],
                config=data.get("config") or {},
                credentials=credentials or {},
                quota_per_minute=data.get("quota_per_minute"),
                recipient_quota_per_minute=data.get("recipient_quota_per_minute"),
            )
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        services.delete_connector(principal_of(request), obj.pk)

    def get_deleted_objects(self, objs, request):
        # What goes with a connector (deliveries, inbound messages, conversation memory, paired
        # identities…) is listed for the staff member to see, but whether the connector may be
        # deleted is the service's decision (admin permission on it, connector stopped): Django's
        # per-model delete permissions on those rows do not apply.
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected

    def _audit_refusal(self, request, object_id, perm, action):
        """Django refuses some requests before any service runs (403, or the "doesn't exist" redirect
        for a hidden connector): leave the `denied` audit row a refused service call would leave."""
        connector = Connector.objects.filter(pk=unquote(object_id)).first()
        principal = principal_of(request)
        if connector is None or has_perm(principal, perm, connector):
            return
        hidden = not has_perm(principal, PERM_VIEW, connector)
        audit.record(
            action,
            principal=principal,
            result=audit.DENIED,
            target_type="connector",
            target_id=connector.pk,
            details={"via": principal.via, "error": "not_found" if hidden else "permission_denied"},
        )

    # Refusals the admin itself decides (no service call) are audited here, as the API does.
    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if object_id is not None:
            if request.method == "POST":
                self._audit_refusal(request, object_id, PERM_MANAGE, "connector.update")
            else:
                self._audit_refusal(request, object_id, PERM_VIEW, "connector.get")
        return super().changeform_view(request, object_id, form_url, extra_context)

    @csrf_protect_m
    def delete_view(self, request, object_id, extra_context=None):
        self._audit_refusal(request, object_id, PERM_ADMIN, "connector.delete")
        return super().delete_view(request, object_id, extra_context)

    def _run_each(self, request, queryset, service, verb):
        principal = principal_of(request)
        ids = list(queryset.values_list("pk", flat=True))
        # Selected ids the user may not view are not in `queryset`: the service refuses them (as
        # "does not exist", audited) instead of the action skipping them silently.
        ids += sorted(set(request.POST.getlist(ACTION_CHECKBOX_NAME)) - set(ids))
        for connector_id in ids:
            try:
                result = service(principal, connector_id)
            except ServiceError as exc:
                self.message_user(request, f"{connector_id}: {exc.message}", messages.ERROR)
                continue
            if hasattr(result, "ok"):
                level = messages.SUCCESS if result.ok else messages.WARNING
                self.message_user(request, f"{connector_id}: {'healthy' if result.ok else 'unhealthy'} {result.detail}", level)
            else:
                level = messages.SUCCESS if result.status != "ERROR" else messages.WARNING
                self.message_user(request, f"{connector_id}: {verb}, now {result.status}. {result.last_error}", level)

    @admin.action(description="Start selected connectors")
    def start_selected(self, request, queryset):
        self._run_each(request, queryset, services.start_connector, "started")

    @admin.action(description="Stop selected connectors")
    def stop_selected(self, request, queryset):
        self._run_each(request, queryset, services.stop_connector, "stopped")

    @admin.action(description="Test selected connectors (health check)")
    def test_selected(self, request, queryset):
        self._run_each(request, queryset, services.test_connector, "tested")

    # --- send a test message, see deliveries -----------------------------------------------
    change_form_template = "admin/connectors/connector/change_form.html"

    def get_urls(self):
        from django.urls import path

        custom = [
            path(
                "<path:object_id>/send-test/",
                self.admin_site.admin_view(self.send_test_view),
                name="connectors_connector_send_test",
            )
        ]
        return custom + super().get_urls()

    def send_test_view(self, request, object_id):
        """A form that sends one message through the normal pipeline (send permission)."""
        from django.template.response import TemplateResponse

        connector = Connector.objects.filter(pk=unquote(object_id)).first()
        principal = principal_of(request)
        if connector is None or not has_perm(principal, PERM_VIEW, connector):
            self._audit_refusal(request, object_id, PERM_SEND, "message.send")
            raise Http404("No such connector.")
        form = SendTestForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                delivery, _ = services.send_message(
                    principal, connector.pk, form.cleaned_data["recipient"], form.cleaned_data["content"]
                )
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                delivery.refresh_from_db()
                self.message_user(
                    request, f"Test message queued as delivery {delivery.pk}: now {delivery.status}.", messages.SUCCESS
                )
                return redirect(
                    reverse("admin:connectors_delivery_changelist") + f"?connector__id__exact={connector.pk}"
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": connector,
            "form": form,
            "title": f"Send a test message via {connector}",
            "can_send": has_perm(principal, PERM_SEND, connector),
        }
        return TemplateResponse(request, "admin/connectors/connector/send_test.html", context)

    # --- object permissions (guardian's pages, writes through services) ------------------------
    def _admin_object_or_404(self, request, object_pk):
        action = "permission.grant" if request.method == "POST" else "connector.get"
        self._audit_refusal(request, object_pk, PERM_ADMIN, action)
        connector = Connector.objects.filter(pk=object_pk).first()
        principal = principal_of(request)
        if connector is None or not has_perm(principal, PERM_VIEW, connector):
            raise Http404("No such connector.")
        if not has_perm(principal, PERM_ADMIN, connector):
            raise DjangoPermissionDenied
        return connector

    def obj_perms_manage_view(self, request, object_pk):
        self._admin_object_or_404(request, object_pk)
        return super().obj_perms_manage_view(request, object_pk)

    def obj_perms_manage_user_view(self, request, object_pk, user_id):
        self._admin_object_or_404(request, object_pk)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        self._admin_object_or_404(request, object_pk)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)

    def get_obj_perms_manage_user_form(self, request):
        return _service_backed_form(AdminUserObjectPermissionsForm, principal_of(request), "user")

    def get_obj_perms_manage_group_form(self, request):
        return _service_backed_form(AdminGroupObjectPermissionsForm, principal_of(request), "group")


def _service_backed_form(base, principal, grantee_attr):
    """Guardian's permission form, limited to our four levels and saving through the services."""

    class Form(base):
        def get_obj_perms_field_choices(self):
            return [(perm, perm) for perm in LEVELS]

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


admin.site.register(Connector, ConnectorAdmin)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: the admin shows them and changes nothing."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    """Status and errors only: message content stays out of the admin."""

    list_display = ("id", "connector", "recipient", "status", "attempts", "created_at", "sent_at", "last_error")
    list_filter = ("status", ("connector", admin.RelatedOnlyFieldListFilter))  # only viewable connectors
    search_fields = ("id", "recipient", "platform_message_id")
    fields = ("id", "connector", "recipient", "status", "attempts", "next_attempt_at", "platform_message_id",
              "last_error", "principal", "idempotency_key", "created_at", "updated_at", "sent_at", "delivered_at")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).filter(connector__in=viewable_connectors(principal_of(request)))

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return obj is None or has_perm(principal_of(request), PERM_VIEW, obj.connector)


@admin.register(InboundMessage)
class InboundMessageAdmin(DeliveryAdmin):
    list_display = ("platform_message_id", "connector", "sender", "received_at", "brain_status")
    list_filter = ("brain_status", ("connector", admin.RelatedOnlyFieldListFilter))
    search_fields = ("platform_message_id", "sender")
    fields = ("connector", "platform_message_id", "sender", "sender_name", "received_at", "brain_status", "brain_error")
    readonly_fields = fields


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Tokens are created with `manage.py create_api_token`; here they can be seen and revoked."""

    list_display = ("prefix", "user", "name", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "user__username", "name")
    fields = list_display
    readonly_fields = fields
    actions = ["revoke_selected"]

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        return qs if request.user.is_superuser else qs.filter(user=request.user)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser or obj is None or obj.user_id == request.user.pk

    @admin.action(description="Revoke selected tokens")
    def revoke_selected(self, request, queryset):
        for token in queryset:
            try:
                tokens.revoke_token(principal_of(request), token.prefix)
            except ServiceError as exc:
                self.message_user(request, f"{token.prefix}: {exc.message}", messages.ERROR)
        self.message_user(request, "Revoked.", messages.SUCCESS)




# --- alert recipients (connectors.monitoring.health) ---------------------------------------------------
from connectors.models import AlertRecipient  # noqa: E402  (kept with the admin that uses it)


@admin.register(AlertRecipient)
class AlertRecipientAdmin(ServiceBackedAdmin):
    """Who hears about downtime. Writes go through connectors.monitoring.health (permission checks, audit):
    Django's model permissions on alert recipients, plus send permission on the channel connector."""

    fields = ("connector", "recipient", "description", "active")
    list_display = ("recipient", "connector", "description", "active", "created_at")
    list_filter = ("active", ("connector", admin.RelatedOnlyFieldListFilter))
    search_fields = ("recipient", "description")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(connector__in=viewable_connectors(principal_of(request)))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "connector":
            kwargs["queryset"] = viewable_connectors(principal_of(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        from connectors.monitoring import alert_recipients as monitoring

        saved = monitoring.save_alert_recipient(
            principal_of(request), pk=obj.pk if change else None, connector_id=obj.connector_id,
            recipient=obj.recipient, description=obj.description, active=obj.active,
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        from connectors.monitoring import alert_recipients as monitoring

        monitoring.delete_alert_recipient(principal_of(request), obj.pk)



# --- event subscriptions -------------------------------------------------------------------------

from connectors.models import EventDelivery, EventSubscription  # noqa: E402  (this section's own models)


class EventSubscriptionForm(forms.ModelForm):
    """No secret field: the server generates it, and shows it once in a message (create, rotate)."""

    event_types = forms.CharField(
        max_length=2000,
        help_text="Comma-separated event types or prefixes ending in .* (e.g. connector.message.*, connector.error).",
    )

    class Meta:
        model = EventSubscription
        fields = ["url", "event_types", "description", "active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and isinstance(self.instance.event_types, list):
            self.initial["event_types"] = ", ".join(self.instance.event_types)

    def clean_event_types(self):
        # Shape only; the service judges the types (and audits a refusal).
        return [t.strip() for t in self.cleaned_data["event_types"].split(",") if t.strip()]


@admin.register(EventSubscription)
class EventSubscriptionAdmin(ServiceBackedAdmin):
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
        fields = ["url", "event_types", "description", "active"]
        return fields + list(self.readonly_fields) if obj else fields

    def get_queryset(self, request):
        qs = super().get_queryset(request).select_related("owner")
        return qs if request.user.is_superuser else qs.filter(owner=request.user)

    def _mine(self, request, obj):
        return obj is None or request.user.is_superuser or obj.owner_id == request.user.pk

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request) and self._mine(request, obj)

    has_change_permission = has_view_permission
    has_delete_permission = has_view_permission

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletion goes one by one, through the service
        return actions

    def save_model(self, request, obj, form, change):
        from connectors.events import subscriptions

        data = form.cleaned_data
        principal = principal_of(request)
        if change:
            changes = {name: data[name] for name in ("url", "event_types", "description", "active")
                       if name in form.changed_data}
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
        from connectors.events import subscriptions

        subscriptions.delete_subscription(principal_of(request), obj.pk)


    @admin.action(description="Rotate secret (the new one is shown once)")
    def rotate_secret_selected(self, request, queryset):
        from connectors.events import subscriptions

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
class EventDeliveryAdmin(ReadOnlyAdmin):
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

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if not self.has_module_permission(request):
            return False
        return obj is None or request.user.is_superuser or obj.subscription.owner_id == request.user.pk
