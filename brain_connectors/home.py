"""The front door `/`: a page linking the admin, the dashboard, /preferences/ and the API docs, with sign-in."""
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@never_cache  # it names the signed-in person, so no shared cache may keep it
@require_GET
def home(request):
    return render(request, "home/index.html")
