"""Routes of the routing app: the preferences page, its pairing link, and the REST API of identities, pairing and notifications.

Included at the site root by ``brain_connectors/urls.py``; names are global (no namespace)."""
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from routing import views
from routing.api.identities import IdentityViewSet
from routing.api.notifications import NotificationViewSet
from routing.api.pairing_codes import PairingCodeViewSet
from routing.api.preferences import PreferenceViewSet
from routing.pairing import link_view

# The API root (/api/v1/) is built in brain_connectors/urls.py from this registry and the connectors app's.
router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("identities", IdentityViewSet, basename="identity")
router.register("pairing-codes", PairingCodeViewSet, basename="pairing-code")
router.register("preferences", PreferenceViewSet, basename="preference")
router.register("notifications", NotificationViewSet, basename="notification")

urlpatterns = [
    path("preferences/", views.preferences_page, name="preferences"),
    path("preferences/pair/<str:code>/", link_view.pair_link, name="preferences-pair-link"),
    path("api/v1/", include(router.urls)),
]
