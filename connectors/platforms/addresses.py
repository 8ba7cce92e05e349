"""People's addresses: the error a platform's normaliser raises, and the one masking function.

Each platform owns its address rules: `BaseConnector.normalize_address(address, strict=True)`,
overridden where a platform needs it (the Twilio kinds: E.164; WhatsApp: its `whatsapp:` prefix
too; email: a lower-case domain). Routing stores identities in the strict form; conversation
memory keys conversations by the lenient form (`strict=False`: trimmed, platform prefix removed,
never refused). Reach a platform's rules through `connectors.registry.kinds.get_connector_class(kind)`,
never by copying them.
"""
import re

from brain_connectors.shared.errors import ValidationFailed

# A channel tag in front of a phone number ("whatsapp:+14155550100"): not part of what is masked.
_CHANNEL_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?=\+|$)")


class InvalidAddress(ValidationFailed):
    """The address cannot be stored for this platform. `problem` completes "The <subject> …"."""

    def __init__(self, problem, *, subject="address"):
        super().__init__(f"The {subject} {problem}.", code="invalid_address", details={"address": problem})
        self.problem = problem
        self.subject = subject


def mask_address(address):
    """A hint that tells a person which of their addresses it is, without revealing it:
    "+44••••1234", "a•••@example.org", "https://hooks.example.com/••••", "••••6789"."""
    value = _CHANNEL_TAG.sub("", str(address or "").strip())
    if "://" in value:  # a URL: scheme and host only
        scheme, rest = value.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}/••••"
    if "@" in value:
        local, domain = value.rsplit("@", 1)
        return f"{local[:1]}•••@{domain}"
    if value.startswith("+") and len(value) > 7:
        return f"{value[:3]}••••{value[-4:]}"
    return f"••••{value[-4:]}" if len(value) > 4 else "••••"
