"""Invitations and links that set a password: invite_person(), and set_password_from_link() for both kinds of link.

Staff (with `auth.add_user`) invite a person by email: an account without a usable password is
created (or an existing one that has none is reused), and a mail through the configured
EMAIL_BACKEND carries a link to /accounts/invitation/<uid>/<token>/, where the person picks a
password. The token is Django's (routing.accounts.tokens): no secret is stored, and the link stops
working once used or after INVITATION_TIMEOUT. Audit rows carry ids and a masked address, never
the link or its token.
"""
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from audit import services as audit
from brain_connectors.shared.errors import Conflict, PermissionDenied, ValidationFailed
from connectors.permissions import Principal
from connectors.platforms.addresses import mask_address
from routing.accounts.tokens import invitation_token_generator
from routing.changes import audited_change

INVITE_PERMISSION = "auth.add_user"


def describe_duration(seconds):
    """"1 hour", "3 days", "30 minutes": how long a link works, for mails and pages."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0 or unit == "minute":
            count = max(1, round(seconds / size))
            return f"{count} {unit}{'s' if count != 1 else ''}"


def may_invite(principal: Principal) -> bool:
    """The system (a management command) may; a person must be active staff holding auth.add_user."""
    if principal.is_system:
        return True
    actor = principal.user
    return bool(actor and actor.is_active and actor.is_staff and actor.has_perm(INVITE_PERMISSION))


def _clean_email(email):
    email = get_user_model().objects.normalize_email(str(email or "").strip())
    try:
        validate_email(email)
    except Exception:
        raise ValidationFailed("Give a valid email address to invite.", details={"email": "not an email address"})
    return email


def _may_take_over(principal, existing, email):
    """A link that sets the password of an existing account is power over it: staff accounts only
    from a superuser, and a new address only from someone who may change users."""
    if principal.is_system:
        return True
    actor = principal.user
    if (existing.is_staff or existing.is_superuser) and not actor.is_superuser:
        return False
    return existing.email.lower() == email.lower() or actor.has_perm("auth.change_user")


def _invitee(principal, email, username):
    """The account to invite: a new one without a usable password, or the one with this email (or
    username) that has none yet. A person who already has a password signs in or resets it instead."""
    User = get_user_model()
    existing = User.objects.select_for_update().filter(username=username).first() if username else None
    if existing is None:
        matches = list(User.objects.select_for_update().filter(email__iexact=email)[:2])
        if len(matches) > 1:
            raise Conflict("Several accounts have this email address; name the account to invite.", code="ambiguous_email")
        existing = matches[0] if matches else None
    if existing is not None:
        if existing.has_usable_password():
            raise Conflict(
                f"{existing.get_username()!r} can already sign in; they can reset a forgotten password themselves.",
                code="already_has_password",
            )
        if not _may_take_over(principal, existing, email):
            raise PermissionDenied(
                f"You may not invite {existing.get_username()!r}: a staff account takes a superuser, and a "
                "new address for an existing account the permission to change users."
            )
        if not existing.is_active:
            raise Conflict(f"{existing.get_username()!r} is deactivated; reactivate the account first.",
                           code="user_inactive")
        if existing.email.lower() != email.lower():
            existing.email = email
            existing.save(update_fields=["email"])
        return existing, False
    username = username or email
    user = User(username=username, email=email)
    user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    return user, True


def invitation_link(user, base_url=None):
    base = (base_url or settings.PUBLIC_BASE_URL or "http://127.0.0.1:8000").rstrip("/")
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return base + reverse("invitation-accept", args=[uid, invitation_token_generator.make_token(user)])


def invite_person(principal: Principal, email, username=None, *, base_url=None):
    """Invite `email` (as `username`, default the address): returns the user. The mail goes out
    inside the transaction, so a mail server that refuses leaves neither account nor audit row."""
    with audited_change("auth.user_invited", principal, "user", ""):
        with transaction.atomic():
            if not may_invite(principal):
                raise PermissionDenied("You may not invite people: that takes the permission to add users.")
            email = _clean_email(email)
            try:
                user, created = _invitee(principal, email, (username or "").strip() or None)
            except Exception as exc:
                if hasattr(exc, "message_dict"):  # a model ValidationError, e.g. a username with spaces
                    raise ValidationFailed("That username cannot be used.", details=exc.message_dict)
                raise
            context = {"user": user, "link": invitation_link(user, base_url),
                       "valid_for": describe_duration(settings.INVITATION_TIMEOUT),
                       "inviter": principal.user.get_full_name() or principal.user.get_username()
                       if principal.user else "An administrator"}
            audit.record_action("auth.user_invited", principal, "user", user.pk, created=created,
                                email_hint=mask_address(email), expires_in_seconds=settings.INVITATION_TIMEOUT)
            send_mail(
                render_to_string("registration/invitation_subject.txt", context).strip(),
                render_to_string("registration/invitation_email.txt", context),
                None,
                [email],
            )
    return user


def set_password_from_link(form, kind, request_ip=None):
    """Save a SetPasswordForm reached through a checked link (`kind`: "invitation" or "reset"),
    with its audit row in the same transaction. The person acts for themselves."""
    with transaction.atomic():
        user = form.save()
        principal = Principal.for_user(user, via="web")
        audit.record_action("auth.password_set", principal, "user", user.pk, link=kind, ip=request_ip)
    return user
