"""The connector admin: staff see the connectors they may view and change them through the services."""

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import csrf_protect_m
from django.contrib.admin.templatetags.admin_list import _boolean_icon
from django.contrib.admin.utils import unquote
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from brain_connectors.shared.errors import ServiceError
from connectors import services
from connectors.admin.base import NoBulkDelete, OpenToStaff, ServiceBackedAdmin, principal_of
from connectors.admin.connector_access import ConnectorObjectPermissions, audit_refusal
from connectors.admin.connector_forms import (
    CONFIG,
    CREDENTIALS,
    ConnectorAdminForm,
    KindChoiceForm,
    SendTestForm,
    connector_form_for,
    field_names,
)
from connectors.models import PERM_ADMIN, PERM_MANAGE, PERM_SEND, PERM_VIEW, Connector
from connectors.permissions import can_create_connectors, has_perm, viewable_connectors
from connectors.registry.kinds import available_kinds, get_connector_class, inbound_url_of

EDITABLE_FIELDS = ["id", "kind", "display_name", "quota_per_minute", "recipient_quota_per_minute"]
STATE_FIELDS = ["status", "has_credentials_display", "inbound_url_display", "created_at", "updated_at", "last_heartbeat", "last_error",
                "lease_owner", "lease_expires_at"]
UPDATABLE_FIELDS = ("display_name", "config", "quota_per_minute", "recipient_quota_per_minute")


@admin.register(Connector)
class ConnectorAdmin(OpenToStaff, NoBulkDelete, ConnectorObjectPermissions, ServiceBackedAdmin):
    form = ConnectorAdminForm
    list_display = ("id", "display_name", "kind", "status", "last_heartbeat", "has_credentials_display")
    list_filter = ("kind", "status")
    search_fields = ("id", "display_name")
    ordering = ("id",)
    actions = ["start_selected", "stop_selected", "test_selected"]
    change_form_template = "admin/connectors/connector/change_form.html"

    @admin.display(description="Credentials")
    def has_credentials_display(self, obj):
        # A kind that takes no credentials is not missing any: no red cross for it.
        if not get_connector_class(obj.kind).credentials_schema.get("properties"):
            return "not needed"
        return _boolean_icon(obj.has_credentials)

    @admin.display(description="Inbound URL (paste into the platform's settings)")
    def inbound_url_display(self, obj):
        return inbound_url_of(obj) or "-"

    def get_readonly_fields(self, request, obj=None):
        return (["id", "kind"] + STATE_FIELDS) if obj else list(STATE_FIELDS)

    def kind_of(self, request, obj):
        """The kind whose fields the form shows: the connector's, or on the add page the one chosen first."""
        if obj is not None:
            return obj.kind
        kind = request.POST.get("kind") or request.GET.get("kind")
        return kind if kind in available_kinds() else None

    def may_set_credentials(self, request, obj):
        return obj is None or has_perm(principal_of(request), PERM_ADMIN, obj)

    def get_fieldsets(self, request, obj=None):
        kind = self.kind_of(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # View-only: the stored settings as they are (no credentials), no form.
            return [(None, {"fields": [*EDITABLE_FIELDS, "config"]}), ("State", {"fields": STATE_FIELDS})]
        label = get_connector_class(kind).label or kind
        fieldsets = [(None, {"fields": EDITABLE_FIELDS})]
        if config_fields := field_names(kind, CONFIG):
            fieldsets.append((f"Settings: {label}", {"fields": config_fields}))
        advanced = ["config"]
        if self.may_set_credentials(request, obj):
            if credential_fields := field_names(kind, CREDENTIALS):
                keep = " Leave a field empty to keep its current value." if obj is not None else ""
                fieldsets.append(("Credentials (write-only)", {
                    "fields": credential_fields, "description": f"Stored encrypted and never shown again.{keep}"}))
            advanced.append("new_credentials")
        fieldsets.append(("Advanced: raw JSON", {"fields": advanced, "classes": ["collapse"]}))
        if obj is not None:
            fieldsets.append(("State", {"fields": STATE_FIELDS}))
        return fieldsets

    def get_form(self, request, obj=None, change=False, **kwargs):
        kind = self.kind_of(request, obj)
        if kind is None or (obj is not None and not self.has_change_permission(request, obj)):
            return super().get_form(request, obj, change=change, **kwargs)
        form = connector_form_for(kind, with_credentials=self.may_set_credentials(request, obj), editing=obj is not None)
        # Django drops read-only declared fields from self.form only; do the same for this kind's form.
        hidden = dict.fromkeys(f for f in self.get_readonly_fields(request, obj) if f in form.declared_fields)
        kwargs["form"] = type(form.__name__, (form,), hidden)
        return super().get_form(request, obj, change=change, **kwargs)

    @csrf_protect_m
    def add_view(self, request, form_url="", extra_context=None):
        """First the kind, then that kind's fields."""
        if self.kind_of(request, None) is None and self.has_add_permission(request):
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "form": KindChoiceForm(),
                "title": "Add connector: choose its kind",
            }
            return TemplateResponse(request, "admin/connectors/connector/choose_kind.html", context)
        kind = self.kind_of(request, None)
        if kind is not None:  # the page says which kind these fields are for
            label = get_connector_class(kind).label or kind
            extra_context = {"title": f"Add connector: {label} ({kind})", **(extra_context or {})}
        return super().add_view(request, form_url, extra_context)

    # --- who sees what ------------------------------------------------------------------------
    def get_queryset(self, request):
        return viewable_connectors(principal_of(request))

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

    # --- writes go through services ------------------------------------------------------------
    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        credentials = data.get("new_credentials")
        principal = principal_of(request)
        if change:
            changes = {name: data[name] for name in UPDATABLE_FIELDS if name in form.changed_data and name != "config"}
            if data.get("config") is not None and data["config"] != form.stored_config:
                changes["config"] = data["config"]
            if credentials is not None:
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

    # Refusals the admin itself decides (no service call) are audited here, as the API does.
    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if object_id is not None:
            if request.method == "POST":
                audit_refusal(request, object_id, PERM_MANAGE, "connector.update")
            else:
                audit_refusal(request, object_id, PERM_VIEW, "connector.get")
        return super().changeform_view(request, object_id, form_url, extra_context)

    @csrf_protect_m
    def delete_view(self, request, object_id, extra_context=None):
        audit_refusal(request, object_id, PERM_ADMIN, "connector.delete")
        return super().delete_view(request, object_id, extra_context)

    # --- start, stop, test -------------------------------------------------------------------
    def run_on_each(self, request, queryset, service, verb):
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
        self.run_on_each(request, queryset, services.start_connector, "started")

    @admin.action(description="Stop selected connectors")
    def stop_selected(self, request, queryset):
        self.run_on_each(request, queryset, services.stop_connector, "stopped")

    @admin.action(description="Test selected connectors (health check)")
    def test_selected(self, request, queryset):
        self.run_on_each(request, queryset, services.test_connector, "tested")

    # --- send a test message, see deliveries -----------------------------------------------
    def get_urls(self):
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
        connector = Connector.objects.filter(pk=unquote(object_id)).first()
        principal = principal_of(request)
        if connector is None or not has_perm(principal, PERM_VIEW, connector):
            audit_refusal(request, object_id, PERM_SEND, "message.send")
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
