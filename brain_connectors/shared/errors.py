"""The ServiceError family that services raise, each with a stable code and an HTTP status.

Every edge (REST, admin, MCP, commands) reports the same clear message without translating by hand."""

from django.core.exceptions import ImproperlyConfigured


class DecryptionError(ImproperlyConfigured):
    """Stored ciphertext cannot be decrypted with any key in FERNET_KEYS (raised by connectors.fields)."""


class ServiceError(Exception):
    status = 400
    code = "error"

    def __init__(self, message, *, code=None, details=None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class ValidationFailed(ServiceError):
    status = 400
    code = "validation_error"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class PermissionDenied(ServiceError):
    status = 403
    code = "permission_denied"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class RateLimited(ServiceError):
    """Too many requests of one kind: try again after `retry_after` seconds (Retry-After on HTTP)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message, *, retry_after, code=None, details=None):
        super().__init__(message, code=code, details={**(details or {}), "retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"


class Hidden(NotFound):
    """404 to the caller (the object's existence stays hidden), `denied` in the audit log."""


def audit_result(exc):
    """`classify` for audit.services.audited: refusals `denied`, other ServiceErrors `failure`."""
    if not isinstance(exc, ServiceError):
        return None
    return "denied" if isinstance(exc, (PermissionDenied, Hidden)) else "failure"


def audit_result_limits_denied(exc):
    """Like `audit_result`, but a RateLimited refusal is `denied` too (routing's pairing limits)."""
    return "denied" if isinstance(exc, RateLimited) else audit_result(exc)
