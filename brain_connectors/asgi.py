"""ASGI entry point for daphne: HTTP, and websockets at /ws/events/ (session or token auth).

Configuration errors (a missing SECRET_KEY or FERNET_KEYS with DEBUG off, …) stop start-up here
with the system-check message that names the variable, before any request is served.
"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "brain_connectors.settings")

import gc  # noqa: E402

import django  # noqa: E402

django.setup()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.urls import path  # noqa: E402

from audit import checkpoints  # noqa: E402
from brain_connectors.shared import access_log  # noqa: E402
from connectors.events.stream import EventStreamConsumer  # noqa: E402

call_command("check", fail_level="ERROR")
# daphne writes its access log itself, outside settings.LOGGING: strip query values and pairing
# codes from it too, for every daphne that serves this application (make run, bench/, tests).
access_log.install()

# `make run` has no Celery beat: each daphne process checkpoints the audit chain's head itself
# (at once, then every AUDIT_CHECKPOINT_INTERVAL_SECONDS), so that deleting the newest rows is seen.
if settings.AUDIT_CHECKPOINT_IN_DAPHNE:
    checkpoints.start_writer()

WEBHOOK_PREFIX = "/webhooks/"


class WebhookASGIHandler(ASGIHandler):
    """Django without its middleware, for platform webhooks only.

    Sessions, CSRF, auth, messages and clickjacking mean nothing to a platform calling us, and
    under ASGI every one of Django's MiddlewareMixin middlewares hops twice onto the single
    thread-sensitive executor: all webhooks would queue on that one thread. The webhook view
    authenticates each request itself (secret or signature) and validates the host wherever it
    builds a URL from it.
    """

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(
            self._get_response_async if is_async else self._get_response
        )


def http_router(site, webhooks):
    async def route(scope, receive, send):
        app = webhooks if scope["path"].startswith(WEBHOOK_PREFIX) else site
        await app(scope, receive, send)

    return route


# The Origin check lives in the consumer, so that a refusal carries a close code and a reason.
websocket_routes = URLRouter([path("ws/events/", EventStreamConsumer.as_asgi())])
application = ProtocolTypeRouter(
    {
        "http": http_router(get_asgi_application(), WebhookASGIHandler()),
        "websocket": AuthMiddlewareStack(websocket_routes),
    }
)
# Everything imported so far lives as long as the process: move it out of the collector's sight,
# so that full collections stay short. Without this, they stalled requests for tens of ms
# (bench/webhook_ingest.py: p99 ~75 ms before, ~20 ms after).
gc.freeze()
