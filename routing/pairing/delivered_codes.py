"""Pairing codes BRAIN delivers to the address itself (email's link): kept from everyone else, sends limited.

This applies to email and to any platform whose class sets `delivers_pairing_code`.

Such a code proves control of the address only if nobody but the address's owner ever sees it:
- the pairing service never returns it (`IssuedCode.code` is None), so no edge can show it;
- conversation memory keeps MEMORY_TEXT instead of the message carrying it (send_message's
  `memory_content`), so it is not in memory, the search index, BRAIN's context or an export;
- audit rows and events carry ids and a masked hint of the address, never the code or the link;
- the person redeems it through the link (a signed-in POST), never by sending it back to BRAIN.

Sending on request is also a way to reach arbitrary people, so sends are limited per account
(ROUTING_PAIRING_SENDS_PER_ACCOUNT_PER_HOUR) and per address (ROUTING_PAIRING_SENDS_PER_ADDRESS_PER_HOUR).
They are counted from the PairingCode rows of the last hour, in the database, so every process and
worker sees the same counts; a refusal is RateLimited (429 with Retry-After) and creates nothing.
"""
import hashlib
import math
from datetime import timedelta

from django.conf import settings
from django.db import connection

from brain_connectors.shared.errors import RateLimited
from connectors import services as connector_services
from connectors.permissions import Principal
from connectors.registry.kinds import UnknownKind, get_connector_class
from routing.models import PairingCode

WINDOW = timedelta(hours=1)
# What memory keeps of the message that carried the link: that it went out, and nothing of it.
MEMORY_TEXT = "[A pairing link was sent to this address. The link is not kept in memory.]"


def delivers_code(connector) -> bool:
    """True when pairing on this connector means BRAIN sends the code to the address."""
    try:
        return bool(get_connector_class(connector.kind).delivers_pairing_code)
    except UnknownKind:
        return False


def sends_per_account():
    return getattr(settings, "ROUTING_PAIRING_SENDS_PER_ACCOUNT_PER_HOUR", 5)


def sends_per_address():
    return getattr(settings, "ROUTING_PAIRING_SENDS_PER_ADDRESS_PER_HOUR", 3)


def mailbox(address):
    """Which mailbox an address reaches, for counting: case ignored and a `+tag` dropped, since
    Ada@Example.org and ada+x@example.org land in the same inbox at most providers."""
    address = str(address or "").strip().lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local.split('+', 1)[0]}@{domain}"


def _lock_mailbox(key):
    """Serialise requests for one mailbox across accounts until commit (PostgreSQL), so that two
    accounts cannot both pass the per-address count at once. The caller already holds its own
    user row, always taken first. SQLite runs one writer at a time anyway."""
    if connection.vendor != "postgresql":
        return
    lock_id = int.from_bytes(hashlib.sha256(f"routing.pairing:{key}".encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])


def _retry_after(times, limit, now):
    """Seconds until enough of `times` (ascending) leave the window for one more send."""
    leaves = times[len(times) - limit] + WINDOW
    return max(1, math.ceil((leaves - now).total_seconds()))


def check_send_limits(user, address, now):
    """Raise RateLimited when this account, or this address, had its share of pairing sends in
    the last hour. Call inside the request's transaction, after locking the user's row."""
    since = now - WINDOW
    recent = PairingCode.objects.filter(created_at__gte=since).exclude(address="")
    account = sorted(recent.filter(user=user).values_list("created_at", flat=True))
    if len(account) >= sends_per_account():
        raise RateLimited(
            f"Your account asked for {len(account)} pairing messages in the last hour, the most allowed; "
            "try again later.",
            code="pairing_rate_limited",
            retry_after=_retry_after(account, sends_per_account(), now),
            details={"per": "account", "limit": sends_per_account()},
        )
    key = mailbox(address)
    _lock_mailbox(key)
    _, at, domain = key.rpartition("@")
    candidates = recent.filter(address__iendswith=f"@{domain}") if at else recent.filter(address__iexact=key)
    same = sorted(created for row_address, created in candidates.values_list("address", "created_at")
                  if mailbox(row_address) == key)
    if len(same) >= sends_per_address():
        raise RateLimited(
            "This address was sent as many pairing messages in the last hour as are allowed; try again later.",
            code="pairing_rate_limited",
            retry_after=_retry_after(same, sends_per_address(), now),
            details={"per": "address", "limit": sends_per_address()},
        )


def send_taken_notice(connector, address, user):
    """Tell the mailbox, and only the mailbox, that a pairing request for it was refused because the
    address belongs to another account. The requester's answer is the same as for a free address,
    so it does not reveal whose addresses have accounts here; the mail holds no code and no link."""
    message = (
        f"Hello,\n\n{user.get_username()} asked BRAIN to reach them at this address, but this address is already "
        "paired with another BRAIN account, so nothing was changed.\n\n"
        "If that request was yours, remove the address from the other account's preferences first, then ask again. "
        "If you did not ask for this, ignore this email."
    )
    connector_services.send_message(Principal.system_actor("pairing", via="pairing"), connector.id, address, message)

