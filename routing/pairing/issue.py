"""Issuing pairing codes: the channels one may pair with, how, the pending codes, and request_pairing_code().

Audit rows and events carry ids and masked address hints ("+44••••1234"), never full addresses
or codes. Where the platform delivers the code (email), see routing.pairing.delivered_codes.
"""
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from audit import reads
from audit import services as audit
from brain_connectors.shared.errors import Conflict, ValidationFailed
from connectors import services as connector_services
from connectors.models import Connector, ConnectorStatus
from connectors.permissions import Principal
from connectors.platforms.addresses import mask_address
from connectors.registry.kinds import get_connector_class
from routing.access import check_actor
from routing.changes import audited_change
from routing.models import ChannelIdentity, PairingCode
from routing.pairing import codes, delivered_codes
from routing.pairing.delivered_codes import delivers_code

HOW = {
    "telegram": "Send /start {code} to the bot{bot}.",
    "sms": "Text {code} to {number}.",
    "whatsapp": "Send {code} on WhatsApp to {number}.",
    "cli": "Type {code} in `manage.py chat --connector {id}`.",
    "webhook": "Post a message with the content {code} through the webhook integration.",
    "slack": "Send {code} to{bot} in a direct message on Slack.",
}
# Where BRAIN sends the code itself (email, or any platform with `delivers_pairing_code`).
HOW_DELIVERED = "We send a link to the address you give; open it and confirm."


def _how(connector, code="CODE"):
    config = connector.config or {}
    bot = ""
    username = (connector.platform_state or {}).get("bot", {}).get("username") if connector.kind in ("telegram", "slack") else None
    if username:
        bot = f" @{username}"
    elif connector.kind == "slack":
        bot = " the bot"
    number = config.get("from_number", "")
    number = get_connector_class(connector.kind).normalize_address(number, strict=False) or "the connector's number"
    if delivers_code(connector):
        return HOW_DELIVERED
    return HOW.get(connector.kind, "Send {code}.").format(code=code, bot=bot, number=number, id=connector.id)


def pairable_connectors():
    return Connector.objects.filter(kind__in=codes.pairable_kinds(), status=ConnectorStatus.CONNECTED).order_by("kind", "id")


def list_pairing_channels(principal: Principal):
    """Connectors one may pair with now: [{"id", "kind", "display_name", "how", "needs_address"}]
    (`needs_address`: BRAIN sends the code to an address the person gives)."""
    return [
        {"id": c.id, "kind": c.kind, "display_name": c.display_name, "how": _how(c), "needs_address": delivers_code(c)}
        for c in pairable_connectors()
    ]


def list_pending_codes(principal: Principal, user):
    check_actor(principal, user, "view_pairingcode")
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            PairingCode.objects.filter(user=user, used_at__isnull=True, expires_at__gt=now)
            .select_related("connector")
            .order_by("created_at")
        )
        reads.record_read("pairing_code.list", principal, "user", user.pk, count=len(rows))
    return rows


@dataclass
class IssuedCode:
    code: str | None  # shown once, never stored; None when BRAIN sent it to the address itself
    pairing: PairingCode
    instructions: str
    delivered_to: str = ""  # where a delivered code went, masked ("a•••@example.org")


def _pair_link(code, base_url=None):
    base = (base_url or settings.PUBLIC_BASE_URL or "").rstrip("/")
    return f"{base}/preferences/pair/{code}/"


