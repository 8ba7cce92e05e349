"""ASGI entry point for daphne: HTTP now, websockets as later issues add them.

Configuration errors (a missing SECRET_KEY or FERNET_KEYS with DEBUG off, …) stop start-up here
with the system-check message that names the variable, before any request is served.
"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "brain_connectors.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.management import call_command  # noqa: E402

call_command("check", fail_level="ERROR")

application = ProtocolTypeRouter({"http": get_asgi_application()})
