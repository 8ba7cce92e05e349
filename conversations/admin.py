"""Admin for conversation memory: read-only history, sentiment, retention and privacy actions.

Retention policies go through conversations.privacy; the privacy actions are "Export as JSON" and "Forget this
person".
Staff see the conversations they may read (conversations.access): their own, and everyone's on
connectors where they hold read_conversations."""
import json

from django.contrib import admin, messages
from django.db.models import Avg
from django.http import HttpResponse

from brain_connectors.shared.errors import ServiceError
from connectors.admin.base import ReadOnlyAdmin, ServiceBackedAdmin
from connectors.admin.base import principal_of as admin_principal
from connectors.delivery.attachment_privacy import ExportBudget
from conversations import access, privacy, services
from conversations.models import Conversation, MessageAnalysis, RetentionPolicy


def _people(queryset):
    return [c.person for c in queryset.select_related("person") if c.person is not None]


@admin.action(description="Export as JSON (the person of each selected conversation)")
def export_people(modeladmin, request, queryset):
    principal, exports = admin_principal(request), []
    budget = ExportBudget()  # one response: the file bytes of all the people in it share the limit
    for person in {p.pk: p for p in _people(queryset)}.values():
        try:
            exports.append(privacy.export_person(principal, person, budget))
        except ServiceError as exc:
            modeladmin.message_user(request, exc.message, messages.ERROR)
            return None
    if not exports:
        modeladmin.message_user(request, "None of the selected conversations belongs to a known person.", messages.WARNING)
        return None
    response = HttpResponse(json.dumps(exports, indent=2), content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="conversations-export.json"'
    return response


@admin.action(description="Forget this person (erase all their conversations)")
def forget_people(modeladmin, request, queryset):
    principal = admin_principal(request)
    for person in {p.pk: p for p in _people(queryset)}.values():
        try:
            counts = privacy.erase_person(principal, person)
        except ServiceError as exc:
            modeladmin.message_user(request, exc.message, messages.ERROR)
            continue
        modeladmin.message_user(
            request, f"Forgot {person.get_username()}: {counts['conversations']} conversations, {counts['messages']} messages."
        )


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ("id", "connector", "address", "person", "last_message_at", "sentiment_30_days")
    list_filter = (("connector", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("person__username", "address")
    list_select_related = ("connector", "person")
    readonly_fields = ("connector", "address", "person", "started_at", "last_message_at")
    actions = [export_people, forget_people]
    search_help_text = "Finds people and addresses, and conversations whose messages hold every word (blind index)."

    def get_queryset(self, request):
        return super().get_queryset(request).filter(access.readable_q(admin_principal(request)))

    def get_search_results(self, request, queryset, search_term):
        """Also search the encrypted messages through the blind index, with the same permission
        scoping and audit row as the API (conversations.services.search)."""
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if not search_term.strip():
            return queryset, may_have_duplicates
        try:
            found = services.search(admin_principal(request), search_term, limit=200)
        except ServiceError as exc:
            self.message_user(request, f"Message search: {exc.message}", messages.WARNING)
            return queryset, may_have_duplicates
        return queryset | self.model.objects.filter(pk__in={m.conversation_id for m in found}), True

    @admin.display(description="sentiment (avg of analysed user messages)")
    def sentiment_30_days(self, obj):
        value = MessageAnalysis.objects.filter(message__conversation=obj, message__role="user").aggregate(v=Avg("sentiment"))["v"]
        return "—" if value is None else f"{value:+.2f}"

    def get_readonly_fields(self, request, obj=None):
        principal = admin_principal(request)

        # The trend covers all of the person's channels: shown only to who may read them all.
        # (A per-request callable: the admin instance is shared between requests.)
        @admin.display(description="person's sentiment per day (30 days)")
        def sentiment_trend_30_days(conversation):
            return self._trend(conversation, principal)

        return (*self.readonly_fields, sentiment_trend_30_days)

    @staticmethod
    def _trend(obj, principal):
        if obj.person is None:
            return "—"
        if access.unreadable_connector_count(principal, privacy.person_conversations(obj.person)):
            return "— (needs read_conversations on all of this person's connectors)"
        try:
            _, trend = privacy.person_sentiment(principal, obj.person, 30)  # audited, as the API's
        except ServiceError as exc:
            return f"— ({exc.message})"
        return ", ".join(f"{row['date']}: {row['average']:+.2f} ({row['messages']})" for row in trend) or "—"


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(ServiceBackedAdmin):
    list_display = ("connector", "days", "updated_at")
    fields = ("connector", "days")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("connector",)

    def save_model(self, request, obj, form, change):
        saved = privacy.set_retention_policy(admin_principal(request), obj.connector_id, obj.days)
        obj.pk, obj.updated_at = saved.pk, saved.updated_at

    def delete_model(self, request, obj):
        privacy.delete_retention_policy(admin_principal(request), obj.connector_id)
