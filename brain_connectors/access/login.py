"""Login brute-force protection: the glue around django-axes, and the audit of failed logins.

django-axes (settings: the "Login protection" block) counts failed logins in the database, per
client address and per username, and refuses every further attempt, the right password included,
once either count reaches AXES_FAILURE_LIMIT within AXES_COOLOFF_TIME. This module adds:

- `LockoutBackend`, axes' check, which marks the requests it refuses;
- `lockout_response`, the 429 page with Retry-After;
- the audit rows: `auth.login_failed` for each wrong password (bounded by the lockout itself),
  `auth.lockout` when a lockout starts, and, for attempts refused during a lockout (unbounded:
  an attacker may keep trying), the counted rows of `access.refusals`.
"""
import math

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_failure_limit, get_lockout_parameters
from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.shortcuts import render

from audit import services as audit
from brain_connectors.access import refusals
from brain_connectors.access.ip import client_ip, throttle_key


class LockoutBackend(AxesStandaloneBackend):
    """axes' lockout check; first in AUTHENTICATION_BACKENDS, so that it runs before any password check."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            # Code calling authenticate() itself (a command, the test client's login()) has no
            # client address to lock out; axes would raise instead of letting it through.
            return None
        try:
            return super().authenticate(request, username, password, **kwargs)
        except AxesBackendPermissionDenied:
            # Refused without checking the password: the audit counts these instead of writing each.
            request.refused_by_lockout = True
            raise


def lockout_response(request, *args, **kwargs):
    """AXES_LOCKOUT_CALLABLE: 429 with Retry-After and a page in plain words.

    axes calls it as (request, response, credentials) from its sync middleware and as (request,
    credentials) from its async one (daphne), so only the request is used.
    """
    seconds = int(get_cool_off(request).total_seconds())
    response = render(request, "registration/locked_out.html", {"minutes": math.ceil(seconds / 60)}, status=429)
    response["Retry-After"] = str(seconds)
    response["Cache-Control"] = "no-store"
    return response


def _where(request):
    return {"via": "login", "path": getattr(request, "path", None), "ip": client_ip(request) if request else None}


@receiver(user_login_failed, dispatch_uid="access.audit_failed_login")
def audit_failed_login(sender, credentials, request=None, **kwargs):
    """Django sends this with the password already masked; only the username is kept."""
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or "")[:150]
    where = _where(request)
    if getattr(request, "refused_by_lockout", False):
        refusals.record(
            "auth.login_failed",
            key=("login", throttle_key(where["ip"]), "locked_out"),
            target_type="user",
            target_id=username,
            details={**where, "reason": "locked_out"},
        )
        return
    exists = get_user_model()._default_manager.filter(**{get_user_model().USERNAME_FIELD: username}).exists()
    audit.record(
        "auth.login_failed",
        principal="anonymous",
        result=audit.DENIED,
        target_type="user",
        target_id=username,
        details={**where, "reason": "bad_credentials", "user_exists": exists},
    )


@receiver(user_locked_out, dispatch_uid="access.audit_lockout")
def audit_lockout(sender, request, username, ip_address, **kwargs):
    """axes sends this for the failure that reaches the limit, and again for every attempt refused
    during the lockout; those are counted by audit_failed_login instead."""
    if getattr(request, "refused_by_lockout", False):
        return
    credentials = getattr(request, "axes_credentials", None)
    limit = get_failure_limit(request, credentials)
    handler = AxesProxyHandler.get_implementation()
    parameters = get_lockout_parameters(request, credentials)
    attempts = handler.get_user_attempts(request, credentials) if hasattr(handler, "get_user_attempts") else []
    locked = [
        "+".join([parameter] if isinstance(parameter, str) else parameter)
        for parameter, queryset in zip(parameters, attempts, strict=False)
        if sum(queryset.values_list("failures_since_start", flat=True)) >= limit
    ]
    audit.record(
        "auth.lockout",
        principal="anonymous",
        result=audit.DENIED,
        target_type="user",
        target_id=str(username or "")[:150],
        details={
            **_where(request),
            "locked": locked,
            "failure_limit": limit,
            "cooloff_seconds": int(get_cool_off(request).total_seconds()),
        },
    )

