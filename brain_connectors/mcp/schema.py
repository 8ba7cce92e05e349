"""What every app's MCP tools share in their schemas and results: connector ids, untrusted text, times.

Text that end users (or platforms quoting them) wrote is returned wrapped by `untrusted()`, so a
model can tell data from instructions: message content, errors, recipients and connector display
names.
"""
from typing import Annotated

from pydantic import Field

ConnectorId = Annotated[
    str, Field(min_length=1, max_length=64, description="A connector's id, as list_active_connectors returns it.")
]


def untrusted(text):
    """Mark text written by an end user (or relayed by a platform) as data, not instructions."""
    return {"untrusted_user_content": text} if text else None


def iso(value):
    """A timestamp as ISO 8601, or None when there is none."""
    return value.isoformat() if value else None
