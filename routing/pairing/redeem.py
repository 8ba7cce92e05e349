"""Redeeming pairing codes: a code sent from an address, or an emailed link confirmed, pairs that address to the code's owner.

Audit rows and events carry ids and masked address hints ("+44••••1234"), never full addresses
or codes: the identity id leads to the row for those allowed to see it.
"""
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import Conflict, NotFound, ValidationFailed
from connectors.models import Connector
from connectors.permissions import Principal
from connectors.platforms.addresses import mask_address
from connectors.registry.kinds import get_connector_class
from routing.changes import audited_change, record_change
from routing.models import ChannelIdentity, PairingAttempt, PairingCode
from routing.pairing import codes
from routing.pairing.delivered_codes import delivers_code
from routing.preferences import default_preference


@dataclass
class Redemption:
    ok: bool
    reply: str
    identity: ChannelIdentity | None = None


MESSAGES = {
    "rate_limited": "Too many attempts with wrong pairing codes. Wait 15 minutes, then try again with a new code.",
    "unknown": "That pairing code is not valid. Check it, or ask for a new one on the preferences page.",
    "expired": "That pairing code has expired. Ask for a new one on the preferences page.",
    "used": "That pairing code has already been used. Ask for a new one on the preferences page.",
    "wrong_connector": "That pairing code is for another channel. Ask for a code for this one on the preferences page.",
    "taken": "This address is already paired with another account. Remove it there first, then pair again.",
    "not_e164": "This number cannot be paired: only phone numbers in E.164 form (+<country code><number>) can.",
    "group": "Pair from a private chat with the bot, not from a group.",
}


def _rate_limited(connector_id, sender, now):
    since = now - codes.attempt_window()
    recent = PairingAttempt.objects.filter(connector_id=connector_id, created_at__gte=since)
    if recent.filter(sender=sender).count() >= codes.max_attempts():
        return True
    return recent.count() >= codes.max_attempts_per_connector()


def _refuse(connector_id, sender, reason, *, count_attempt=True, code_row=None):
    """Refusal: count the attempt (committed) and audit it; returns the Redemption."""
    principal = Principal.system_actor(f"pairing:{connector_id}", via="pairing")
    with transaction.atomic():
        if count_attempt:
            PairingAttempt.objects.create(connector_id=connector_id, sender=sender[:255])
        details = {"connector": connector_id, "sender_hint": mask_address(sender), "reason": reason}
        if code_row is not None:
            details["pairing_code_id"] = code_row.pk
            details["user_id"] = code_row.user_id
        audit.record_action("identity.pair", principal, "connector", connector_id, result=audit.FAILURE, **details)
    return Redemption(False, MESSAGES[reason])


def redeem_code(connector_id, sender, code, *, now=None):
    """A code arrived from `sender` on `connector_id`: pair that address to the code's owner.

    Returns a Redemption with the reply for the person. `code` is already normalised (see
    normalize_code) or the raw text; a text that is not code-shaped counts as a wrong code.
    """
    now = now or timezone.now()
    connector = Connector.objects.filter(pk=connector_id).first()
    if connector is None:
        return Redemption(False, MESSAGES["unknown"])
    if _rate_limited(connector_id, sender, now):
        # Not looked at: answering would let a guesser go on. Audited, not counted again.
        return _refuse(connector_id, sender, "rate_limited", count_attempt=False)
    if connector.kind == "telegram" and str(sender).startswith("-"):
        return _refuse(connector_id, sender, "group", count_attempt=False)
    try:
        address = get_connector_class(connector.kind).normalize_address(sender)
    except ValidationFailed:
        return _refuse(connector_id, sender, "not_e164" if connector.kind in codes.PHONE_KINDS else "unknown")
    normalised = codes.normalize_code(code)
    if normalised is None:
        return _refuse(connector_id, sender, "unknown")
    try:
        with transaction.atomic():
            row = PairingCode.objects.select_for_update().select_related("user").filter(digest=codes.digest(normalised)).first()
            reason = _code_problem(row, connector, now)
            if reason is None:
                principal = Principal.system_actor(f"pairing:{connector_id}", via="pairing")
                return _pair(row, connector, address, now, principal)
    except _AddressTaken as taken:
        # The right code, from an address someone else has: refused, not counted as a guess.
        return _refuse(connector_id, sender, "taken", count_attempt=False, code_row=taken.row)
    return _refuse(connector_id, sender, reason, code_row=row if reason in ("used", "expired") else None)


