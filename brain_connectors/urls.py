from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from connectors import dashboard
from connectors.api import ConnectorViewSet, DeliveryViewSet, EventListView, TokenViewSet
from connectors.api_subscriptions import SubscriptionViewSet
from connectors.metrics import metrics_view
from connectors.webhooks import platform_webhook
from conversations import api_privacy as conversations_privacy
from conversations.api import ConversationSearchView
from routing import pairing as routing_pairing
from routing import views as routing_views
from routing.api import IdentityViewSet, PairingCodeViewSet, PreferenceViewSet
from routing.api_notifications import NotificationViewSet

from . import health

router = DefaultRouter(trailing_slash=True)
router.register("connectors", ConnectorViewSet, basename="connector")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("tokens", TokenViewSet, basename="token")
router.register("subscriptions", SubscriptionViewSet, basename="subscription")
router.register("identities", IdentityViewSet, basename="identity")
router.register("pairing-codes", PairingCodeViewSet, basename="pairing-code")
router.register("preferences", PreferenceViewSet, basename="preference")
router.register("notifications", NotificationViewSet, basename="notification")

# API clients get the JSON error envelope even for a URL that matches no route.
handler404 = "connectors.api_errors.not_found"
handler400 = "connectors.api_errors.bad_request"  # e.g. a body over DATA_UPLOAD_MAX_MEMORY_SIZE

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/state/", dashboard.dashboard_state, name="dashboard-state"),
    # End users (not staff) sign in here; staff pages keep the admin login (settings.LOGIN_URL).
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(next_page="/preferences/", redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="/accounts/login/"), name="logout"),
    path("preferences/", routing_views.preferences_page, name="preferences"),
    path("preferences/pair/<str:code>/", routing_pairing.pair_link, name="preferences-pair-link"),
    path("api/v1/events/", EventListView.as_view(), name="event-list"),
    path(
        "api/v1/conversations/people/<str:username>/export/",
        conversations_privacy.PersonExportView.as_view(),
        name="conversation-person-export",
    ),
    path(
        "api/v1/conversations/people/<str:username>/sentiment/",
        conversations_privacy.PersonSentimentView.as_view(),
        name="conversation-person-sentiment",
    ),
    path(
        "api/v1/conversations/people/<str:username>/",
        conversations_privacy.PersonEraseView.as_view(),
        name="conversation-person-erase",
    ),
    path("api/v1/conversations/search/", ConversationSearchView.as_view(), name="conversation-search"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs page is for people in a browser: send them to the admin login instead of a 401.
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="schema")), name="swagger-ui"),
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
]
