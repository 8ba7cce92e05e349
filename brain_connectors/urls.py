"""Project URLs: the site-wide routes and one include() per app.

Site-wide: the front door `/`, health, admin, sign-in, the API root, schema and docs, error handlers. Each app's own routes, REST
routers included, live in its ``urls.py``; URL names are global (no namespaces), so ``reverse("connector-list")``
and ``{% url "preferences" %}`` work as before."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter
from rest_framework.urlpatterns import format_suffix_patterns

import connectors.urls
import conversations.urls
import routing.accounts.urls
import routing.urls
from brain_connectors import health, home

# One browsable root for /api/v1/ listing every app's viewsets, as a single DefaultRouter would; the apps' routers
# leave their root view out.
api_root = DefaultRouter(trailing_slash=True)
api_root.registry.extend([*connectors.urls.router.registry, *routing.urls.router.registry])

# API clients get the JSON error envelope even for a URL that matches no route.
handler404 = "brain_connectors.shared.api_errors.not_found"
handler400 = "brain_connectors.shared.api_errors.bad_request"  # e.g. a body over DATA_UPLOAD_MAX_MEMORY_SIZE

urlpatterns = [
    path("", home.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    # End users (not staff) sign in here; staff pages keep the admin login (settings.LOGIN_URL).
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(next_page="/preferences/", redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="/accounts/login/"), name="logout"),
    # A forgotten password, and an invitation's first one (routing.accounts).
    path("", include(routing.accounts.urls)),
    path("", include(connectors.urls)),
    path("", include(routing.urls)),
    path("", include(conversations.urls)),
    path(
        "api/v1/",
        include(format_suffix_patterns([path("", api_root.get_api_root_view(), name=api_root.root_view_name)])),
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs page is for people in a browser: send them to the admin login instead of a 401.
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="schema")), name="swagger-ui"),
]
