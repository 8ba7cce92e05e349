"""API tokens: `bct_<prefix>_<secret>`, stored only as a SHA-256 digest, shown once.

The prefix is public (it names the token in lists and the audit log); the secret never leaves
the call that created it.
"""
import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import reads
from audit import services as audit
from brain_connectors.access import refusals
from brain_connectors.access.ip import throttle_key
from brain_connectors.shared.errors import NotFound, ValidationFailed
from connectors.models import ApiToken

TOKEN_RE = re.compile(r"^bct_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
DURATION_RE = re.compile(r"^(\d{1,5})([dhm])$")
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRejected(Exception):
    def __init__(self, reason, prefix="", *, known_prefix=True):
        super().__init__(reason)
        self.reason = reason
        self.prefix = prefix
        # False when no token has this prefix: the caller made it up, and it names nothing.
        self.known_prefix = bool(prefix) and known_prefix


def record_rejection(exc: TokenRejected, via, *, ip=None, throttled=False):
    """Audit a refused token, the same from every edge (REST, MCP, websocket, /metrics).

    Counted per window (access.refusals): the first refusal of a kind is a row `auth.token` at
    once, its repeats one `auth.token.repeated` row with their number. A kind is the edge, the
    client address (None where the edge does not know it), the reason and the token's prefix when
    a real token has it; made-up prefixes are one kind, so that varying them writes no more rows.
    """
    refusals.record(
        "auth.token",
        key=(via, throttle_key(ip), exc.reason, exc.prefix if exc.known_prefix else ""),
        target_type="api_token",
        target_id=exc.prefix,
        details={"via": via, "reason": exc.reason, "ip": ip},
        throttled=throttled,
    )


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """'90d', '12h' or '30m'."""
    match = DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValidationFailed(
            f"Invalid duration {text!r}: use a number followed by d, h or m (e.g. 90d, 12h).",
            details={"expires_in": "invalid"},
        )
    amount, unit = int(match.group(1)), match.group(2)
    delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]
    if delta <= timedelta(0) or delta > timedelta(days=settings.API_TOKEN_MAX_TTL_DAYS):
        raise ValidationFailed(
            f"Token lifetime must be between 1 minute and {settings.API_TOKEN_MAX_TTL_DAYS} days.",
            details={"expires_in": "out of range"},
        )
    return delta


def create_token(principal, user, *, expires_in=None, name=""):
    """Create a token for `user`. Returns (ApiToken, plaintext) — the plaintext is never stored."""
    lifetime = parse_duration(expires_in) if expires_in else timedelta(days=settings.API_TOKEN_DEFAULT_TTL_DAYS)
    if not user.is_active:
        raise ValidationFailed(f"User {user.get_username()!r} is inactive.")
    with transaction.atomic():
        while True:
            prefix = secrets.token_hex(4)
            if not ApiToken.objects.filter(prefix=prefix).exists():
                break
        plaintext = f"bct_{prefix}_{secrets.token_urlsafe(32)}"
        token = ApiToken.objects.create(
            user=user, name=name[:100], prefix=prefix, digest=digest(plaintext), expires_at=timezone.now() + lifetime
        )
        audit.record(
            "token.create",
            principal=principal,
            target_type="api_token",
            target_id=prefix,
            details={"via": principal.via, "user": user.get_username(), "expires_at": token.expires_at},
        )
    return token, plaintext


def list_tokens(principal, user):
    """`user`'s own API tokens, newest first (the rows: the secret is never stored). Audited with the count."""
    with transaction.atomic():
        rows = list(ApiToken.objects.filter(user=user).order_by("-created_at"))
        reads.record_read("token.list", principal, "api_token", "", count=len(rows))
    return rows


def revoke_token(principal, prefix):
    """Revoke by prefix. Users revoke their own tokens; superusers and system actors any."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().select_related("user").filter(prefix=prefix).first()
        allowed = token is not None and (
            principal.is_system or principal.user.is_superuser or token.user_id == principal.user.pk
        )
        if allowed:
            if token.revoked_at is None:
                token.revoked_at = timezone.now()
                token.save(update_fields=["revoked_at"])
            audit.record(
                "token.revoke",
                principal=principal,
                target_type="api_token",
                target_id=prefix,
                details={"via": principal.via, "user": token.user.get_username()},
            )
    if not allowed:
        # Recorded outside the transaction above: raising inside it would roll this row back too.
        audit.record(
            "token.revoke",
            principal=principal,
            result=audit.FAILURE if token is None else audit.DENIED,
            target_type="api_token",
            target_id=str(prefix)[:16],
            details={"via": principal.via},
        )
        # Someone else's token answers like a missing one (README: 404 for what you may not view), so a
        # prefix cannot be probed for existence; the audit row above still tells denied from failure.
        raise NotFound(f"No token with prefix {prefix!r}.")
    return token


def authenticate(raw: str):
    """The token's user, or TokenRejected(reason) for malformed, unknown, expired or revoked."""
    match = TOKEN_RE.fullmatch(raw or "")
    if not match:
        raise TokenRejected("malformed")
    prefix = match.group(1)
    token = ApiToken.objects.select_related("user").filter(digest=digest(raw)).first()
    if token is None:
        raise TokenRejected("unknown", prefix, known_prefix=ApiToken.objects.filter(prefix=prefix).exists())
    now = timezone.now()
    if token.revoked_at is not None:
        raise TokenRejected("revoked", prefix)
    if token.expires_at <= now:
        raise TokenRejected("expired", prefix)
    if not token.user.is_active:
        raise TokenRejected("inactive_user", prefix)
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user, token
