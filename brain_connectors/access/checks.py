"""Configuration checks for login protection and metrics access."""
from django.conf import settings
from django.core.checks import Error, Tags, register

LOCKOUT_BACKEND = "brain_connectors.access.login.LockoutBackend"
MIN_SCRAPE_TOKEN_LENGTH = 32


@register(Tags.security)
def check_access_settings(app_configs, **kwargs):
    errors = []
    token = getattr(settings, "METRICS_SCRAPE_TOKEN", "")
    if token and len(token) < MIN_SCRAPE_TOKEN_LENGTH:
        errors.append(Error(
            f"METRICS_SCRAPE_TOKEN is shorter than {MIN_SCRAPE_TOKEN_LENGTH} characters, so it could be guessed.",
            hint="Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            id="access.E001",
        ))
    backends = list(getattr(settings, "AUTHENTICATION_BACKENDS", []))
    if getattr(settings, "AXES_ENABLED", True) and (not backends or backends[0] != LOCKOUT_BACKEND):
        # A password backend listed before it would sign a locked-out account in with the right password.
        errors.append(Error(
            f"{LOCKOUT_BACKEND} must be the first of AUTHENTICATION_BACKENDS.",
            id="access.E002",
        ))
    return errors