def _code_problem(row, connector, now):
    if row is None:
        return "unknown"
    if row.connector_id and row.connector_id != connector.id:
        return "wrong_connector"
    if row.used_at is not None:
        return "used"
    if row.expires_at <= now:
        return "expired"
    if delivers_code(connector):
        return "unknown"  # delivered codes are redeemed through the link only, by the signed-in owner
    return None


class _AddressTaken(Conflict):
    """The address is paired to another account: nothing is stored, the code stays pending."""

    def __init__(self, row, connector, address):
        super().__init__(MESSAGES["taken"], code="already_paired")
        self.row, self.connector, self.address = row, connector, address


def _pair(row, connector, address, now, principal):
    """Within the caller's transaction: create the identity (and its preference), use the code.
    Raises _AddressTaken (rolling the caller's transaction back) if another account has it."""
    user = row.user
    existing = ChannelIdentity.objects.filter(connector=connector, address=address).first()
    if existing is not None and existing.user_id != user.pk:
        raise _AddressTaken(row, connector, address)
    created = existing is None
    if created:
        try:
            with transaction.atomic():
                identity = ChannelIdentity.objects.create(user=user, connector=connector, address=address, verified_at=now)
        except IntegrityError:  # paired concurrently by someone else
            raise _AddressTaken(row, connector, address)
    else:
        identity = existing
    row.used_at = now
    row.identity = identity
    row.save(update_fields=["used_at", "identity"])
    preference = default_preference(user, identity) if created else None
    details = {"connector": connector.id, "address_hint": mask_address(address), "pairing_code_id": row.pk,
               "already_paired": not created}
    record_change("identity.paired", principal, ("channel_identity", identity.pk), user.pk, details,
                  "identity.paired", [connector.id], identity_id=identity.pk,
                  preference_id=preference.pk if preference else None,
                  fields=["identity"] + (["preference"] if preference else []))
    name = user.get_username()
    if created:
        reply = f"Paired with {name}. BRAIN can now reach you here; change how on the preferences page."
    else:
        reply = f"Paired with {name} already. Nothing changed."
    return Redemption(True, reply, identity)




def pairing_link_state(code):
    """For the emailed link's page: (row, reason) where reason is None when it may be confirmed."""
    normalised = codes.normalize_code(code)
    row = None
    if normalised is not None:
        row = PairingCode.objects.select_related("user", "connector").filter(digest=codes.digest(normalised)).first()
    if row is None or not row.address or row.connector is None or not delivers_code(row.connector):
        return row, "unknown"
    if row.used_at is not None:
        return row, "used"
    if row.expires_at <= timezone.now():
        return row, "expired"
    return row, None


def confirm_email_link(principal: Principal, code):
    """The person confirmed the emailed link (a POST). The logged-in user must own the code: the
    link proves the mailbox, the login proves the account, and guessing other people's codes
    gains nothing. Returns a Redemption."""
    with audited_change("identity.pair", principal, "pairing_code", "", via_link=True):
        with transaction.atomic():
            normalised = codes.normalize_code(code)
            row = None
            if normalised is not None:
                row = PairingCode.objects.select_for_update(of=("self",)).select_related("user", "connector").filter(
                    digest=codes.digest(normalised)
                ).first()
            if row is None or principal.is_system or row.user_id != principal.user.pk or not row.address:
                raise NotFound("This pairing link is not valid for your account.", code="invalid_code")
            if row.used_at is not None:
                raise Conflict(MESSAGES["used"], code="code_used")
            if row.expires_at <= timezone.now():
                raise Conflict(MESSAGES["expired"], code="code_expired")
            result = _pair(row, row.connector, row.address, timezone.now(), principal)
    return result
