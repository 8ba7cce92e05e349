"""Admin of API tokens: staff see their own (superusers: all) and may revoke them."""

from django.contrib import admin, messages

from brain_connectors.shared.errors import ServiceError
from connectors import tokens
from connectors.admin.base import OpenToStaff, ReadOnlyAdmin, principal_of
from connectors.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(OpenToStaff, ReadOnlyAdmin):
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
