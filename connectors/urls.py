"""Routes of the connectors app: REST API, event log, metrics, dashboard and platform webhooks.

Included at the site root by ``brain_connectors/urls.py``; names are global (no namespace)."""
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from connectors.api.attachments import AttachmentUploadView
from connectors.api.subscriptions import SubscriptionViewSet
from connectors.api.views import ConnectorViewSet, DeliveryViewSet, EventListView, TokenViewSet
from connectors.downloads import attachment_download
from connectors.monitoring import dashboard
from connectors.monitoring.metrics import metrics_view
from connectors.webhooks import platform_webhook

# The one API root (/api/v1/) lists every app's viewsets, so it is built in brain_connectors/urls.py from this
# registry; this router adds only its own routes (with their `.json` format suffixes).
router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("connectors", ConnectorViewSet, basename="connector")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("tokens", TokenViewSet, basename="token")
router.register("subscriptions", SubscriptionViewSet, basename="subscription")

urlpatterns = [
    path("metrics", metrics_view, name="metrics"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/state/", dashboard.dashboard_state, name="dashboard-state"),
    path("api/v1/events/", EventListView.as_view(), name="event-list"),
    path("api/v1/attachments/", AttachmentUploadView.as_view(), name="attachment-upload"),
    path("api/v1/", include(router.urls)),
    # Platform webhooks: no session or token; each platform verifies its own signature or secret.
    path("webhooks/telegram/<str:connector_id>/", platform_webhook, {"family": "telegram"}, name="webhook-telegram"),
    path("webhooks/twilio/<str:connector_id>/", platform_webhook, {"family": "twilio"}, name="webhook-twilio"),
    path(
        "webhooks/twilio/<str:connector_id>/voice/",
        platform_webhook,
        {"family": "twilio", "channel": "voice"},
        name="webhook-twilio-voice",
    ),
    path(
        "webhooks/twilio/<str:connector_id>/status/",
        platform_webhook,
        {"family": "twilio", "channel": "status"},
        name="webhook-twilio-status",
    ),
    path("webhooks/inbound/<str:connector_id>/", platform_webhook, {"family": "inbound"}, name="webhook-inbound"),
    path("webhooks/slack/<str:connector_id>/", platform_webhook, {"family": "slack"}, name="webhook-slack"),
    # BRAIN downloads an attachment here: a signed URL from its payload, or a request signed with BRAIN_SIGNING_KEY.
    path("attachments/<uuid:attachment_id>/", attachment_download, name="attachment-download"),
]
