"""Pairing: a person proves they control an address by sending a one-time code from it (or opening an emailed link).

- `codes`: the codes' shape, digest and settings; `issue`: asking for a code; `redeem`: using one;
- `delivered_codes`: codes BRAIN sends to the address itself (email's link), never shown to anyone else;
- `inbound`: codes arriving as messages; `link_view`: the emailed link's page.
"""
# Named from outside routing: settings.INBOUND_MESSAGE_HANDLERS ("routing.pairing.handle_inbound", also set
# through the environment) and conversation memory (conversations/services.py imports memory_text).
from routing.pairing.inbound import handle_inbound, memory_text

__all__ = ["handle_inbound", "memory_text"]
