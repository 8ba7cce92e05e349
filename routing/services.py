"""The only writers of channel identities, pairing codes and preferences.

Every function takes the acting `Principal` and the person it acts for, checks permission, changes
state, writes the audit row and emits `preference.updated` in one transaction. Refusals raise a
`ServiceError` (rendered as `{"error": {...}}` by every edge) and leave an audit row of their own
(`denied` or `failure`) while the change itself is rolled back.

Who may act for whom: a person manages their own identities and preferences. Staff acting for
someone else need the matching Django model permission of the routing app (e.g.
`routing.change_connectorpreference`), superusers pass; anyone else is told the person does not
exist (404), so the API does not reveal who has an account.

Audit rows and events carry ids and masked address hints ("+44••••1234"), never full addresses
or codes: the identity id leads to the row for those allowed to see it.

Pairing (see also routing.pairing): a code is 8 characters from an alphabet without look-alikes
(no 0/O, 1/I/L), with at least one letter and one digit so that ordinary words are never taken for
codes. Only its SHA-256 digest is stored. It expires after ROUTING_PAIRING_TTL_SECONDS (1 h), is
used once, and a person may have at most ROUTING_PAIRING_MAX_PENDING (3) pending. Wrong, expired
and used codes count as failed attempts per (connector, sender): past
ROUTING_PAIRING_MAX_ATTEMPTS in ROUTING_PAIRING_ATTEMPT_WINDOW_SECONDS, codes from that sender are
not even looked at until the window has passed.
"""
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import time, timedelta
from functools import lru_cache
from zoneinfo import available_timezones

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from audit import services as audit
from brain_connectors.shared.errors import (
    Conflict,
    Hidden,
    NotFound,
    PermissionDenied,
    ValidationFailed,
    audit_result_limits_denied,
)
from connectors.events import log as events
from connectors.models import Connector, ConnectorStatus
from connectors.permissions import Principal
from connectors.platforms.addresses import mask_address
from connectors.registry.kinds import get_connector_class
from routing import delivered_codes
from routing.delivered_codes import delivers_code
from routing.models import ChannelIdentity, ConnectorPreference, NotificationType, PairingAttempt, PairingCode

logger = logging.getLogger(__name__)

# --- settings (with defaults, so that tests and deployments may change them) -------------------------

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 8
DIGITS = set("23456789")

# Kinds a person can pair with, and how. Voice is left out: a spoken code is not recognised reliably;
# a number paired for SMS can be paired for voice by an administrator in the admin.
PAIRABLE_KINDS = ("telegram", "sms", "whatsapp", "email", "cli", "webhook")
PHONE_KINDS = ("sms", "voice", "whatsapp")


def _setting(name, default):
    return getattr(settings, name, default)


def pairing_ttl():
    return timedelta(seconds=_setting("ROUTING_PAIRING_TTL_SECONDS", 3600))


def max_pending():
    return _setting("ROUTING_PAIRING_MAX_PENDING", 3)


def max_attempts():
    return _setting("ROUTING_PAIRING_MAX_ATTEMPTS", 5)


def attempt_window():
    return timedelta(seconds=_setting("ROUTING_PAIRING_ATTEMPT_WINDOW_SECONDS", 15 * 60))


def max_attempts_per_connector():
    return _setting("ROUTING_PAIRING_MAX_ATTEMPTS_PER_CONNECTOR", 200)


def pairable_kinds():
    return tuple(_setting("ROUTING_PAIRABLE_KINDS", PAIRABLE_KINDS))


# --- helpers -------------------------------------------------------------------------------------


def normalize_code(text):
    """The code in `text` (any case, spaces and dashes ignored), or None when it is not code-shaped."""
    if not isinstance(text, str):
        return None
    cleaned = re.sub(r"[\s\-]", "", text).upper()
    if len(cleaned) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in cleaned):
        return None
    if not (DIGITS & set(cleaned)) or not (set(cleaned) - DIGITS):
        return None
    return cleaned


def digest(code):
    return hashlib.sha256(code.encode()).hexdigest()


def _new_code():
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if normalize_code(code) == code:
            return code


def _invalidate_router(user_id):
    """Drop the router's cached decisions for this person once the change has committed."""

    def invalidate():
        try:
            from routing import router
        except ImportError:  # the router is optional for these services
            return
        fn = getattr(router, "invalidate", None)
        if fn is not None:
            fn(user_id)

    invalidate()
    transaction.on_commit(invalidate)


