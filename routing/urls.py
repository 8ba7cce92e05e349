"""Routes of the routing app: the preferences page and its pairing link, and the REST API for identities,
pairing codes, preferences and notifications. Included at the site root by ``brain_connectors/urls.py``; names are
global (no namespace)."""
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from routing import pairing, views
from routing.api import IdentityViewSet, PairingCodeViewSet, PreferenceViewSet
from routing.api_notifications import NotificationViewSet

# The API root (/api/v1/) is built in brain_connectors/urls.py from this registry and the connectors app's.
router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("identities", IdentityViewSet, basename="identity")
router.register("pairing-codes", PairingCodeViewSet, basename="pairing-code")
router.register("preferences", PreferenceViewSet, basename="preference")
router.register("notifications", NotificationViewSet, basename="notification")

urlpatterns = [
    path("preferences/", views.preferences_page, name="preferences"),
    path("preferences/pair/<str:code>/", pairing.pair_link, name="preferences-pair-link"),
    path("api/v1/", include(router.urls)),
]
