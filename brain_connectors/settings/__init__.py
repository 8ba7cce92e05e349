"""Settings, read from the environment: DJANGO_SETTINGS_MODULE=brain_connectors.settings gathers every part here.

Each part holds one concern and imports what it reads from .environment (which loads `.env` once,
before any part reads a variable), so the order below does not matter. settings_test.py imports
this whole and overrides a few.
"""
from .api import *  # noqa: F403
from .audit_chain import *  # noqa: F403
from .background import *  # noqa: F403
from .connectors import *  # noqa: F403
from .environment import *  # noqa: F403
from .keys import *  # noqa: F403
from .logs import *  # noqa: F403
from .people import *  # noqa: F403
from .project import *  # noqa: F403
from .security import *  # noqa: F403