def _emit(connector_id, user_id, change, **data):
    events.publish("preference.updated", connector_id=connector_id, data={"user_id": user_id, "change": change, **data})


# --- who may act for whom ------------------------------------------------------------------------


def may_act_for(principal: Principal, user, perm: str) -> bool:
    """True if `principal` may use `perm` ("change_connectorpreference", …) on `user`'s routing data."""
    if principal.is_system:
        return True
    actor = principal.user
    if not (actor and actor.is_active and actor.is_authenticated):
        return False
    if actor.pk == user.pk:
        return True
    if actor.is_superuser:
        return True
    return bool(actor.is_staff and actor.has_perm(f"routing.{perm}"))


def _check_actor(principal, user, perm):
    if user is None or not may_act_for(principal, user, perm):
        name = user.get_username() if user is not None else "?"
        raise Hidden(f"User {name!r} does not exist.")


def resolve_user(principal: Principal, username, perm="view_connectorpreference"):
    """The person a request acts for: the caller, or (`?user=`) someone the caller may act for."""
    if not username:
        if principal.is_system:
            raise ValidationFailed("Name the user to act for.", details={"user": "required"})
        return principal.user
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not may_act_for(principal, user, perm):
        if user is not None:
            # Someone else's data: the same answer as an unknown user, but a refusal on record.
            with transaction.atomic():
                audit.record_action(
                    "routing.act_for",
                    principal,
                    "user",
                    user.pk,
                    result=audit.DENIED,
                    permission=perm,
                )
        raise NotFound(f"User {username!r} does not exist.")
    return user


# --- pairing: channels and codes -----------------------------------------------------------------


HOW = {
    "telegram": "Send /start {code} to the bot{bot}.",
    "sms": "Text {code} to {number}.",
    "whatsapp": "Send {code} on WhatsApp to {number}.",
    "cli": "Type {code} in `manage.py chat --connector {id}`.",
    "webhook": "Post a message with the content {code} through the webhook integration.",
}
# Where BRAIN sends the code itself (email, or any platform with `delivers_pairing_code`).
HOW_DELIVERED = "We send a link to the address you give; open it and confirm."


def _how(connector, code="CODE"):
    config = connector.config or {}
    bot = ""
    username = (connector.platform_state or {}).get("bot", {}).get("username") if connector.kind == "telegram" else None
    if username:
        bot = f" @{username}"
    number = config.get("from_number", "")
    number = get_connector_class(connector.kind).normalize_address(number, strict=False) or "the connector's number"
    if delivers_code(connector):
        return HOW_DELIVERED
    return HOW.get(connector.kind, "Send {code}.").format(code=code, bot=bot, number=number, id=connector.id)


def pairable_connectors():
    return Connector.objects.filter(kind__in=pairable_kinds(), status=ConnectorStatus.CONNECTED).order_by("kind", "id")


def list_pairing_channels(principal: Principal):
    """Connectors one may pair with now: [{"id", "kind", "display_name", "how", "needs_address"}]
    (`needs_address`: BRAIN sends the code to an address the person gives)."""
    return [
        {"id": c.id, "kind": c.kind, "display_name": c.display_name, "how": _how(c), "needs_address": delivers_code(c)}
        for c in pairable_connectors()
    ]


