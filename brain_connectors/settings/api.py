"""The REST API: DRF, its OpenAPI schema (drf-spectacular), paging, and request quotas and throttles."""
from brain_connectors.settings.environment import env

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "connectors.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # IsAuthenticated that also throttles unauthenticated clients per address (429).
    "DEFAULT_PERMISSION_CLASSES": ["connectors.throttling.IsAuthenticatedOrThrottled"],
    "DEFAULT_THROTTLE_CLASSES": ["connectors.throttling.ClientQuotaThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "brain_connectors.shared.api_errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "brain_connectors.shared.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
    # JSON nested past brain_connectors.shared.parsers.MAX_JSON_DEPTH is a 400, not a RecursionError (a 500).
    "DEFAULT_PARSER_CLASSES": [
        "brain_connectors.shared.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# The most rows one page of a list may ask for with ?limit= (more is a 400, not a silent clamp).
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=500)

SPECTACULAR_SETTINGS = {
    "TITLE": "BRAIN Connectors API",
    "DESCRIPTION": "The synapse layer between BRAIN and people on real channels.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["connectors.throttling.IsAuthenticatedOrThrottled"],
    "SWAGGER_UI_DIST": "SIDECAR",  # assets served by the app itself: works offline
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "status": name each choice set, so the schema needs no guessed names.
    "ENUM_NAME_OVERRIDES": {
        "ConnectorStatusEnum": "connectors.models.ConnectorStatus",
        "DeliveryStatusEnum": "connectors.models.DeliveryStatus",
        # Serializers that list the values alone (no labels) are a different choice set to it.
        "DeliveryStatusValuesEnum": ["queued", "sending", "sent", "delivered", "failed", "dead"],
        "NotificationStatusEnum": ["sending", "delivered", "exhausted", "unroutable"],
        "NotificationTypeEnum": ["standard", "urgent", "digest"],
    },
}

API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=600)
QUOTA_KEY_PREFIX = env.str("QUOTA_KEY_PREFIX", default="brain:quota:")

# --- Unauthenticated clients: throttle, and counted audit of refusals (access/refusals.py) ---
# Requests to the API and /metrics without valid credentials (none, or a refused token) share a
# bucket per client address (IPv6: per /64) of this many a minute; beyond it, 429 with Retry-After.
# 0 turns the throttle off.
API_ANON_RATE_PER_MINUTE = env.int("API_ANON_RATE_PER_MINUTE", default=60)
# Refused tokens (and logins refused during a lockout) are audited once per window per kind; the
# repeats are counted and written as one `….repeated` row when the window ends (settings/background.py).
REFUSAL_AUDIT_WINDOW_SECONDS = env.int("REFUSAL_AUDIT_WINDOW_SECONDS", default=60)
