"""Read-only admin for the audit log."""

from django.contrib import admin
from django.db.models import F

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: nobody, not even a superuser, adds, edits or deletes audit rows here."""

    list_display = ("chain_position", "time", "action", "principal", "target_type", "target_id", "result")
    list_filter = ("result", "action", "target_type")
    search_fields = ("action", "principal", "target_id")
    date_hierarchy = "time"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
    actions = None
    # Newest first: the rows still waiting for the sealer (no seq yet) on top, then the chain.
    ordering = (F("seq").desc(nulls_first=True), "-id")

    @admin.display(description="seq", ordering="seq")
    def chain_position(self, obj):
        """Unsealed rows are listed too: they have no place in the chain yet."""
        return "(sealing)" if obj.seq is None else obj.seq

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