def list_pending_codes(principal: Principal, user):
    _check_actor(principal, user, "view_pairingcode")
    now = timezone.now()
    return list(
        PairingCode.objects.filter(user=user, used_at__isnull=True, expires_at__gt=now)
        .select_related("connector")
        .order_by("created_at")
    )


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
    link to that address only and is never returned (see routing.delivered_codes), and such sends
    are rate-limited per account and per address."""
    with audit.audited(
        "pairing.code_requested",
        principal,
        "user",
        getattr(user, "pk", ""),
        classify=audit_result_limits_denied,
        message_limit=300,
        connector=str(connector_id)[:64],
    ):
        with transaction.atomic():
            _check_actor(principal, user, "add_pairingcode")
            # Serialise this person's requests, so that the pending limit holds under concurrency.
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            connector = Connector.objects.filter(pk=connector_id).first() if isinstance(connector_id, str) else None
            if connector is None or connector.kind not in pairable_kinds():
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
            if pending >= max_pending():
                raise Conflict(
                    f"You already have {pending} pending pairing codes; use one or wait until they expire.",
                    code="too_many_pending_codes",
                    details={"pending": pending, "limit": max_pending()},
                )
            code = _new_code()
            pairing = PairingCode.objects.create(
                user=user, connector=connector, address=clean_address, digest=digest(code), expires_at=now + pairing_ttl()
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
    from connectors import services as connector_services

    link = _pair_link(code, base_url)
    minutes = int(pairing_ttl().total_seconds() // 60)
    message = (
        f"Hello,\n\n{user.get_username()} asked BRAIN to reach them at this address.\n"
        f"To confirm, open this link within {minutes} minutes and press Confirm:\n\n{link}\n\n"
        "If you did not ask for this, ignore this email: nothing changes."
    )
    # The pairing service sends as the system: the person needs no send permission on the connector.
    # Memory keeps only that a link went out: whoever may read this conversation must not pair with it.
    connector_services.send_message(Principal.system_actor("pairing", via="pairing"), connector.id, address, message,
                                    memory_content=delivered_codes.MEMORY_TEXT)


# --- pairing: redeeming a code -------------------------------------------------------------------


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
    since = now - attempt_window()
    recent = PairingAttempt.objects.filter(connector_id=connector_id, created_at__gte=since)
    if recent.filter(sender=sender).count() >= max_attempts():
        return True
    return recent.count() >= max_attempts_per_connector()


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
        return _refuse(connector_id, sender, "not_e164" if connector.kind in PHONE_KINDS else "unknown")
    normalised = normalize_code(code)
    if normalised is None:
        return _refuse(connector_id, sender, "unknown")
    try:
        with transaction.atomic():
            row = PairingCode.objects.select_for_update().select_related("user").filter(digest=digest(normalised)).first()
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
    preference = _default_preference(user, identity) if created else None
    audit.record_action(
        "identity.paired",
        principal,
        "channel_identity",
        identity.pk,
        user_id=user.pk,
        connector=connector.id,
        address_hint=mask_address(address),
        pairing_code_id=row.pk,
        already_paired=not created,
    )
    _emit(
        connector.id,
        user.pk,
        "identity.paired",
        identity_id=identity.pk,
        preference_id=preference.pk if preference else None,
        fields=["identity"] + (["preference"] if preference else []),
    )
    _invalidate_router(user.pk)
    name = user.get_username()
    if created:
        reply = f"Paired with {name}. BRAIN can now reach you here; change how on the preferences page."
    else:
        reply = f"Paired with {name} already. Nothing changed."
    return Redemption(True, reply, identity)


def _default_preference(user, identity):
    """A new identity is tried after the person's existing channels, for every notification type."""
    prefs = ConnectorPreference.objects.filter(user=user)
    top = prefs.aggregate(m=Max("priority"))["m"] or 0
    zone = prefs.order_by("priority").values_list("timezone", flat=True).first() or "UTC"
    return ConnectorPreference.objects.create(
        user=user,
        identity=identity,
        priority=top + 1,
        enabled=True,
        notification_types=list(NotificationType.values),
        timezone=zone,
    )


def pairing_link_state(code):
    """For the emailed link's page: (row, reason) where reason is None when it may be confirmed."""
    normalised = normalize_code(code)
    row = None
    if normalised is not None:
        row = PairingCode.objects.select_related("user", "connector").filter(digest=digest(normalised)).first()
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
    with audit.audited(
        "identity.pair",
        principal,
        "pairing_code",
        "",
        classify=audit_result_limits_denied,
        message_limit=300,
        via_link=True,
    ):
        with transaction.atomic():
            normalised = normalize_code(code)
            row = None
            if normalised is not None:
                row = PairingCode.objects.select_for_update(of=("self",)).select_related("user", "connector").filter(
                    digest=digest(normalised)
                ).first()
            if row is None or principal.is_system or row.user_id != principal.user.pk or not row.address:
                raise NotFound("This pairing link is not valid for your account.", code="invalid_code")
            if row.used_at is not None:
                raise Conflict(MESSAGES["used"], code="code_used")
            if row.expires_at <= timezone.now():
                raise Conflict(MESSAGES["expired"], code="code_expired")
            result = _pair(row, row.connector, row.address, timezone.now(), principal)
    return result


# --- identities ------------------------------------------------------------------------------


def list_identities(principal: Principal, user):
    _check_actor(principal, user, "view_channelidentity")
    return list(ChannelIdentity.objects.filter(user=user).select_related("connector").order_by("id"))


