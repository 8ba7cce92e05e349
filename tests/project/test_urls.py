"""Routes live in each app's urls.py (issue 15); brain_connectors/urls.py only includes them.

The split changed no URL: these paths, names and views are the ones the single project urls.py had."""
import ast
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import resolve, reverse

PROJECT_URLS = Path(settings.BASE_DIR) / "brain_connectors" / "urls.py"
APPS = ("audit", "connectors", "conversations", "routing")

# (path, URL name, view class or function, viewset actions or None)
ROUTES = [
    ("/", "home", "brain_connectors.home.home", None),
    ("/healthz", "healthz", "brain_connectors.health.healthz", None),
    ("/metrics", "metrics", "connectors.monitoring.metrics.metrics_view", None),
    ("/dashboard/state/", "dashboard-state", "connectors.monitoring.dashboard.dashboard_state", None),
    ("/accounts/login/", "login", "django.contrib.auth.views.LoginView", None),
    ("/preferences/", "preferences", "routing.views.preferences_page", None),
    ("/preferences/pair/ABC123/", "preferences-pair-link", "routing.pairing.link_view.pair_link", None),
    ("/api/v1/", "api-root", "rest_framework.routers.APIRootView", None),
    ("/api/v1/.json", "api-root", "rest_framework.routers.APIRootView", None),
    ("/api/v1/events/", "event-list", "connectors.api.views.EventListView", None),
    ("/api/v1/connectors/", "connector-list", "connectors.api.views.ConnectorViewSet", {"get": "list", "post": "create"}),
    ("/api/v1/connectors/tg-1/send/", "connector-send", "connectors.api.views.ConnectorViewSet", {"post": "send"}),
    ("/api/v1/connectors/tg-1.json", "connector-detail", "connectors.api.views.ConnectorViewSet",
     {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
    ("/api/v1/tokens/abc/", "token-detail", "connectors.api.views.TokenViewSet", {"delete": "destroy"}),
    ("/api/v1/subscriptions/s1/rotate-secret/", "subscription-rotate-secret",
     "connectors.api.subscriptions.SubscriptionViewSet", {"post": "rotate_secret"}),
    ("/api/v1/pairing-codes/channels/", "pairing-code-channels", "routing.api.pairing_codes.PairingCodeViewSet", {"get": "channels"}),
    ("/api/v1/preferences/reorder/", "preference-reorder", "routing.api.preferences.PreferenceViewSet", {"post": "reorder"}),
    ("/api/v1/notifications/n1/acknowledge/", "notification-acknowledge",
     "routing.api.notifications.NotificationViewSet", {"post": "acknowledge"}),
    ("/api/v1/conversations/search/", "conversation-search", "conversations.api.ConversationSearchView", None),
    ("/api/v1/conversations/people/alice/", "conversation-person-erase", "conversations.api_privacy.PersonEraseView",
     None),
    ("/api/v1/conversations/people/alice/export/", "conversation-person-export",
     "conversations.api_privacy.PersonExportView", None),
    ("/api/schema/", "schema", "drf_spectacular.views.SpectacularAPIView", None),
    ("/api/docs/", "swagger-ui", "drf_spectacular.views.SpectacularSwaggerView", None),
    ("/webhooks/twilio/tw-1/", "webhook-twilio", "connectors.webhooks.platform_webhook", None),
    ("/webhooks/twilio/tw-1/voice/", "webhook-twilio-voice", "connectors.webhooks.platform_webhook", None),
]


def _dotted(func):
    view = getattr(func, "cls", None) or getattr(func, "view_class", None) or func
    return f"{view.__module__}.{view.__qualname__}"


@pytest.mark.parametrize("path,name,view,actions", ROUTES, ids=[r[0] for r in ROUTES])
def test_paths_resolve_to_the_same_views_and_names(path, name, view, actions):
    match = resolve(path)
    # DRF adds "head" to a viewset's actions on its first GET, so it depends on which tests ran before.
    routed = getattr(match.func, "actions", None)
    routed = routed and {method: act for method, act in routed.items() if method != "head"}
    assert (match.url_name, _dotted(match.func), routed) == (name, view, actions)
    assert match.namespace == ""  # names stay global: reverse("connector-list"), {% url "preferences" %}
    if "." not in path and "<" not in path:
        assert reverse(name, kwargs=match.kwargs or None) == path


def test_webhooks_keep_their_family_arguments():
    assert resolve("/webhooks/twilio/tw-1/status/").kwargs == {
        "family": "twilio", "channel": "status", "connector_id": "tw-1",
    }
    assert resolve("/webhooks/inbound/in-1/").kwargs == {"family": "inbound", "connector_id": "in-1"}


def test_the_api_root_still_lists_every_apps_viewsets_in_order():
    root = resolve("/api/v1/").func
    assert list(root.view_initkwargs["api_root_dict"].items()) == [
        ("connectors", "connector-list"), ("deliveries", "delivery-list"), ("tokens", "token-list"),
        ("subscriptions", "subscription-list"), ("identities", "identity-list"),
        ("pairing-codes", "pairing-code-list"), ("preferences", "preference-list"),
        ("notifications", "notification-list"),
    ]


def test_project_urls_import_no_app_view_module():
    """Only each app's urls module: the views are the apps' business."""
    imported = []
    for node in ast.walk(ast.parse(PROJECT_URLS.read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
    from_apps = [name for name in imported if name.split(".")[0] in APPS]
    assert from_apps and all(name.endswith(".urls") for name in from_apps), from_apps


@pytest.mark.django_db
def test_the_api_root_answers_with_every_list_url(admin_client):
    response = admin_client.get("/api/v1/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response.json()["connectors"] == "http://testserver/api/v1/connectors/"
    assert list(response.json()) == [
        "connectors", "deliveries", "tokens", "subscriptions", "identities", "pairing-codes", "preferences",
        "notifications",
    ]