def request_pairing_code(principal: Principal, user, connector_id, address=None, *, base_url=None):
    """Issue a pairing code for `connector_id`. Returns an IssuedCode (the code itself shown once).

    Where the platform delivers the code (email), `address` is required, the code goes out as a
    link to that address only and is never returned (see routing.pairing.delivered_codes), and such sends
    are rate-limited per account and per address."""
    with audited_change("pairing.code_requested", principal, "user", getattr(user, "pk", ""), connector=str(connector_id)[:64]):
        with transaction.atomic():
            check_actor(principal, user, "add_pairingcode")
            # Serialise this person's requests, so that the pending limit holds under concurrency.
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            connector = Connector.objects.filter(pk=connector_id).first() if isinstance(connector_id, str) else None
            if connector is None or connector.kind not in codes.pairable_kinds():
                raise ValidationFailed(
                    f"Connector {connector_id!r} is not one you can pair with.",
                    details={"connector": "choose one of /api/v1/pairing-codes/channels/"},
                )
            if connector.status != ConnectorStatus.CONNECTED:
                raise Conflict(
                    f"Connector {connector.display_name!r} is not connected right now; try again later.",
                    code="connector_not_running",
                )
            clean_address = ""
            taken_elsewhere = False
            now = timezone.now()
            delivered = delivers_code(connector)
            if delivered:
                if not address:
                    raise ValidationFailed(f"Give the {connector.kind} address to pair.",
                                           details={"address": f"required for {connector.kind}"})
                clean_address = get_connector_class(connector.kind).normalize_address(address)
                owner_id = ChannelIdentity.objects.filter(connector=connector, address=clean_address).values_list(
                    "user_id", flat=True).first()
                if owner_id == user.pk:
                    raise Conflict("This address is already paired with your account.", code="already_paired")
                # Paired with someone else: the answer must not say so (it would tell anyone whose address
                # has an account here). Only the mailbox learns it, from a notice instead of the link.
                taken_elsewhere = owner_id is not None
                delivered_codes.check_send_limits(user, clean_address, now)
            elif address:
                raise ValidationFailed(
                    "An address is only given where BRAIN sends the link (email): on other channels the code is "
                    "sent from the address itself.",
                    details={"address": "only for connectors that send the link (email)"},
                )
            pending = PairingCode.objects.filter(user=user, used_at__isnull=True, expires_at__gt=now).count()
            if pending >= codes.max_pending():
                raise Conflict(
                    f"You already have {pending} pending pairing codes; use one or wait until they expire.",
                    code="too_many_pending_codes",
                    details={"pending": pending, "limit": codes.max_pending()},
                )
            code = codes.new_code()
            pairing = PairingCode.objects.create(
                user=user, connector=connector, address=clean_address, digest=codes.digest(code), expires_at=now + codes.pairing_ttl()
            )
            details = {"connector": connector.id, "user_id": user.pk, "pairing_code_id": pairing.pk}
            if clean_address:
                details["address_hint"] = mask_address(clean_address)
            if delivered and taken_elsewhere:
                details["taken_elsewhere"] = True
            audit.record_action("pairing.code_requested", principal, "pairing_code", pairing.pk, **details)
            if delivered:
                if taken_elsewhere:
                    delivered_codes.send_taken_notice(connector, clean_address, user)
                else:
                    _deliver_link(connector, clean_address, user, code, base_url)
                hint = mask_address(clean_address)
                instructions = f"We sent a link to {hint}; open it within an hour and confirm."
                return IssuedCode(code=None, pairing=pairing, instructions=instructions, delivered_to=hint)
            instructions = _how(connector, code)
    return IssuedCode(code=code, pairing=pairing, instructions=instructions)


def _deliver_link(connector, address, user, code, base_url):
    link = _pair_link(code, base_url)
    minutes = int(codes.pairing_ttl().total_seconds() // 60)
    message = (
        f"Hello,\n\n{user.get_username()} asked BRAIN to reach them at this address.\n"
        f"To confirm, open this link within {minutes} minutes and press Confirm:\n\n{link}\n\n"
        "If you did not ask for this, ignore this email: nothing changes."
    )
    # The pairing service sends as the system: the person needs no send permission on the connector.
    # Memory keeps only that a link went out: whoever may read this conversation must not pair with it.
    connector_services.send_message(Principal.system_actor("pairing", via="pairing"), connector.id, address, message,
                                    memory_content=delivered_codes.MEMORY_TEXT)