def _own_identity(user, identity_id, *, for_update=False):
    qs = ChannelIdentity.objects.select_related("connector")
    if for_update:
        qs = qs.select_for_update()
    try:
        identity = qs.get(pk=int(identity_id))
    except (ChannelIdentity.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Identity {identity_id!r} does not exist.")
    if identity.user_id != user.pk:  # someone else's: hidden, and audited as a refusal
        raise Hidden(f"Identity {identity_id!r} does not exist.")
    return identity


def add_identity(principal: Principal, user, connector_id, address, *, label=""):
    """An identity verified outside pairing (e.g. a voice number checked by phone), added by staff
    holding `routing.add_channelidentity` (or a superuser), never by people for themselves."""
    with audit.audited(
        "identity.added",
        principal,
        "user",
        getattr(user, "pk", ""),
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        with transaction.atomic():
            actor = principal.user
            if not principal.is_system and not (
                actor and actor.is_active and actor.is_staff and actor.has_perm("routing.add_channelidentity")
            ):
                raise PermissionDenied("Only staff with routing.add_channelidentity may add identities without pairing.")
            connector = Connector.objects.filter(pk=connector_id).first()
            if connector is None:
                raise ValidationFailed(f"Connector {connector_id!r} does not exist.", details={"connector": "unknown"})
            clean = get_connector_class(connector.kind).normalize_address(address)
            if ChannelIdentity.objects.filter(connector=connector, address=clean).exists():
                raise Conflict("This address is already paired with an account.", code="already_paired")
            identity = ChannelIdentity.objects.create(
                user=user, connector=connector, address=clean, label=(label or "").strip()[:100], verified_at=timezone.now()
            )
            preference = _default_preference(user, identity)
            audit.record_action(
                "identity.added",
                principal,
                "channel_identity",
                identity.pk,
                user_id=user.pk,
                connector=connector.id,
                address_hint=mask_address(clean),
            )
            _emit(connector.id, user.pk, "identity.added", identity_id=identity.pk, preference_id=preference.pk,
                  fields=["identity", "preference"])
            _invalidate_router(user.pk)
    return identity


def update_identity(principal: Principal, user, identity_id, *, label):
    with audit.audited(
        "identity.updated",
        principal,
        "channel_identity",
        identity_id,
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        if not isinstance(label, str) or len(label.strip()) > 100:
            raise ValidationFailed("The label must be text of at most 100 characters.", details={"label": "invalid"})
        with transaction.atomic():
            _check_actor(principal, user, "change_channelidentity")
            identity = _own_identity(user, identity_id, for_update=True)
            identity.label = label.strip()
            identity.save(update_fields=["label"])
            audit.record_action(
                "identity.updated",
                principal,
                "channel_identity",
                identity.pk,
                user_id=user.pk,
                fields=["label"],
            )
            _emit(identity.connector_id, user.pk, "identity.updated", identity_id=identity.pk, fields=["label"])
            _invalidate_router(user.pk)
    return identity


def delete_identity(principal: Principal, user, identity_id):
    """Remove an identity and the preferences that use it."""
    with audit.audited(
        "identity.deleted",
        principal,
        "channel_identity",
        identity_id,
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        with transaction.atomic():
            _check_actor(principal, user, "delete_channelidentity")
            identity = _own_identity(user, identity_id, for_update=True)
            preference_ids = list(identity.preferences.values_list("pk", flat=True))
            connector_id, pk, hint = identity.connector_id, identity.pk, mask_address(identity.address)
            identity.delete()
            audit.record_action(
                "identity.deleted",
                principal,
                "channel_identity",
                pk,
                user_id=user.pk,
                connector=connector_id,
                address_hint=hint,
                preference_ids=preference_ids,
            )
            _emit(connector_id, user.pk, "identity.deleted", identity_id=pk, preference_ids=preference_ids, fields=["identity"])
            _invalidate_router(user.pk)


# --- preferences ---------------------------------------------------------------------------


PREFERENCE_FIELDS = ("identity", "priority", "enabled", "notification_types", "quiet_start", "quiet_end", "timezone")
MAX_PRIORITY = 1000
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@lru_cache(maxsize=1)
def _zones():
    return frozenset(available_timezones()) | {"UTC"}


def valid_timezone(name):
    return isinstance(name, str) and name in _zones()


def _parse_time(name, value, problems):
    if value is None or value == "":
        return None
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    if not isinstance(value, str) or not TIME_RE.fullmatch(value.strip()):
        problems[name] = "must be a time as HH:MM (00:00 to 23:59), or null"
        return None
    hours, minutes = value.strip().split(":")
    return time(int(hours), int(minutes))


def format_time(value):
    return value.strftime("%H:%M") if value is not None else None


def _clean_preference(user, data, current=None):
    """Validate a create (current=None) or a change; returns the values to set. Every problem is
    reported at once, in `details`, by field."""
    unknown = set(data) - set(PREFERENCE_FIELDS)
    problems = {name: "unknown field" for name in sorted(unknown)}
    values = {}
    if "identity" in data:
        identity = None
        raw = data["identity"]
        if isinstance(raw, ChannelIdentity):
            identity = raw if raw.user_id == user.pk else None
        elif isinstance(raw, int) and not isinstance(raw, bool):
            identity = ChannelIdentity.objects.filter(pk=raw, user=user).first()
        if identity is None:
            problems["identity"] = f"must be the id of one of {user.get_username()}'s identities"
        else:
            values["identity"] = identity
    elif current is None:
        problems["identity"] = "required"
    if "priority" in data:
        raw = data["priority"]
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_PRIORITY:
            problems["priority"] = f"must be an integer from 1 to {MAX_PRIORITY}"
        else:
            values["priority"] = raw
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            problems["enabled"] = "must be true or false"
        else:
            values["enabled"] = data["enabled"]
    if "notification_types" in data:
        raw = data["notification_types"]
        allowed = NotificationType.values
        if not isinstance(raw, (list, tuple)) or not all(isinstance(t, str) for t in raw):
            problems["notification_types"] = f"must be a list of {', '.join(allowed)}"
        else:
            bad = sorted(set(raw) - set(allowed))
            if bad:
                problems["notification_types"] = f"unknown types {bad}; choose from {', '.join(allowed)}"
            else:
                values["notification_types"] = [t for t in allowed if t in raw]  # canonical order, no duplicates
    elif current is None:
        values["notification_types"] = list(NotificationType.values)
    for name in ("quiet_start", "quiet_end"):
        if name in data:
            values[name] = _parse_time(name, data[name], problems)
    if "timezone" in data:
        if not valid_timezone(data["timezone"]):
            problems["timezone"] = "must be an IANA time zone name such as Europe/London or UTC"
        else:
            values["timezone"] = data["timezone"]
    if not problems.keys() & {"quiet_start", "quiet_end"}:
        start = values.get("quiet_start", current.quiet_start if current else None)
        end = values.get("quiet_end", current.quiet_end if current else None)
        if (start is None) != (end is None):
            problems["quiet_hours"] = "give both quiet_start and quiet_end, or neither"
        elif start is not None and start == end:
            problems["quiet_hours"] = "quiet_start and quiet_end must differ"
    if problems:
        raise ValidationFailed("The preference is invalid.", details=problems)
    return values


def _priority_clash(user, priority, exclude_pk=None):
    other = ConnectorPreference.objects.filter(user=user, priority=priority).exclude(pk=exclude_pk).first()
    if other is not None:
        raise Conflict(
            f"Priority {priority} is already taken by preference {other.pk}; choose another or reorder.",
            code="priority_taken",
            details={"priority": priority, "preference": other.pk},
        )


def _identity_clash(user, identity, exclude_pk=None):
    other = ConnectorPreference.objects.filter(user=user, identity=identity).exclude(pk=exclude_pk).first()
    if other is not None:
        raise Conflict(
            f"Identity {identity.pk} already has preference {other.pk}; change that one instead.",
            code="identity_has_preference",
            details={"identity": identity.pk, "preference": other.pk},
        )


def list_preferences(principal: Principal, user):
    _check_actor(principal, user, "view_connectorpreference")
    return list(ConnectorPreference.objects.filter(user=user).select_related("identity").order_by("priority"))


def _lock_user(user):
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()


def create_preference(principal: Principal, user, data=None, **fields):
    """Add a preference: `identity` (id, required), `priority` (default: after the others),
    `enabled`, `notification_types` (default: all), `quiet_start`/`quiet_end` ("HH:MM"), `timezone`."""
    data = {**(data or {}), **fields}
    with audit.audited(
        "preference.created",
        principal,
        "user",
        getattr(user, "pk", ""),
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        with transaction.atomic():
            _check_actor(principal, user, "add_connectorpreference")
            _lock_user(user)
            values = _clean_preference(user, data)
            if "priority" not in values:
                values["priority"] = (ConnectorPreference.objects.filter(user=user).aggregate(m=Max("priority"))["m"] or 0) + 1
            _priority_clash(user, values["priority"])
            _identity_clash(user, values["identity"])
            preference = ConnectorPreference.objects.create(user=user, **values)
            fields = sorted(set(values) | {"identity"})
            audit.record_action(
                "preference.created",
                principal,
                "connector_preference",
                preference.pk,
                user_id=user.pk,
                fields=fields,
            )
            _emit(preference.identity.connector_id, user.pk, "created", preference_id=preference.pk, fields=fields)
            _invalidate_router(user.pk)
    return preference


def _own_preference(user, preference_id):
    try:
        preference = ConnectorPreference.objects.select_for_update().select_related("identity").get(pk=int(preference_id))
    except (ConnectorPreference.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Preference {preference_id!r} does not exist.")
    if preference.user_id != user.pk:  # someone else's: hidden, and audited as a refusal
        raise Hidden(f"Preference {preference_id!r} does not exist.")
    return preference


def update_preference(principal: Principal, user, preference_id, data=None, **fields):
    data = {**(data or {}), **fields}
    with audit.audited(
        "preference.updated",
        principal,
        "connector_preference",
        preference_id,
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        if not data:
            raise ValidationFailed("Nothing to change.", details={"body": "give at least one field"})
        with transaction.atomic():
            _check_actor(principal, user, "change_connectorpreference")
            _lock_user(user)
            preference = _own_preference(user, preference_id)
            values = _clean_preference(user, data, current=preference)
            if "priority" in values:
                _priority_clash(user, values["priority"], exclude_pk=preference.pk)
            if "identity" in values:
                _identity_clash(user, values["identity"], exclude_pk=preference.pk)
            changed = sorted(name for name, value in values.items() if getattr(preference, name) != value)
            old_connector = preference.identity.connector_id
            for name, value in values.items():
                setattr(preference, name, value)
            if changed:
                preference.save()
                audit.record_action(
                    "preference.updated",
                    principal,
                    "connector_preference",
                    preference.pk,
                    user_id=user.pk,
                    fields=changed,
                )
                _emit(preference.identity.connector_id, user.pk, "updated", preference_id=preference.pk, fields=changed)
                if preference.identity.connector_id != old_connector:
                    _emit(old_connector, user.pk, "updated", preference_id=preference.pk, fields=changed)
                _invalidate_router(user.pk)
    return preference


def delete_preference(principal: Principal, user, preference_id):
    with audit.audited(
        "preference.deleted",
        principal,
        "connector_preference",
        preference_id,
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        with transaction.atomic():
            _check_actor(principal, user, "delete_connectorpreference")
            preference = _own_preference(user, preference_id)
            pk, connector_id = preference.pk, preference.identity.connector_id
            preference.delete()
            audit.record_action("preference.deleted", principal, "connector_preference", pk, user_id=user.pk)
            _emit(connector_id, user.pk, "deleted", preference_id=pk, fields=["preference"])
            _invalidate_router(user.pk)


def reorder_preferences(principal: Principal, user, order):
    """Renumber the person's preferences 1..n in the given order (all of their ids, once each)."""
    with audit.audited(
        "preference.reordered",
        principal,
        "user",
        getattr(user, "pk", ""),
        classify=audit_result_limits_denied,
        message_limit=300,
    ):
        with transaction.atomic():
            _check_actor(principal, user, "change_connectorpreference")
            _lock_user(user)
            prefs = {p.pk: p for p in ConnectorPreference.objects.select_for_update().select_related("identity").filter(user=user)}
            if (
                not isinstance(order, list)
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in order)
                or len(set(order)) != len(order)
                or set(order) != set(prefs)
            ):
                raise ValidationFailed(
                    "Give every one of your preference ids once, first = priority 1.",
                    details={"order": f"must be a permutation of {sorted(prefs)}"},
                )
            changed = [pk for position, pk in enumerate(order, start=1) if prefs[pk].priority != position]
            # Two steps, because (user, priority) is unique at every statement.
            for position, pk in enumerate(order, start=1):
                if pk in changed:
                    ConnectorPreference.objects.filter(pk=pk).update(priority=MAX_PRIORITY + position)
            for position, pk in enumerate(order, start=1):
                if pk in changed:
                    ConnectorPreference.objects.filter(pk=pk).update(priority=position, updated_at=timezone.now())
            audit.record_action(
                "preference.reordered",
                principal,
                "user",
                user.pk,
                user_id=user.pk,
                order=order,
                changed=changed,
            )
            for pk in changed:
                _emit(prefs[pk].identity.connector_id, user.pk, "reordered", preference_id=pk, fields=["priority"])
            if changed:
                _invalidate_router(user.pk)
    return list_preferences(Principal.system_actor("routing"), user)
