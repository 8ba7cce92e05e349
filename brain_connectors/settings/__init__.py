"""Settings, read from the environment: DJANGO_SETTINGS_MODULE=brain_connectors.settings gathers every part here.

Each part holds one concern and imports what it reads from .environment (which loads `.env` once,
before any part reads a variable), so the order below does not matter. settings_test.py imports
this whole and overrides a few.
"""
from brain_connectors.settings.api import *  # noqa: F403
from brain_connectors.settings.audit_chain import *  # noqa: F403
from brain_connectors.settings.background import *  # noqa: F403
from brain_connectors.settings.bus import *  # noqa: F403
from brain_connectors.settings.connectors import *  # noqa: F403
from brain_connectors.settings.environment import *  # noqa: F403
from brain_connectors.settings.keys import *  # noqa: F403
from brain_connectors.settings.logs import *  # noqa: F403
from brain_connectors.settings.people import *  # noqa: F403
from brain_connectors.settings.project import *  # noqa: F403
from brain_connectors.settings.security import *  # noqa: F403
from brain_connectors.settings.storage import *  # noqa: F403
